// Analyse KQL with Microsoft's Kusto language service (@kusto/language-service-next) against the
// project's own ADX tables. One process serves many queries: JSON lines in, JSON lines out.
//   node kusto_analyze.js <node_modules dir> <tables .kql file> [<more .kql files>...]
//   stdin:  {"id": 1, "query": "..."}      stdout: {"id": 1, "diagnostics": [{...}]}
"use strict";
const fs = require("fs");
const path = require("path");
const readline = require("readline");

const [modulesDir, ...schemaFiles] = process.argv.slice(2);
const pkg = path.resolve(modulesDir, "@kusto", "language-service-next");
require(path.join(pkg, "bridge.js"));
require(path.join(pkg, "Kusto.Language.Bridge.js"));
const K = Kusto.Language;
const S = K.Symbols;

// `.create-merge table Name (Col: type, ...)` (or `.create table`) -> a TableSymbol per command.
function tablesFrom(text) {
  const found = [];
  const re = /^\s*\.create(?:-merge)?\s+table\s+(\w+)\s*(\([^)]*\))/gm;
  let m;
  while ((m = re.exec(text)) !== null) {
    found.push(new S.TableSymbol.$ctor7(m[1], m[2].replace(/\s+/g, " "), null));
  }
  return found;
}

const tables = schemaFiles.flatMap((f) => tablesFrom(fs.readFileSync(f, "utf8")));
if (tables.length === 0) {
  process.stderr.write(`no tables found in ${schemaFiles.join(", ")}\n`);
  process.exit(2);
}
const database = new S.DatabaseSymbol.$ctor1("al", tables, false);
const globals = K.GlobalState.Default.WithDatabase(database);

// The parser accepts a control command it does not know (`.frobnicate table T`) as an UnknownCommand
// node without any diagnostic; report those (and BadCommand nodes) so a typo in a verb fails too.
const COMMAND_NODES = { UnknownCommand: "unknown control command", BadCommand: "malformed control command" };

function commandDiagnostics(code) {
  const out = [];
  K.Syntax.SyntaxElement.WalkNodes(code.Syntax, function (node) {
    const kind = node.constructor.$$name.split(".").pop();
    if (Object.prototype.hasOwnProperty.call(COMMAND_NODES, kind)) {
      const text = node.ToString(K.Syntax.IncludeTrivia.Minimal).trim().split(/\s+/).slice(0, 3).join(" ");
      out.push({ severity: "Error", code: `AL-${kind}`, message: `${COMMAND_NODES[kind]}: ${text}`,
                 start: node.TextStart, length: node.Width });
    }
  });
  return out;
}

function analyze(query) {
  const code = K.KustoCode.ParseAndAnalyze(query, globals);
  const out = [];
  const diagnostics = code.GetDiagnostics();
  for (let i = 0; i < diagnostics.Count; i++) {
    const d = diagnostics.getItem(i);
    out.push({ severity: String(d.Severity), code: d.Code, message: d.Message, start: d.Start, length: d.Length });
  }
  return out.concat(commandDiagnostics(code));
}

process.stdout.write(JSON.stringify({ ready: true, tables: tables.map((t) => t.Name) }) + "\n");
const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const request = JSON.parse(line);
  let reply;
  try {
    reply = { id: request.id, diagnostics: analyze(request.query) };
  } catch (err) {
    reply = { id: request.id, error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
});
