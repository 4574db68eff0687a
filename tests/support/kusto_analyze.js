// Analyse KQL with Microsoft's Kusto language service (@kusto/language-service-next) against the
// project's own ADX tables and materialized views. One process serves many queries: JSON lines in,
// JSON lines out.
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

// `.create[-or-alter] [async] [ifnotexists] materialized-view [with (...)] Name on table Source { Query }`
// -> [name, query]. The body is the text between the brace after the header and its matching brace.
function viewsFrom(text) {
  const found = [];
  const re = /^\s*\.create(?:-or-alter)?(?:\s+async)?(?:\s+ifnotexists)?\s+materialized-view\s+(?:with\s*\((?:[^()"]|"[^"]*")*\)\s*)?(\w+)\s+on\s+table\s+\w+\s*\{/gm;
  let m;
  while ((m = re.exec(text)) !== null) {
    let depth = 1;
    let i = re.lastIndex;
    for (; i < text.length && depth > 0; i++) {
      if (text[i] === "{") depth++;
      else if (text[i] === "}") depth--;
    }
    found.push([m[1], text.slice(re.lastIndex, i - 1).trim()]);
  }
  return found;
}

const texts = schemaFiles.map((f) => fs.readFileSync(f, "utf8"));
const tables = texts.flatMap(tablesFrom);
if (tables.length === 0) {
  process.stderr.write(`no tables found in ${schemaFiles.join(", ")}\n`);
  process.exit(2);
}
// A view's columns are what the language service infers for its own query over the tables (and the
// views before it), so a query reading the view is checked against exactly what the view returns.
let symbols = tables.slice();
let globals = K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.$ctor1("al", symbols, false));
const views = [];
for (const [name, query] of texts.flatMap(viewsFrom)) {
  const result = K.KustoCode.ParseAndAnalyze(query, globals).ResultType;
  if (!result || !result.Columns) {
    process.stderr.write(`materialized view ${name}: its query has no tabular result\n`);
    process.exit(2);
  }
  symbols = symbols.concat([new S.MaterializedViewSymbol.$ctor2(name, result.Columns, query, null)]);
  globals = K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.$ctor1("al", symbols, false));
  const columns = [];
  for (let i = 0; i < result.Columns.Count; i++) {
    const c = result.Columns.getItem(i);
    columns.push([c.Name, c.Type.Name]);
  }
  views.push({ name, columns });
}

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

process.stdout.write(JSON.stringify({ ready: true, tables: tables.map((t) => t.Name), views }) + "\n");
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
