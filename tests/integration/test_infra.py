"""infra/ against the code: no Bicep compiler runs here, so these tests read the .bicep text.

What the code reads (``shared/settings.py`` fields as ``AL_<FIELD>``, the blueprints' ``%AL_...%``
binding expressions and ``connection="AL_..."`` names) must be in the app settings of the apps that
need it and in ``local.settings.json.example``; every ``AL_`` app setting in the Bicep must be read;
every container and queue the code names must be created; every ADX script must be applied; every
client the code builds must have its role; no key or secret-bearing connection string may appear.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from shared.errors import ConfigurationError
from shared.settings import STAGES, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
FIELDS = set(Settings.model_fields)

# Read by the code but never an Azure app setting: a connection string carries the account key, so it
# is for Azurite only (local.settings.json); in Azure the apps use AL_STORAGE_ACCOUNT_URL + identity.
LOCAL_ONLY = {"AL_STORAGE_CONNECTION_STRING"}

# Issue 10's new settings: the Event Grid source switch, the exports account and its trigger connection.
# Each must reach the apps that read it and be explained for func start users.
ISSUE_10_NEW = {"AL_BLOB_TRIGGER_SOURCE", "AL_EXPORTS_ACCOUNT_URL", "AL_EXPORTS_STORAGE"}

# Label Studio replaces Azure ML Data Labeling (retired 2026-09-30): the settings of the hand-over and the
# way back, also explained for func start users.
LABELING_NEW = {"AL_LABEL_STUDIO_URL", "AL_LABEL_STUDIO_TOKEN", "AL_LABEL_STUDIO_PROJECT_ID",
                "AL_LABEL_STUDIO_TIMEOUT_SECONDS", "AL_LABEL_SYNC_SCHEDULE", "AL_LABELING_ACCOUNT_URL"}
# ... and the Data Labeling export timer's settings, gone with it: nowhere in the infrastructure or docs.
REMOVED = {"AL_AML_LABELING_JOB", "AL_EXPORT_SCHEDULE", "AL_EXPORT_FORMAT", "AL_AML_ARM_URL"}


# -- reading the Bicep text ---------------------------------------------------------------------------

def _balanced(text: str, start: int) -> str:
    """The expression starting at ``start`` up to the end of its line once brackets are balanced."""
    depth, i = 0, start
    in_str = False
    while i < len(text):
        ch = text[i]
        if ch == "'" and not (i + 1 < len(text) and text[i - 1] == "\\"):
            in_str = not in_str
        elif not in_str:
            if ch in "({[":
                depth += 1
            elif ch in ")}]":
                depth -= 1
            elif ch == "\n" and depth == 0:
                return text[start:i]
        i += 1
    return text[start:]


def _strip_comments(text: str) -> str:
    """Drop ``//`` comments (a ``//`` after an even number of quotes on its line is not in a string)."""
    lines = []
    for line in text.splitlines():
        for m in re.finditer(r"//", line):
            if line[:m.start()].count("'") % 2 == 0:
                line = line[:m.start()].rstrip()
                break
        lines.append(line)
    return "\n".join(lines) + "\n"


@cache
def main_text() -> str:
    return _strip_comments(MAIN.read_text())


def var_expr(name: str, text: str | None = None) -> str:
    text = text or main_text()
    m = re.search(rf"(?m)^var {name} = ", text)
    assert m, f"var {name} not found in main.bicep"
    return _balanced(text, m.end())


def object_values(expr: str) -> dict[str, str]:
    """``{ key: value ... }`` (one entry per line) -> {key: raw value text}."""
    return {k: v.strip() for k, v in re.findall(r"(?m)^\s*(\w+)\s*:\s*(.+?)\s*$", expr)}


def setting_keys(expr: str) -> set[str]:
    return set(re.findall(r"(?<![\w'])(AL_[A-Za-z0-9_]+)\s*:", expr))


def app_settings_of(stage: str) -> dict[str, str]:
    """Every AL_ app setting of the app hosting ``stage``: {name: raw Bicep value}."""
    stage_var = object_values(var_expr("stageSettings"))[stage]
    call = re.search(r"appSettings:\s*(union\(.+\))", main_text())
    assert call, "the function app module call passes no appSettings"
    names = re.findall(r"\b(\w+Settings)\b", call.group(1))
    assert "stageSettings" in names
    found: dict[str, str] = {}
    pending = [n if n != "stageSettings" else stage_var for n in names]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        expr = var_expr(name)
        found.update({k: v for k, v in _settings_in(expr).items()})
        pending += [n for n in re.findall(r"\b(\w+Settings)\b", expr) if n != name]
    found.update(_settings_in(call.group(1)))
    if "AL_STAGES" in found:
        found["AL_STAGES"] = f"'{stage}'"
    return found


def _settings_in(expr: str) -> dict[str, str]:
    """``AL_X: value`` pairs, one per line or inside an inline ``{ AL_X: value }``."""
    out = {}
    for m in re.finditer(r"(?<![\w'])(AL_[A-Za-z0-9_]+)\s*:\s*([^\n]*)", expr):
        out[m.group(1)] = m.group(2).split(" }")[0].rstrip(" ,)").strip() if " }" in m.group(2) \
            else m.group(2).strip()
    return out


@cache
def params() -> dict[str, str]:
    """param name -> default value text ('' when none)."""
    out = {}
    for m in re.finditer(r"(?m)^param (\w+) \w+(?: = (.+))?$", main_text()):
        out[m.group(1)] = (m.group(2) or "").strip()
    return out


def literal(value: str) -> str | None:
    """A Bicep value as the string the app would see, when it is a literal or a parameter default."""
    value = value.strip()
    if re.fullmatch(r"'[^']*'", value):
        return value[1:-1]
    m = re.fullmatch(r"(?:string\()?(\w+)\)?", value)
    if m and m.group(1) in params():
        default = params()[m.group(1)]
        if re.fullmatch(r"'[^']*'", default):
            return default[1:-1]
        if re.fullmatch(r"-?\d+|true|false", default):
            return default
    m = re.fullmatch(r"containerNames\.(\w+)|queueNames\.(\w+)", value)
    if m:
        table = object_values(var_expr("containerNames" if m.group(1) else "queueNames"))
        raw = table[m.group(1) or m.group(2)]
        return raw.strip("'")
    return None


# -- what the code reads ------------------------------------------------------------------------------

def blueprint(stage: str) -> str:
    return (ROOT / "functions" / stage / "blueprint.py").read_text()


def binding_settings(stage: str) -> set[str]:
    text = blueprint(stage)
    return set(re.findall(r"%(AL_\w+)%", text)) | set(re.findall(r'connection="(AL_\w+)"', text))


@cache
def composition_root() -> dict[str, set[str]]:
    """Port of ``shared/backends.py`` (a ``Backend`` property or method) -> the Settings fields it reads,
    through the other members it calls. Empty while there is no composition root."""
    path = ROOT / "shared" / "backends.py"
    if not path.exists():
        return {}
    text = path.read_text()
    body = text[text.index("class Backend"):]
    members: dict[str, tuple[set[str], set[str]]] = {}
    for block in re.split(r"\n(?=    (?:@cached_property\n    )?def )", body):
        m = re.match(r"\s*(?:@cached_property\s*)?def (\w+)\(", block)
        if m:
            fields = {w for w in re.findall(r"\b(?:settings|s)\.(\w+)", block) if w in FIELDS}
            members[m.group(1)] = (fields, set(re.findall(r"self\.(\w+)", block)))

    def reads(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        fields, calls = members.get(name, (set(), set()))
        out = set(fields)
        for call in calls - seen - {name}:
            out |= reads(call, seen | {name})
        return out

    return {name: reads(name) for name in members}


def needed_by(stage: str) -> set[str]:
    """AL_ settings the stage's code reads: Settings fields used in functions/<stage>/, those the ports it
    takes from the composition root read (shared/backends.py), what the Azure start-up check requires of
    it, its bindings, and AL_STAGES (function_app.py)."""
    used = {"stages"}
    root = composition_root()
    for path in (ROOT / "functions" / stage).glob("*.py"):
        text = path.read_text()
        used |= {w for w in re.findall(r"\.(\w+)\b", text) if w in FIELDS}
        used |= {w for w in re.findall(r'"(\w+)"', text) if w in FIELDS}
        for port in set(re.findall(r"\bports\.(\w+)", text)) & set(root):
            used |= root[port]
    if root:
        import shared.settings as settings_module

        used |= {"adx_cluster_uri", "storage_account_url"}  # required on the Azure backend
        used |= set(getattr(settings_module, "_AZURE_NEEDS", {}).get(stage, ()))
        if stage == "label_export_trigger":
            used.add("exports_account_url")
    return {f"AL_{f.upper()}" for f in used} | binding_settings(stage)


def connections() -> set[str]:
    return {c for s in STAGES for c in re.findall(r'connection="(AL_\w+)"', blueprint(s))}


def read_by_code(name: str) -> bool:
    base = name.split("__", 1)[0]
    return (name == base and base.removeprefix("AL_").lower() in FIELDS) or base in connections()


def test_the_derivation_sees_what_each_stage_reads():
    """Guard the regexes above: known reads of each stage are found."""
    assert {"AL_ADX_CLUSTER_URI", "AL_LANDING_CONTAINER", "AL_MAX_BODY_BYTES"} <= needed_by("scoring_collector")
    assert {"AL_SELECTION_SCHEDULE", "AL_STRATEGY", "AL_LABELING_CONTAINER"} <= needed_by("selector_timer")
    assert {"AL_EXPORTS_CONTAINER", "AL_EXPORTS_PREFIX"} <= needed_by("label_export_trigger")
    assert {"AL_STORAGE", "AL_EXPORTS_STORAGE"} & needed_by("label_export_trigger")  # the trigger's connection
    assert {"AL_STORAGE", "AL_RETRAIN_QUEUE", "AL_GITHUB_TOKEN"} <= needed_by("github_dispatch")
    assert set(app_settings_of("selector_timer")) >= {"AL_SELECTION_SCHEDULE", "AL_ADX_CLUSTER_URI", "AL_BACKEND"}


@pytest.mark.parametrize("stage", STAGES)
def test_each_app_has_every_setting_its_stage_reads(stage):
    settings = app_settings_of(stage)
    missing = []
    for name in sorted(needed_by(stage) - LOCAL_ONLY):
        if name in connections():
            # identity-based connection: <name>__<service>ServiceUri + credential + client id
            services = {"blob", "queue"} if "blob_trigger" in blueprint(stage) else {"queue"}
            wanted = {f"{name}__{s}ServiceUri" for s in services} | {f"{name}__credential", f"{name}__clientId"}
            missing += sorted(wanted - set(settings))
        elif name not in settings:
            missing.append(name)
    assert not missing, f"{stage}: app settings missing from infra/main.bicep: {missing}"
    assert settings["AL_STAGES"] == f"'{stage}'"
    assert literal(settings["AL_BACKEND"]) == "azure"


def test_every_al_app_setting_in_the_bicep_is_read_by_the_code():
    for stage in STAGES:
        unread = sorted(n for n in app_settings_of(stage) if not read_by_code(n))
        assert not unread, f"{stage}: app settings no code reads: {unread}"
    every = setting_keys(MAIN.read_text()) | {k for p in MODULES.glob("*.bicep") for k in setting_keys(p.read_text())}
    assert not sorted(n for n in every if not read_by_code(n))


@pytest.mark.parametrize("stage", STAGES)
def test_literal_app_setting_values_pass_the_settings_validation(stage, monkeypatch):
    """The values the Bicep gives (literals and parameter defaults) start the app: Settings accepts them."""
    for var in [v for v in os.environ if v.startswith("AL_")]:
        monkeypatch.delenv(var)
    checked = 0
    for name, raw in app_settings_of(stage).items():
        value = literal(raw)
        if name in conditional_settings():
            continue  # set only when its parameter is (test below)
        if value is not None and "__" not in name and name.removeprefix("AL_").lower() in FIELDS:
            if value.startswith("@Microsoft.KeyVault("):
                value = "resolved-secret"  # what App Service hands the app once it resolves the reference
            monkeypatch.setenv(name, value)
            checked += 1
    assert checked >= 3
    settings = load_settings()
    assert settings.stage_names == (stage,)


def conditional_settings() -> dict[str, str]:
    """Settings present only when a parameter is set: ``<guard> ? { AL_X: <param> } : {}``."""
    pattern = r"(\w+ > 0|!empty\(\w+\)|[^\s,(]+)\s*\?\s*\{\s*(AL_\w+):"
    return {m.group(2): m.group(1) for m in re.finditer(pattern, main_text())}


# setting -> the apps that get it when its parameter is set
OPTIONAL = {
    "AL_LABELS_PER_DAY": ("selector_timer",),
    "AL_LABELS_TOTAL": ("selector_timer",),
    "AL_STOP_UNCERTAINTY_BELOW": ("selector_timer",),
    # An empty class list made the label stage raise: left out, the stages use the serving version's classes.
    "AL_CLASS_NAMES": ("label_export_trigger", "github_dispatch"),
}


def test_optional_settings_are_left_out_unless_their_parameter_is_set():
    """AL_LABELS_PER_DAY & co. have no default value an app setting could carry ('' and 0 are invalid)."""
    guards = conditional_settings()
    assert set(guards) == set(OPTIONAL)
    for name, guard in guards.items():
        param = re.sub(r"^!empty\((\w+)\)$|^(\w+) > 0$", lambda m: m.group(1) or m.group(2), guard)
        assert param in params(), (name, guard)
        for stage in OPTIONAL[name]:
            assert param in app_settings_of(stage)[name], (name, stage)
        default = params()[param]
        assert guard.strip() in (f"{param} > 0", f"!empty({param})"), guard
        assert default in ("0", "''"), (param, default)
        field = Settings.model_fields[name.removeprefix("AL_").lower()]
        assert field.default in (None, ""), name  # unset in the app == the code's default


def test_the_class_list_is_never_an_empty_app_setting():
    assert conditional_settings()["AL_CLASS_NAMES"] == "!empty(classNames)"
    unguarded = [line for line in main_text().splitlines()
                 if re.search(r"\bAL_CLASS_NAMES\s*:", line) and "!empty(classNames) ?" not in line]
    assert not unguarded, unguarded
    assert load_settings(class_names="").class_name_list == ()


def test_the_value_check_rejects_a_bad_value(monkeypatch):
    monkeypatch.setenv("AL_BATCH_SIZE", "0")
    with pytest.raises(ConfigurationError, match="AL_BATCH_SIZE"):
        load_settings()


def test_the_github_token_is_a_key_vault_reference_resolved_with_the_user_assigned_identity():
    token = app_settings_of("github_dispatch")["AL_GITHUB_TOKEN"]
    assert token.startswith("'@Microsoft.KeyVault(SecretUri=${keyVault.outputs.githubTokenSecretUri})'")
    assert re.search(r"keyVaultReferenceIdentity:\s*identityId", (MODULES / "functionapp.bicep").read_text())
    kv = (MODULES / "keyvault.bicep").read_text()
    assert re.search(r"@secure\(\)\s*\n(?:@description\([^\n]*\)\s*\n)?param githubToken string", kv)
    assert "enableRbacAuthorization: true" in kv


# -- no keys, no secret-bearing connection strings ----------------------------------------------------

EVENTGRID = INFRA / "eventgrid" / "exports-subscription.bicep"

# The one key a template reads: the Functions host's blobs_extension system key, which Event Grid must put
# in the webhook URL of the blob trigger (Microsoft's Event Grid blob trigger quickstart does the same).
HOST_KEY = re.compile(r"listKeys\(hostId, '[\d-]+'\)\.systemKeys\.blobs_extension")


def all_bicep_paths() -> list[Path]:
    """main.bicep, its modules, and the templates deployed apart from it (infra/eventgrid/)."""
    return [MAIN, *sorted(INFRA.glob("*/*.bicep"))]


def all_bicep() -> dict[str, str]:
    return {p.name: p.read_text() for p in all_bicep_paths()}


LABELING_STORAGE = MODULES / "labeling-storage.bicep"

# The one storage key a template reads: the labeling account's, straight into a Key Vault secret, for Label
# Studio's storage connection (its open-source Azure storage signs in with the account key only).
LABELING_KEY = re.compile(r"value: account\.listKeys\(\)\.keys\[0\]\.value")


def test_no_storage_key_or_secret_connection_string_anywhere_in_the_bicep():
    assert EVENTGRID.name in all_bicep() and LABELING_STORAGE.name in all_bicep()
    for name, text in all_bicep().items():
        code = _strip_comments(text)
        if name == EVENTGRID.name:
            assert len(HOST_KEY.findall(code)) == 1
            assert "'Microsoft.Web/sites/host', functionAppName, 'default')" in code
            code = HOST_KEY.sub("", code)
        if name == LABELING_STORAGE.name:
            assert len(LABELING_KEY.findall(code)) == 1
            secret = re.search(r"(?s)resource keySecret 'Microsoft\.KeyVault/vaults/secrets@[\d-]+' = \{.*?\n\}", code)
            assert secret and LABELING_KEY.search(secret.group(0)), "the key goes into a Key Vault secret only"
            code = LABELING_KEY.sub("", code)
        for bad in ("listKeys(", "listKey(", "AccountKey=", "SharedAccessSignature", "primaryKey",
                    "listConnectionStrings", "AzureWebJobsStorage:", "AL_STORAGE:", "AL_STORAGE_CONNECTION_STRING"):
            assert bad not in code, f"{name}: {bad}"
    storage = (MODULES / "storage.bicep").read_text()
    assert "allowSharedKeyAccess: false" in storage
    app = (MODULES / "functionapp.bicep").read_text()
    for key in ("AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId"):
        assert re.search(rf"\b{key}:", app), key
    assert "type: 'UserAssignedIdentity'" in app  # the deployment package container
    appi = (MODULES / "appinsights.bicep").read_text()
    assert "DisableLocalAuth: true" in appi  # its connection string then grants nothing


SECURE_PARAM = r"@secure\(\)\s*(?:@description\([^\n]*\)\s*)?param (\w+) string(?: = (.+))?"
LABEL_STUDIO_SECRETS = ["labelStudioSecretKey", "postgresAdminPassword", "labelStudioPassword", "labelStudioToken"]


def test_no_secret_parameter_is_written_in_clear_to_an_output_or_setting():
    main = main_text()
    secure = dict(re.findall(SECURE_PARAM, MAIN.read_text()))
    assert list(secure) == ["githubToken", *LABEL_STUDIO_SECRETS]
    for name in secure:
        uses = [line for line in main.splitlines() if re.search(rf"\b{name}\b", line) and "param " not in line]
        # only passed on, under its own name, to the vault module (and the database's password to the server)
        assert uses and all(re.fullmatch(rf"\s*{name}: {name}", u) for u in uses), uses
        assert not re.search(rf"(?m)^output .*\b{name}\b", main)
    assert "postgresAdminPassword: postgresAdminPassword" in module_call("postgres")
    for name in secure:
        assert f"{name}: {name}" in module_call("keyVault"), name


# -- containers and queues ----------------------------------------------------------------------------

def code_containers_and_queues() -> tuple[set[str], set[str]]:
    containers, queues = set(), set()
    for name, field in Settings.model_fields.items():
        if name.endswith("_container"):
            containers.add(field.default)
        elif name.endswith("_queue"):
            queues.add(field.default)
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]:
        for const, value in re.findall(r'(?m)^(\w*(?:CONTAINER|QUEUE)\w*)\s*(?::\s*\w+\s*)?=\s*"([a-z0-9-]+)"',
                                       path.read_text()):
            (queues if "QUEUE" in const else containers).add(value)
    return containers, queues


def test_every_container_and_queue_the_code_names_is_created():
    containers, queues = code_containers_and_queues()
    assert {"items", "landing", "labeling-input", "exports", "exports-quarantine", "models"} <= containers
    assert "retrain-requests" in queues
    loop_containers = {v.strip("'") for v in object_values(var_expr("containerNames")).values()}
    # the items under labeling are on the labeling account, not the loop's
    assert "labeling-input" not in loop_containers
    assert literal(app_settings_of("selector_timer")["AL_LABELING_CONTAINER"]) == "labeling-input"
    assert "containerName: labelingContainer" in module_call("labelingStorage")
    created_containers = loop_containers | {"labeling-input"}
    created_queues = {v.strip("'") for v in object_values(var_expr("queueNames")).values()}
    assert containers <= created_containers, sorted(containers - created_containers)
    assert queues <= created_queues, sorted(queues - created_queues)
    storage_call = module_call("storage")
    # for-expressions, not lambdas: Checkov's Bicep parser (pycep 0.5) skips a template with a lambda (item 7)
    assert "containers: loopContainers" in storage_call and "queues: loopQueues" in storage_call
    assert var_expr("loopContainers") == "[for c in items(containerNames): c.value]"
    assert var_expr("loopQueues") == "[for q in items(queueNames): q.value]"
    assert "=>" not in main_text()
    storage = (MODULES / "storage.bicep").read_text()
    assert re.search(r"containers@[\d-]+' = \[for c in containers:", storage)
    assert re.search(r"queues@[\d-]+' = \[for q in queues:", storage)


def test_every_flex_app_has_its_deployment_container():
    assert "var deploymentContainers = [for app in apps: 'deploy-${app.service}']" in main_text()
    assert "deploymentContainerName: deploymentContainers[i]" in main_text()
    app = _strip_comments((MODULES / "functionapp.bicep").read_text())
    # in the app's own host storage account, which the package is deployed from
    assert re.search(r"resource deploymentContainer '[^']+/containers@[\d-]+' = \{\s*parent: hostBlobs\s*"
                     r"name: deploymentContainerName", app)
    assert "value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'" in app


# -- Azure Data Explorer --------------------------------------------------------------------------------

def test_every_adx_script_is_applied_in_order_by_a_database_script_resource(kusto):
    adx = (MODULES / "adx.bicep").read_text()
    files = sorted(p.name for p in (INFRA / "adx").glob("*.kql"))
    scripts = re.findall(r"(?s)resource (\w+) 'Microsoft\.Kusto/clusters/databases/scripts@[\d-]+' = \{(.*?)\n\}", adx)
    applied = [re.search(r"scriptContent: loadTextContent\('\.\./adx/([^']+)'\)", body).group(1) for _, body in scripts]
    assert applied == files, "each infra/adx file, once, in file order"
    for (_, body), (previous, _) in zip(scripts[1:], scripts, strict=False):
        assert re.search(rf"dependsOn: \[{previous}\]", body), "scripts run one after the other"
        assert "forceUpdateTag: uniqueString(loadTextContent(" in body
    for name in files:
        text = (INFRA / "adx" / name).read_text()
        commands = [c for c in re.split(r"\n\s*\n", "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith("//"))) if c.strip()]
        for command in commands:
            assert kusto.analyze(command) == [], (name, command)
    assert "enableStreamingIngest: true" in adx


def test_the_analyser_reports_an_unknown_control_command(kusto):
    diagnostics = kusto.analyze(".frobnicate table Predictions policy streamingingestion enable")
    assert [d.code for d in diagnostics] == ["AL-UnknownCommand"]
    assert kusto.analyze(".alter table Selections policy streamingingestion enable") == []


# -- role assignments for each client the code builds -------------------------------------------------

ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}

# code marker (what the code builds or binds) -> roles of which one must be assigned to the apps
NEEDS = {
    "BlobServiceClient": ("Storage Blob Data Owner", "Storage Blob Data Contributor"),
    "build_queue_client": ("Storage Queue Data Contributor", "Storage Queue Data Message Sender"),
    "queue_trigger": ("Storage Queue Data Contributor",),
    "orchestration_trigger": ("Storage Table Data Contributor",),
    "build_ml_client": ("AzureML Data Scientist",),
    "github_token": ("Key Vault Secrets User",),
}
ADX_NEEDS = {"build_ingest_client": "Ingestor", "build_query_client": "Viewer"}


def code_text() -> str:
    return "\n".join(p.read_text() for p in [*(ROOT / "functions").rglob("*.py"), *(ROOT / "shared").rglob("*.py")])


def assigned_roles() -> set[str]:
    text = "\n".join(all_bicep().values())
    return {name for name, rid in ROLE_IDS.items() if rid in text}


def test_every_client_the_code_builds_has_its_role():
    code, roles = code_text(), assigned_roles()
    for marker, options in NEEDS.items():
        assert marker in code, f"the code no longer uses {marker}: update NEEDS"
        assert roles & set(options), f"{marker} needs one of {options}"
    adx = (MODULES / "adx.bicep").read_text()
    for marker, role in ADX_NEEDS.items():
        assert marker in code
        assert re.search(rf"principalType: 'App'\s*\n\s*role: '{role}'", adx), role
    assert "role: 'Admin'" not in adx  # least privilege: the apps never change the schema
    assert "Monitoring Metrics Publisher" in roles  # Application Insights with local auth off


def test_role_assignments_go_to_the_apps_identity_as_a_service_principal():
    deployer = 0
    for name, text in all_bicep().items():
        for body in re.findall(r"(?s)'Microsoft\.Authorization/roleAssignments@[\d-]+' = .*?\n\}", text):
            assert re.search(r"name: guid\(", body), name  # idempotent on re-deploy
            if "principalId: deployerPrincipalId" in body:  # whoever deploys reads the generated secrets back
                deployer += 1
                assert "principalType: deployerPrincipalType" in body and "keyVaultSecretsUser" in body
                continue
            assert "principalType: 'ServicePrincipal'" in body, name
    assert deployer == 1
    call = module_call("keyVault")
    assert "deployerPrincipalId: principalId" in call and "deployerPrincipalType: principalType" in call
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["principalId"] == {"value": "${AZURE_PRINCIPAL_ID}"}


def test_each_app_runs_as_its_own_user_assigned_identity():
    """Issue 20, item 6: one identity per app, and every client id an app signs in with is its own."""
    app = _strip_comments((MODULES / "functionapp.bicep").read_text())
    assert "type: 'UserAssigned'" in app
    assert "sku: { name: 'FC1', tier: 'FlexConsumption' }" in app
    assert "runtime: { name: 'python', version: pythonVersion }" in app
    # inside the module, every sign-in is the one identity it is given
    for needle in ("userAssignedIdentities: { '${identityId}': {} }", "keyVaultReferenceIdentity: identityId",
                   "userAssignedIdentityResourceId: identityId", "AzureWebJobsStorage__clientId: identityClientId",
                   "APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'"):
        assert needle in app, needle
    assert re.search(r"\bAZURE_CLIENT_ID: identityClientId", app)  # DefaultAzureCredential picks it
    # main.bicep: one identity per app, passed to that app
    ids = module_call("appIdentities")
    assert "user-assigned-identity" in ids and "= [for app in apps: {" in ids
    assert "name: 'id-al-${app.service}-${resourceToken}'" in ids
    assert not re.search(r"(?m)^module identity ", main_text()) and "identity.outputs" not in main_text()
    call = module_call("functionApps")
    for key, output in (("identityId", "resourceId"), ("identityClientId", "clientId"),
                        ("identityPrincipalId", "principalId")):
        assert f"{key}: appIdentities[i].outputs.{output}" in call, key
    services = [service for service, _ in app_list()]
    for var, output in (("principals", "principalId"), ("clientIds", "clientId")):
        table = object_values(var_expr(var))
        assert table == {s: f"appIdentities[{i}].outputs.{output}" for i, s in enumerate(services)}, var
    # the trigger connections' client ids: the app's own
    for service, stage in app_list():
        for name, value in app_settings_of(stage).items():
            if name.endswith("__clientId"):
                assert value == f"clientIds.{service}", (stage, name, value)
    assert {"AL_EXPORTS_STORAGE__clientId"} <= set(app_settings_of("label_export_trigger"))
    assert {"AL_STORAGE__clientId"} <= set(app_settings_of("github_dispatch"))


# -- azd, parameters, local settings -------------------------------------------------------------------

def test_azure_yaml_deploys_the_one_package_to_the_four_apps():
    spec = yaml.safe_load((ROOT / "azure.yaml").read_text())
    services = spec["services"]
    apps = re.findall(r"\{ service: '(\w+)', stage: '(\w+)' \}", main_text())
    assert sorted(stage for _, stage in apps) == sorted(STAGES)
    assert set(services) == {service for service, _ in apps}
    for service in services.values():
        assert service == {"project": ".", "language": "python", "host": "function"}
    assert spec["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert "'azd-service-name': azdServiceName" in (MODULES / "functionapp.bicep").read_text()


def test_the_parameters_file_names_only_real_parameters():
    doc = json.loads((INFRA / "main.parameters.json").read_text())
    assert set(doc["parameters"]) <= set(params())
    required = {p for p, default in params().items() if not default}
    assert required <= set(doc["parameters"])


def test_every_module_the_main_template_uses_exists():
    for path in re.findall(r"module \w+ '([^']+\.bicep)'", main_text()):
        assert (INFRA / path).is_file(), path
    for path in re.findall(r"loadTextContent\('([^']+)'\)", (MODULES / "adx.bicep").read_text()):
        assert (MODULES / path).resolve().is_file(), path


def test_local_settings_example_has_every_setting_and_starts_the_app(monkeypatch):
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    read = {f"AL_{f.upper()}" for f in FIELDS} | connections() | {b for s in STAGES for b in binding_settings(s)}
    assert not sorted(read - set(values))
    assert not sorted(n for n in values if n.startswith("AL_") and not read_by_code(n))
    azurite = values["AzureWebJobsStorage"]
    assert "AccountName=devstoreaccount1" in azurite and "BlobEndpoint=http://127.0.0.1:10000/" in azurite
    assert values["AL_STORAGE"] == azurite == values["AL_STORAGE_CONNECTION_STRING"] == values["AL_EXPORTS_STORAGE"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    for name, value in values.items():
        if name.startswith("AL_") and name.removeprefix("AL_").lower() in FIELDS:
            monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.backend == "embedded" and settings.stage_names == STAGES
    assert (ROOT / ".funcignore").read_text().count("local.settings.json") >= 1


def test_funcignore_keeps_what_the_apps_import():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for needed in ("function_app.py", "host.json", "requirements.txt", "functions", "shared"):
        assert needed not in ignored
    for heavy in ("tests", ".venv", "node_modules", "infra", "data"):
        assert heavy in ignored


def test_vscode_tasks_start_azurite_and_the_host():
    tasks = json.loads((ROOT / ".vscode" / "tasks.json").read_text())["tasks"]
    commands = " ".join(t["command"] for t in tasks)
    assert "azurite" in commands and "--skipApiVersionCheck" in commands and "host start" in commands
    launch = json.loads((ROOT / ".vscode" / "launch.json").read_text())
    assert any(c.get("preLaunchTask") == "func: host start" for c in launch["configurations"])


# -- issue 10: the Azure loop, end to end ----------------------------------------------------------------

HOOK = INFRA / "hooks" / "postdeploy.sh"
JOB = ROOT / "training" / "job.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "train.yml"


def module_call(symbol: str) -> str:
    """The text of ``module <symbol> '...' = ... { ... }`` in main.bicep."""
    m = re.search(rf"(?m)^module {symbol} '[^']+' = ", main_text())
    assert m, f"module {symbol} not in main.bicep"
    end = re.compile(r"\n\}\]?\n").search(main_text(), m.end())  # a module, or a module loop's `}]`
    return main_text()[m.start():end.end() - 1]


def app_list() -> list[tuple[str, str]]:
    """(azd service, stage) of the four apps, in main.bicep's order (that of appIdentities and functionApps)."""
    return re.findall(r"\{ service: '(\w+)', stage: '(\w+)' \}", main_text())


def outputs() -> dict[str, str]:
    return dict(re.findall(r"(?m)^output (\w+) \w+ = (.+)$", main_text()))


def var_literal(name: str) -> str:
    value = var_expr(name).strip()
    assert re.fullmatch(r"'[^']*'", value), (name, value)
    return value[1:-1]


def job_spec() -> dict:
    return yaml.safe_load(JOB.read_text())


def workflow_steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["train"]["steps"]


def blob_trigger_function() -> str:
    """The name of the label stage's blob trigger function: the webhook's ``Host.Functions.<name>``."""
    m = re.search(r'@bp\.function_name\("(\w+)"\)\s*\n@bp\.blob_trigger\(', blueprint("label_export_trigger"))
    assert m, "the label stage has no named blob trigger"
    return m.group(1)


def template_params(text: str) -> dict[str, str | None]:
    """param name -> default text (None when the parameter has none)."""
    return {m.group(1): m.group(2) for m in re.finditer(r"(?m)^param (\w+) \w+(?: = (.+))?$", text)}


# Event Grid blob trigger (Flex Consumption accepts only this source)

def test_the_exports_account_gets_an_event_grid_system_topic():
    topic = _strip_comments((MODULES / "exports-topic.bicep").read_text())
    assert re.search(r"resource topic 'Microsoft\.EventGrid/systemTopics@[\d-]+' = "
                     r"if \(empty\(existingSystemTopicName\)\)", topic)
    assert "topicType: 'Microsoft.Storage.StorageAccounts'" in topic
    assert "source: account.id" in topic and "location: account.location" in topic
    call = module_call("exportsTopic")
    # the account the trigger watches, in its own resource group and subscription
    assert "storageAccountName: externalExports ? exportsStorageAccountName : storage.outputs.name" in call
    assert "scope: resourceGroup(exportsSubscriptionId, exportsResourceGroup)" in call
    assert "scope: resourceGroup(exportsSubscriptionId, exportsResourceGroup)" in module_call("exportsRoles")
    assert outputs()["EXPORTS_SYSTEM_TOPIC_NAME"] == "exportsTopic.outputs.name"


def test_the_webhook_subscription_calls_the_blobs_extension_of_the_label_apps_blob_trigger():
    sub = _strip_comments(EVENTGRID.read_text())
    assert re.search(r"resource blobCreated 'Microsoft\.EventGrid/systemTopics/eventSubscriptions@[\d-]+' = \{\s*"
                     r"parent: topic", sub)
    assert re.search(r"resource topic 'Microsoft\.EventGrid/systemTopics@[\d-]+' existing", sub)
    assert "endpointType: 'WebHook'" in sub
    assert ("endpointUrl: 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs"
            "?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'") in sub
    assert re.search(r"var blobsExtensionKey = listKeys\(hostId, '[\d-]+'\)\.systemKeys\.blobs_extension", sub)
    assert template_params(sub)["functionName"] == f"'{blob_trigger_function()}'"
    assert re.search(r"includedEventTypes: \[\s*'Microsoft\.Storage\.BlobCreated'\s*\]", sub)
    assert ("subjectBeginsWith: '/blobServices/default/containers/${exportsContainer}/blobs/${exportsPrefix}'"
            in sub)
    assert "eventDeliverySchema: 'EventGridSchema'" in sub


def test_the_postdeploy_hook_deploys_the_subscription_once_the_code_is_deployed():
    hook = yaml.safe_load((ROOT / "azure.yaml").read_text())["hooks"]["postdeploy"]
    assert hook["run"] == "./infra/hooks/postdeploy.sh" and hook["shell"] == "sh"
    script = HOOK.read_text()
    assert "--template-file infra/eventgrid/exports-subscription.bicep" in script
    # every value the script reads is a main.bicep output or one azd sets itself
    read = set(re.findall(r"\$\(value (\w+)\)", script))
    assert read and read <= set(outputs()) | {"AZURE_SUBSCRIPTION_ID"}, read - set(outputs())
    assert outputs()["AL_EXPORTS_CONTAINER"] == "externalExports ? exportsContainer : containerNames.exports"
    assert outputs()["AL_EXPORTS_PREFIX"] == "exportsPrefix"
    # every parameter without a default is passed
    required = {p for p, default in template_params(EVENTGRID.read_text()).items() if default is None}
    assert required <= set(re.findall(r"(\w+)=\"\$\w+\"", script)), required
    # it waits for the key without printing it
    assert "systemKeys.blobs_extension != `null`" in script and "-o tsv" in script


def test_the_postdeploy_hook_runs_against_a_fake_cli(tmp_path):
    """Run the hook with stand-ins for az and azd on PATH: it waits for the key, then deploys the template."""
    import subprocess

    log = tmp_path / "az.log"
    (tmp_path / "az").write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in
  "functionapp keys list"*) n=$(grep -c 'keys list' {log}); [ "$n" -ge 2 ] && echo true || echo false ;;
  "functionapp show"*) echo func-al-labels-x.azurewebsites.net ;;
esac
""")
    (tmp_path / "azd").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "curl").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "sleep").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("az", "azd", "curl", "sleep"):
        (tmp_path / tool).chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "SERVICE_LABELS_NAME": "func-al-labels-x",
           "AZURE_RESOURCE_GROUP": "rg-al", "AZURE_SUBSCRIPTION_ID": "sub-app", "EXPORTS_SYSTEM_TOPIC_NAME": "evgt",
           "EXPORTS_SYSTEM_TOPIC_RESOURCE_GROUP": "rg-ml", "EXPORTS_SYSTEM_TOPIC_SUBSCRIPTION_ID": "sub-ml",
           "AL_EXPORTS_CONTAINER": "azureml-blobstore-1", "AL_EXPORTS_PREFIX": "Labeling/export/",
           "LABEL_STUDIO_PROJECT_ID": "3"}  # set up before: the hook leaves Label Studio alone
    done = subprocess.run(["sh", str(HOOK)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "project 3" in done.stdout
    calls = log.read_text().splitlines()
    assert not [c for c in calls if "keyvault" in c or "appsettings" in c]
    assert sum("keys list" in c for c in calls) == 2  # polled until the key exists
    deploy = [c for c in calls if c.startswith("deployment group create")]
    assert len(deploy) == 1
    for part in ("--subscription sub-ml", "--resource-group rg-ml",
                 "--template-file infra/eventgrid/exports-subscription.bicep", "systemTopicName=evgt",
                 "functionAppName=func-al-labels-x", "functionAppResourceGroup=rg-al",
                 "functionAppSubscriptionId=sub-app",
                 "exportsContainer=azureml-blobstore-1", "exportsPrefix=Labeling/export/"):
        assert part in deploy[0], part

    missing = {k: v for k, v in env.items() if k != "EXPORTS_SYSTEM_TOPIC_NAME"}
    done = subprocess.run(["sh", str(HOOK)], cwd=ROOT, env=missing, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "topic is empty" in done.stderr

    # the key never appears: the label app is not running (it starts without a labeling project, so that
    # is an error of the deployment)
    (tmp_path / "az").write_text(f"#!/bin/sh\necho \"$*\" >> {log}\necho false\n")
    done = subprocess.run(["sh", str(HOOK)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no blobs_extension key" in done.stderr
    assert len([c for c in log.read_text().splitlines() if c.startswith("deployment group create")]) == 1


def test_the_label_app_uses_the_event_grid_source_in_azure_and_polling_under_func_start():
    assert literal(app_settings_of("label_export_trigger")["AL_BLOB_TRIGGER_SOURCE"]) == "EventGrid"
    for stage in set(STAGES) - {"label_export_trigger"}:
        assert "AL_BLOB_TRIGGER_SOURCE" not in app_settings_of(stage)
    local = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    assert local["AL_BLOB_TRIGGER_SOURCE"] == "LogsAndContainerScan"


# The exports account: trigger, reports, quarantine and replay in one place

def test_reports_quarantine_and_replay_use_the_account_the_trigger_watches():
    labels = app_settings_of("label_export_trigger")
    assert labels["AL_EXPORTS_STORAGE__blobServiceUri"] == labels["AL_EXPORTS_ACCOUNT_URL"] == "exportsBlobUri"
    assert labels["AL_EXPORTS_STORAGE__queueServiceUri"] == "exportsQueueUri"
    assert not any(k.startswith("AL_STORAGE__") for k in labels)  # the trigger's connection is AL_EXPORTS_STORAGE
    assert var_expr("exportsBlobUri") == ("externalExports ? exportsRoles.outputs.blobEndpoint : "
                                          "storage.outputs.blobEndpoint")
    roles = (MODULES / "exports-roles.bicep").read_text()
    assert ROLE_IDS["Storage Blob Data Owner"] in roles  # includes Blob Data Contributor's data actions
    assert re.search(r"containers@[\d-]+' = \{\s*parent: blobService\s*name: quarantineContainer", roles)
    assert "quarantineContainer: containerNames.quarantine" in module_call("exportsRoles")
    assert labels["AL_QUARANTINE_CONTAINER"] == "containerNames.quarantine"


# Training: datastore, environment, checkpoint, compute, workflow

def test_the_items_datastore_has_one_name_that_the_job_mounts():
    m = re.fullmatch(r"azureml://datastores/(\w+)/paths/", job_spec()["inputs"]["items"]["path"])
    assert m, job_spec()["inputs"]["items"]["path"]
    assert var_literal("amlItemsDatastore") == m.group(1)
    assert "amlItemsDatastore" not in params()  # a var: overriding it could not change the job spec
    assert app_settings_of("github_dispatch")["AL_AML_ITEMS_DATASTORE"] == "useAml ? amlItemsDatastore : ''"
    call = module_call("aml")
    assert "itemsDatastoreName: amlItemsDatastore" in call and "itemsContainer: containerNames.items" in call
    aml = _strip_comments((MODULES / "aml-access.bicep").read_text())
    items = re.search(r"(?s)resource itemsDatastore .*?\n\}", aml).group(0)
    assert "containerName: itemsContainer" in items
    assert "credentials: { credentialsType: 'None' }" in items  # identity-based: no stored credential


def test_the_training_environment_lists_its_pip_packages_inline():
    conda = yaml.safe_load((ROOT / "training" / "environment" / "conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert pip and not [p for p in pip if p.lstrip().startswith("-")], pip  # no `-r requirements.txt`
    requirements = [line.strip() for line in
                    (ROOT / "training" / "environment" / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    assert pip == requirements
    assert "python=3.11" in conda["dependencies"]
    # `al bootstrap` deploys the scoring script with this environment: the scorer's ONNX runtime and the
    # inference server of a managed online deployment must be in it
    names = {re.split(r"[<>=!~ ]", p, maxsplit=1)[0] for p in pip}
    assert {"onnxruntime", "azureml-inference-server-http"} <= names


def test_the_jobs_local_paths_resolve_from_the_job_files_folder():
    """The CLI resolves local paths in a job spec, and in --set overrides of it, relative to the spec's folder."""
    base, job = JOB.parent, job_spec()
    checkpoint = job["inputs"]["checkpoint"]
    assert checkpoint["type"] == "custom_model"
    assert (base / checkpoint["path"]).resolve() == (ROOT / "training" / "empty-checkpoint")
    assert (ROOT / "training" / "empty-checkpoint").is_dir()
    assert (base / job["code"]).resolve() == ROOT
    assert (base / job["environment"]["conda_file"]).is_file()
    script = "\n".join(s.get("run", "") for s in workflow_steps())
    overrides = re.findall(r'--set "?inputs\.\w+\.path=([^"\s]+)', script)
    assert overrides and all(o.startswith(("azureml:", "${{")) for o in overrides), overrides
    assert "./training/" not in script  # `training/training/...`: the default comes from the job spec


def test_the_workflow_sets_up_python_before_pip_and_logs_in_with_oidc():
    steps = workflow_steps()
    setup = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/setup-python@")]
    assert len(setup) == 1 and str(steps[setup[0]]["with"]["python-version"]) == "3.11"
    pips = [i for i, s in enumerate(steps) if "pip install" in s.get("run", "")]
    assert pips and setup[0] < min(pips)
    login = [s for s in steps if s.get("uses", "").startswith("azure/login@")]
    assert len(login) == 1
    assert login[0]["with"] == {"client-id": "${{ secrets.AZURE_CLIENT_ID }}",
                                "tenant-id": "${{ secrets.AZURE_TENANT_ID }}",
                                "subscription-id": "${{ secrets.AZURE_SUBSCRIPTION_ID }}"}  # OIDC: no creds
    assert yaml.safe_load(WORKFLOW.read_text())["permissions"]["id-token"] == "write"
    assert steps.index(login[0]) < min(i for i, s in enumerate(steps) if "az ml" in s.get("run", ""))


def test_the_training_compute_cluster_is_created_with_its_own_identity():
    assert job_spec()["compute"] == f"azureml:{var_literal('amlTrainingCompute')}"
    aml = _strip_comments((MODULES / "aml-access.bicep").read_text())
    compute = re.search(r"(?s)resource compute 'Microsoft\.MachineLearningServices/workspaces/computes@[\d-]+' = "
                        r"\{.*?\n\}", aml)
    assert compute, "no compute cluster in aml-access.bicep"
    body = compute.group(0)
    for needle in ("computeType: 'AmlCompute'", "minNodeCount: 0", "type: 'UserAssigned'",
                   "userAssignedIdentities: { '${computeIdentityId}': {} }", "name: computeName"):
        assert needle in body, needle
    call = module_call("aml")
    assert "computeName: amlTrainingCompute" in call
    assert "computeIdentityId: useAml ? computeIdentity.outputs.resourceId : ''" in call
    assert "user-assigned-identity" in module_call("computeIdentity")


def test_the_compute_identity_reads_the_loops_items_and_manifests():
    assert "computePrincipalId: useAml ? computeIdentity.outputs.principalId : ''" in module_call("storageRoles")
    roles = _strip_comments((MODULES / "storage-roles.bicep").read_text())
    reader = re.search(r"(?s)resource computeReader 'Microsoft\.Authorization/roleAssignments@[\d-]+' = .*?\n\}", roles)
    assert reader, "no role for the compute identity"
    # container scope: the items (the datastore) and the manifests, nothing else on the account
    body = reader.group(0)
    assert "scope: trainingReadContainers[i]" in body and "principalId: computePrincipalId" in body
    assert "storageBlobDataReader" in reader.group(0) and "scope: account" not in roles
    assert "'Storage Blob Data Reader': '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'" in roles
    assert "trainingContainers: [containerNames.items, containerNames.manifests]" in module_call("storageRoles")
    # both live in that account: the items datastore and the manifests the dispatch stage writes
    assert {"items", "manifests"} <= {v.strip("'") for v in object_values(var_expr("containerNames")).values()}


def test_the_workflow_identity_is_federated_with_the_dispatched_branch_and_may_train():
    gh = _strip_comments((MODULES / "github-identity.bicep").read_text())
    assert "issuer: 'https://token.actions.githubusercontent.com'" in gh
    assert "subject: 'repo:${repository}:ref:refs/heads/${ref}'" in gh
    assert re.search(r"audiences: \[\s*'api://AzureADTokenExchange'\s*\]", gh)
    call = module_call("githubIdentity")
    assert "repository: githubRepository" in call and "ref: githubRef" in call  # the branch the dispatch uses
    assert "workflowPrincipalId: useAml && !empty(githubRepository) ? githubIdentity.outputs.principalId : ''" \
        in module_call("aml")
    aml = _strip_comments((MODULES / "aml-access.bicep").read_text())
    grant = re.search(r"(?s)resource workflowDataScientist .*?\n\}", aml).group(0)
    assert "principalId: workflowPrincipalId" in grant and "azureMLDataScientist" in grant
    assert "GITHUB_AZURE_CLIENT_ID" in outputs()


# Settings each app reads in Azure mode

@pytest.mark.parametrize("stage", STAGES)
def test_every_app_runs_on_the_azure_backend_with_the_adx_coordinates(stage):
    settings = app_settings_of(stage)
    assert literal(settings["AL_BACKEND"]) == "azure"
    assert {"AL_ADX_CLUSTER_URI", "AL_ADX_INGEST_URI", "AL_ADX_DATABASE", "AL_STORAGE_ACCOUNT_URL"} <= set(settings)
    assert settings["AL_ADX_INGEST_URI"] == "adx.outputs.ingestUri"


@pytest.mark.parametrize("stage", ["label_export_trigger", "github_dispatch"])
def test_the_label_and_dispatch_apps_reach_the_retrain_queue(stage):
    settings = app_settings_of(stage)
    assert settings["AL_STORAGE_QUEUE_URL"] == "storage.outputs.queueEndpoint"
    assert settings["AL_RETRAIN_QUEUE"] == "queueNames.retrain"
    assert settings["AL_STORAGE_ACCOUNT_URL"] == "storage.outputs.blobEndpoint"


def test_only_the_dispatch_app_reaches_the_workspace():
    """The workspace was the label and selector apps' for Data Labeling only: now training and deployment."""
    for name, param in (("AL_AML_SUBSCRIPTION_ID", "amlSubscriptionId"), ("AL_AML_RESOURCE_GROUP", "amlResourceGroup"),
                        ("AL_AML_WORKSPACE", "amlWorkspace")):
        assert app_settings_of("github_dispatch")[name] == param
        for stage in set(STAGES) - {"github_dispatch"}:
            assert name not in app_settings_of(stage), (name, stage)


def test_each_apps_identity_is_ingestor_and_viewer_of_the_adx_database():
    assert ("appClientIds: [clientIds.collector, clientIds.selector, clientIds.labels, clientIds.dispatch]"
            in module_call("adx"))
    adx = (MODULES / "adx.bicep").read_text()
    for role in ("Ingestor", "Viewer"):
        assert re.search(rf"principalId: appClientId\s*principalType: 'App'\s*role: '{role}'", adx), role
    # one at a time (the service takes one principal change per database at a time)
    serial = r"@batchSize\(1\)\s*\nresource \w+ 'Microsoft\.Kusto/clusters/databases/principalAssignments@"
    assert len(re.findall(serial, adx)) == 2
    assert "[for appClientId in appClientIds:" in adx


# setting -> the apps that must have it (the Python side reads them under these names)
ISSUE_10_SETTINGS = {
    "AL_BLOB_TRIGGER_SOURCE": {"label_export_trigger"},
    "AL_EXPORTS_ACCOUNT_URL": {"label_export_trigger"},
    "AL_AML_SUBSCRIPTION_ID": {"github_dispatch"},
    "AL_AML_RESOURCE_GROUP": {"github_dispatch"},
    "AL_AML_WORKSPACE": {"github_dispatch"},
}


def test_the_settings_issue_10_adds_reach_the_apps_that_read_them():
    for name, stages in ISSUE_10_SETTINGS.items():
        for stage in stages:
            assert name in app_settings_of(stage), (name, stage)
    values = json.loads((ROOT / "local.settings.json.example").read_text())
    assert set(ISSUE_10_SETTINGS) <= set(values["Values"])
    assert set(ISSUE_10_NEW) <= set(values["Comments"])  # what each new setting means, for func start users


def test_the_data_labeling_export_settings_are_gone_everywhere():
    texts = {p.relative_to(ROOT).as_posix(): p.read_text() for p in
             [*all_bicep_paths(), INFRA / "main.parameters.json", HOOK, INFRA / "README.md",
              ROOT / "local.settings.json.example", ROOT / "docs" / "deploy.md"]}
    for name, text in texts.items():
        for removed in [*REMOVED, "AML_LABELING_JOB", "amlLabelingJob", "exportSchedule", "exportFormat",
                        "amlLabelingDatastore", "al_labeling_input"]:
            assert removed not in text, (name, removed)
    for removed in REMOVED:
        assert removed.removeprefix("AL_").lower() not in FIELDS, removed  # the contract (shared/settings.py)


# The runbook

def test_the_deploy_runbook_walks_to_the_first_closed_round_and_cites_its_sources():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    for needle in ("azd up", "infra/adx/", "al bootstrap --model-dir", "al bootstrap --aml-model",
                   "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID", "AML_WORKSPACE", "AML_RESOURCE_GROUP",
                   "postdeploy", "retrain-requests", "/api/retrain/retrain-", "ModelVersions", "Labels",
                   # labeling: where Label Studio is, the first sign-in, the project, the way back
                   "LABEL_STUDIO_URL", "LABEL_STUDIO_USERNAME", "label-studio-password", "invite",
                   "al labeling setup", "Uncertainty sampling", "x-functions-key", "/api/labels/webhook",
                   "LABEL_STUDIO_PROJECT_ID", "Labels | take 10", "docs/migrating-from-azureml-labeling.md",
                   "## Label Studio on Azure"):
        assert needle in doc, needle
    cli = (ROOT / "shared" / "cli.py").read_text()
    if '"bootstrap"' in cli:  # the options the runbook uses are the command's
        for option in set(re.findall(r"al bootstrap (?:[^\n`]*?)(--[a-z-]+)", doc)) | {"--collector-url", "--classes"}:
            assert f'"{option}"' in cli, option
    if '"labeling"' in cli:  # the options the hook and the runbook pass to `al labeling setup` are the command's
        used = set(re.findall(r"al labeling setup (?:[^\n`]*?)(--[a-z-]+)", doc + HOOK.read_text()))
        call = re.search(r"(?s)al labeling setup (--url .*?)\); then", HOOK.read_text())
        assert call, "the hook runs no `al labeling setup --url ...`"
        used |= set(re.findall(r"(--[a-z-]+) ", call.group(1)))
        for option in used:
            assert f'"{option}"' in cli, option
    refs = doc.split("## References", 1)
    assert len(refs) == 2, "no References section"
    urls = re.findall(r"https://[^\s)>\]]+", refs[1])
    assert len(urls) >= 8
    assert all(u.startswith(("https://learn.microsoft.com/", "https://docs.github.com/", "https://github.com/Azure",
                             "https://labelstud.io/", "https://github.com/HumanSignal/")) for u in urls), urls
    for topic in ("functions-event-grid-blob-trigger", "flex-consumption", "durable-functions-azure-storage-provider",
                  "create-a-workflow-dispatch-event", "ingest-data-streaming", "extent-tags",
                  # Label Studio on Azure: what the templates rely on
                  "container-apps/manage-secrets", "how-to-connect-tls-ssl", "lifecycle-management",
                  "assign-azure-role-data-access", "labelstud.io/guide/"):
        assert any(topic in u for u in urls), topic


# -- labeling: Label Studio on Azure (Container Apps, PostgreSQL, the labeling account) -----------------------

LABEL_STUDIO = MODULES / "labelstudio.bicep"
POSTGRES = MODULES / "postgres.bicep"
KEYVAULT = MODULES / "keyvault.bicep"
# setting -> the apps that get it (the selector hands tasks over, the label app takes the answers back)
LABELING_SETTINGS = {
    "AL_LABEL_STUDIO_URL": {"selector_timer", "label_export_trigger"},
    "AL_LABEL_STUDIO_TOKEN": {"selector_timer", "label_export_trigger"},
    "AL_LABEL_STUDIO_PROJECT_ID": {"selector_timer", "label_export_trigger"},
    "AL_LABEL_STUDIO_TIMEOUT_SECONDS": {"selector_timer", "label_export_trigger"},
    # both build the tasks' image references against the labeling account (shared/backends.py labeling_tool)
    "AL_LABELING_ACCOUNT_URL": {"selector_timer", "label_export_trigger"},
    # the selector copies into it; the label stage maps an export's rows back to the copies it names
    "AL_LABELING_CONTAINER": {"selector_timer", "label_export_trigger"},
    "AL_LABEL_SYNC_SCHEDULE": {"label_export_trigger"},
}


def label_studio_env() -> dict[str, str]:
    """The container's environment: name -> "value '...'" or "secretRef '...'"."""
    text = _strip_comments(LABEL_STUDIO.read_text())
    return {m.group(1): f"{m.group(2)} {m.group(3)}" for m in
            re.finditer(r"\{ name: '(\w+)', (value|secretRef): ('[^']*'|\w+) \}", text)}


def label_studio_source() -> Path | None:
    """The installed Label Studio package (its own venv, .venv-label-studio), when there is one."""
    found = sorted(ROOT.glob(".venv-label-studio/lib/python3*/site-packages/label_studio"))
    return found[0] if found else None


def test_label_studio_runs_the_official_image_pinned_to_1_23():
    image = params()["labelStudioImage"].strip("'")
    assert re.fullmatch(r"heartexlabs/label-studio:1\.23\.\d+", image), image
    assert "image: labelStudioImage" in module_call("labelStudio")
    module = template_params(LABEL_STUDIO.read_text())
    assert module["image"].strip("'") == image  # the module's own default is the same pin
    assert "image: image" in _strip_comments(LABEL_STUDIO.read_text())
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["labelStudioImage"] == {"value": f"${{LABEL_STUDIO_IMAGE={image}}}"}
    for name, text in all_bicep().items():
        assert ":latest" not in text, name


def test_label_studio_is_reached_over_https_only_and_keeps_one_replica():
    ls = _strip_comments(LABEL_STUDIO.read_text())
    ingress = re.search(r"(?s)ingress: \{.*?\n      \}", ls).group(0)
    for needle in ("external: true", "targetPort: 8080", "allowInsecure: false"):
        assert needle in ingress, needle
    assert "minReplicas: 1" in ls  # state is in PostgreSQL; one replica always answers webhooks and labelers
    assert "appLogsConfiguration: { destination: 'azure-monitor' }" in ls  # no Log Analytics shared key
    assert "workspaceId: logAnalyticsWorkspaceId" in ls
    assert "logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId" in module_call("labelStudio")
    env = label_studio_env()
    url = "value url"
    assert env["LABEL_STUDIO_HOST"] == env["CSRF_TRUSTED_ORIGINS"] == url
    assert "var url = 'https://${name}.${managedEnvironment.properties.defaultDomain}'" in ls
    assert outputs()["LABEL_STUDIO_URL"] == "labelStudio.outputs.url"
    assert app_settings_of("selector_timer")["AL_LABEL_STUDIO_URL"] == "labelStudio.outputs.url"


def test_label_studio_talks_to_postgres_over_tls_only():
    env = label_studio_env()
    assert env["DJANGO_DB"] == "value 'default'" and env["POSTGRE_PORT"] == "value '5432'"
    assert env["PGSSLMODE"] == "value 'require'"
    assert env["POSTGRE_HOST"] == "value postgresHost" and env["POSTGRE_NAME"] == "value postgresDatabase"
    assert env["POSTGRE_USER"] == "value postgresUser" and env["POSTGRE_PASSWORD"] == "secretRef 'db-password'"
    call = module_call("labelStudio")
    assert "postgresHost: postgres.outputs.host" in call and "postgresDatabase: postgres.outputs.databaseName" in call
    pg = _strip_comments(POSTGRES.read_text())
    tls = re.search(r"(?s)resource \w+ 'Microsoft\.DBforPostgreSQL/flexibleServers/configurations@[\d-]+' = \{"
                    r"\s*parent: server\s*name: 'require_secure_transport'\s*properties: \{ value: 'on'", pg)
    assert tls, "require_secure_transport is not on"
    assert "version: serverVersion" in pg and template_params(pg)["serverVersion"] == "'16'"
    assert template_params(pg)["skuName"] == "'Standard_B1ms'" and template_params(pg)["skuTier"] == "'Burstable'"
    assert params()["postgresSkuName"] == "'Standard_B1ms'" and params()["postgresVersion"] == "'16'"
    assert "databaseName: 'labelstudio'" in module_call("postgres")
    # Azure services only (the 0.0.0.0 rule), never a range open to the internet
    rules = re.findall(r"startIpAddress: '([\d.]+)', endIpAddress: '([\d.]+)'", pg)
    assert rules == [("0.0.0.0", "0.0.0.0")], rules
    assert "administratorLoginPassword: postgresAdminPassword" in pg
    assert re.search(r"@secure\(\)\s*(?:@description\([^\n]*\)\s*)?param postgresAdminPassword string\n", pg)


def test_label_studio_reports_nothing_home():
    env = label_studio_env()
    assert env["SENTRY_DSN"] == env["FRONTEND_SENTRY_DSN"] == "value ''"  # Sentry is on by default
    assert env["COLLECT_ANALYTICS"] == env["LATEST_VERSION_CHECK"] == "value 'false'"
    assert env["WEBHOOK_TIMEOUT"] == "value '10'"  # 1 s by default; the webhook is sent once
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "value 'true'"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "value 'true'"
    assert env["LABEL_STUDIO_USERNAME"] == "value username"
    assert "username: labelStudioUsername" in module_call("labelStudio")
    assert outputs()["LABEL_STUDIO_USERNAME"] == "labelStudioUsername"


def test_label_studio_reads_every_variable_it_is_given():
    """Each name is one Label Studio reads (as X, LABEL_STUDIO_X or HEARTEX_X), checked in its installed source."""
    source = label_studio_source()
    if source is None:
        pytest.skip("Label Studio is not installed in .venv-label-studio")
    text = "\n".join(p.read_text(errors="replace") for p in
                     [source / "server.py", *(source / "core" / "settings").glob("*.py"),
                      source / "core" / "utils" / "secret_key.py"])
    for name in label_studio_env():
        if name == "PGSSLMODE":  # libpq's own (psycopg2), not Label Studio's
            continue
        bare = name.removeprefix("LABEL_STUDIO_")
        assert f"'{name}'" in text or f"'{bare}'" in text, name


def test_secrets_reach_label_studio_and_the_apps_only_through_key_vault():
    ls = _strip_comments(LABEL_STUDIO.read_text())
    secrets = re.findall(r"\{ name: '([\w-]+)', keyVaultUrl: secretUris\.(\w+), identity: identityId \}", ls)
    assert sorted(secrets) == [("db-password", "dbPassword"), ("secret-key", "secretKey"),
                               ("user-password", "password"), ("user-token", "token")]
    block = re.search(r"(?s)var secrets = \[(.*?)\n\]", ls).group(1)
    assert "value:" not in block  # references only, never a value
    assert "secrets: secrets" in ls
    env = label_studio_env()
    for name, ref in (("SECRET_KEY", "secret-key"), ("POSTGRE_PASSWORD", "db-password"),
                      ("LABEL_STUDIO_PASSWORD", "user-password"), ("LABEL_STUDIO_USER_TOKEN", "user-token")):
        assert env[name] == f"secretRef '{ref}'", name
    assert not re.search(r"(?m)^@secure\(\)", LABEL_STUDIO.read_text())  # nothing secret passes through it
    assert "secretUris: keyVault.outputs.labelStudioSecretUris" in module_call("labelStudio")
    assert "identityId: labelStudioIdentity.outputs.resourceId" in module_call("labelStudio")
    assert "userAssignedIdentities: { '${identityId}': {} }" in ls
    # its identity reads its four secrets, at secret scope
    kv = _strip_comments(KEYVAULT.read_text())
    reader = re.search(r"(?s)resource labelStudioReader 'Microsoft\.Authorization/roleAssignments@[\d-]+' = "
                       r"\[for \(\w+, i\) in labelStudioSecretOrder: \{\s*scope: labelStudioSecrets\[i\].*?\n\}\]", kv)
    assert reader and "principalId: labelStudioPrincipalId" in reader.group(0)
    assert "labelStudioPrincipalId: labelStudioIdentity.outputs.principalId" in module_call("keyVault")
    # the apps' token: the same secret as Label Studio's LABEL_STUDIO_USER_TOKEN, as a Key Vault reference
    for stage in ("selector_timer", "label_export_trigger"):
        token = app_settings_of(stage)["AL_LABEL_STUDIO_TOKEN"]
        assert token == "'@Microsoft.KeyVault(SecretUri=${keyVault.outputs.labelStudioTokenSecretUri})'"
    assert "token: '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.token}'" in kv
    assert "output labelStudioTokenSecretUri string = '${vault.properties.vaultUri}secrets/" \
           "${labelStudioSecretNames.token}'" in kv


def test_label_studio_secrets_are_generated_once_and_read_back():
    """Random defaults (newGuid, never uniqueString), and under azd the vault's value on every later provision:
    Label Studio applies the user's password and token only when it first creates the user."""
    secure = dict(re.findall(SECURE_PARAM, MAIN.read_text()))
    for name in LABEL_STUDIO_SECRETS:
        default = secure[name]
        assert "newGuid()" in default and "uniqueString" not in default, (name, default)
        assert not re.search(r"'[^'$]{6,}'", default.replace("'-'", "").replace("''", "")), default  # no literal
    kv = _strip_comments(KEYVAULT.read_text())
    names = object_values(var_expr("labelStudioSecretNames", kv))
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name, key in zip(LABEL_STUDIO_SECRETS, ("secretKey", "dbPassword", "password", "token"), strict=True):
        secret = names[key].strip("'")
        assert parameters[name] == {"value": f"$(secretOrRandomPassword ${{KEY_VAULT_NAME}} {secret})"}, name
    assert outputs()["KEY_VAULT_NAME"] == "keyVault.outputs.name"
    for name, text in all_bicep().items():  # no secret in an output, ever
        for out in re.findall(r"(?m)^output .*$", _strip_comments(text)):
            assert not re.search(r"listKeys|getSecret|Password\b|SecretKey\b|Token\b(?!SecretUri)", out), (name, out)


def test_the_labeling_account_is_the_only_one_with_shared_keys():
    shared = {name: len(re.findall(r"allowSharedKeyAccess: true", _strip_comments(text)))
              for name, text in all_bicep().items()}
    assert {n: c for n, c in shared.items() if c} == {LABELING_STORAGE.name: 1}
    assert "allowSharedKeyAccess: false" in (MODULES / "storage.bicep").read_text()
    lab = _strip_comments(LABELING_STORAGE.read_text())
    for needle in ("kind: 'StorageV2'", "allowBlobPublicAccess: false", "minimumTlsVersion: 'TLS1_2'",
                   "supportsHttpsTrafficOnly: true"):
        assert needle in lab, needle
    assert "cors" not in lab.lower()  # proxy mode: Label Studio streams the bytes, browsers never reach the account
    # items expire: a lifecycle rule on the labeling container, N days after the last modification
    rule = re.search(r"(?s)resource lifecycle 'Microsoft\.Storage/storageAccounts/managementPolicies@[\d-]+' = .*?\n\}",
                     lab).group(0)
    assert "prefixMatch: ['${containerName}/']" in rule
    assert "delete: { daysAfterModificationGreaterThan: retentionDays }" in rule
    assert "retentionDays: labelingRetentionDays" in module_call("labelingStorage")
    assert params()["labelingRetentionDays"] == "30"
    # its key: only into Key Vault, where the hook reads it for `al labeling setup`
    assert "keyVaultName: keyVault.outputs.name" in module_call("labelingStorage")
    assert outputs()["LABELING_STORAGE_KEY_SECRET_NAME"] == "labelingStorage.outputs.keySecretName"
    assert outputs()["LABELING_ACCOUNT_URL"] == "labelingStorage.outputs.blobEndpoint"


def test_the_selectors_role_on_the_labeling_account_is_container_scoped():
    lab = _strip_comments(LABELING_STORAGE.read_text())
    assignments = re.findall(r"(?s)resource (\w+) 'Microsoft\.Authorization/roleAssignments@[\d-]+' = \{(.*?)\n\}", lab)
    assert [a for a, _ in assignments] == ["selectorWriter"]
    body = assignments[0][1]
    assert "scope: container" in body and "principalId: selectorPrincipalId" in body
    assert "var storageBlobDataContributor = '" + ROLE_IDS["Storage Blob Data Contributor"] + "'" in lab
    assert "storageBlobDataContributor" in body
    for _, other in assignments:  # no role on the account itself (its diagnostic settings are on it)
        assert "scope: account" not in other
    assert re.search(r"resource container 'Microsoft\.Storage/storageAccounts/blobServices/containers@[\d-]+' = \{"
                     r"\s*parent: blobService\s*name: containerName", lab)
    assert "selectorPrincipalId: principals.selector" in module_call("labelingStorage")  # the selector's own identity
    # the selector writes there, not into the loop's account
    assert app_settings_of("selector_timer")["AL_LABELING_ACCOUNT_URL"] == "labelingStorage.outputs.blobEndpoint"
    assert app_settings_of("selector_timer")["AL_LABELING_CONTAINER"] == "labelingContainer"


def test_labeling_settings_reach_the_selector_and_label_apps_only():
    for name, stages in LABELING_SETTINGS.items():
        for stage in STAGES:
            assert (name in app_settings_of(stage)) == (stage in stages), (name, stage)
    for stage in ("selector_timer", "label_export_trigger"):
        settings = app_settings_of(stage)
        assert settings["AL_LABEL_STUDIO_PROJECT_ID"] == "labelStudioProjectId"
    assert params()["labelStudioProjectId"] == "''"  # until `al labeling setup` ran (the postdeploy hook)
    assert load_settings(label_studio_project_id="").label_studio_project_id is None
    sync = app_settings_of("label_export_trigger")["AL_LABEL_SYNC_SCHEDULE"]
    assert sync == "labelSyncSchedule"
    assert literal(sync) == Settings.model_fields["label_sync_schedule"].default == "0 * * * * *"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["labelStudioProjectId"] == {"value": "${LABEL_STUDIO_PROJECT_ID}"}
    assert parameters["labelSyncSchedule"] == {"value": "${AL_LABEL_SYNC_SCHEDULE=0 * * * * *}"}
    assert parameters["labelingContainer"] == {"value": "${AL_LABELING_CONTAINER=labeling-input}"}
    values = json.loads((ROOT / "local.settings.json.example").read_text())
    assert set(values["Values"]) >= LABELING_NEW and set(values["Comments"]) >= LABELING_NEW
    assert values["Values"]["AL_LABEL_SYNC_SCHEDULE"] == "0 * * * * *"


def test_the_label_app_binds_the_sync_timer_and_the_webhook_route():
    """The label app's catch-up timer resolves %AL_LABEL_SYNC_SCHEDULE%; Label Studio posts to
    /api/labels/webhook with the app's function key (x-functions-key)."""
    bp = blueprint("label_export_trigger")
    assert "AL_LABEL_SYNC_SCHEDULE" in binding_settings("label_export_trigger")
    assert re.search(r'@bp\.route\(route="labels/webhook", methods=\["POST"\], auth_level=func\.AuthLevel\.FUNCTION\)',
                     bp), "no POST labels/webhook route at auth level FUNCTION"
    assert "/api/labels/webhook" in HOOK.read_text()


def test_the_postdeploy_hook_sets_up_the_label_studio_project_once(tmp_path):
    """No LABEL_STUDIO_PROJECT_ID: the hook waits for Label Studio, reads the secrets from Key Vault, runs
    `al labeling setup` with the token in its environment, keeps the project id and sets it on both apps."""
    import subprocess

    log, al_log = tmp_path / "az.log", tmp_path / "al.log"
    (tmp_path / "az").write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *"--query functionKeys.default"*) echo fn-key-123 ;;
  "functionapp keys list"*) echo true ;;
  "functionapp show"*) echo func-al-labels-x.azurewebsites.net ;;
  *"-n labeling-storage-key"*) echo storage-key-456 ;;
  *"-n label-studio-token"*) echo token-789 ;;
esac
""")
    (tmp_path / "azd").write_text(f"#!/bin/sh\necho \"azd $*\" >> {log}\n[ \"$1\" = env ] && [ \"$2\" = set ]\n")
    (tmp_path / "al").write_text(f"""#!/bin/sh
echo "$* token=$AL_LABEL_STUDIO_TOKEN key=$AL_LABELING_ACCOUNT_KEY hook=$AL_LABEL_STUDIO_WEBHOOK_KEY \\
backend=$AL_BACKEND model=$AL_MODEL_NAME" >> {al_log}
echo "created project"
echo '{{"project_id": 42, "created": true, "storage_id": 1, "webhook_id": 2}}'
""")
    (tmp_path / "curl").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "sleep").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("az", "azd", "al", "curl", "sleep"):
        (tmp_path / tool).chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "SERVICE_LABELS_NAME": "func-al-labels-x",
           "SERVICE_SELECTOR_NAME": "func-al-selector-x", "AZURE_RESOURCE_GROUP": "rg-al",
           "AZURE_SUBSCRIPTION_ID": "sub-app", "EXPORTS_SYSTEM_TOPIC_NAME": "evgt",
           "EXPORTS_SYSTEM_TOPIC_RESOURCE_GROUP": "rg-al", "EXPORTS_SYSTEM_TOPIC_SUBSCRIPTION_ID": "sub-app",
           "AL_EXPORTS_CONTAINER": "exports", "AL_EXPORTS_PREFIX": "labeling/exports/",
           "LABEL_STUDIO_URL": "https://ca-al-ls-x.example.azurecontainerapps.io", "AL_MODEL_NAME": "classifier",
           "KEY_VAULT_NAME": "kv-al-x", "LABEL_STUDIO_TOKEN_SECRET_NAME": "label-studio-token",
           "LABELING_STORAGE_KEY_SECRET_NAME": "labeling-storage-key", "LABELING_STORAGE_ACCOUNT_NAME": "stlblx",
           "AL_LABELING_CONTAINER": "labeling-input"}
    assert set(env) - {"PATH", "AZURE_SUBSCRIPTION_ID"} <= set(outputs())
    done = subprocess.run(["sh", str(HOOK)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (setup,) = al_log.read_text().splitlines()
    arguments, environment = setup.split(" token=")
    for part in ("labeling setup --url https://ca-al-ls-x.example.azurecontainerapps.io", "--storage azure",
                 "--webhook-url https://func-al-labels-x.azurewebsites.net/api/labels/webhook",
                 "--storage-account stlblx", "--container labeling-input"):
        assert part in arguments, part
    # the secrets: in the command's environment only, never on its command line
    assert environment == "token-789 key=storage-key-456 hook=fn-key-123 backend=azure model=classifier"
    for secret in ("token-789", "storage-key-456", "fn-key-123"):
        assert secret not in arguments
    calls = log.read_text().splitlines()
    assert "keyvault secret show --vault-name kv-al-x -n label-studio-token --query value -o tsv" in calls
    assert "azd env set LABEL_STUDIO_PROJECT_ID 42" in calls
    settings = [c for c in calls if "config appsettings set" in c]
    assert len(settings) == 2 and all("--settings AL_LABEL_STUDIO_PROJECT_ID=42" in c for c in settings)
    assert {re.search(r"-n (\S+)", c).group(1) for c in settings} == {"func-al-selector-x", "func-al-labels-x"}
    assert calls.index(settings[-1]) < calls.index(next(c for c in calls if c.startswith("deployment group create")))
    for secret in ("token-789", "storage-key-456", "fn-key-123"):  # never printed
        assert secret not in done.stdout + done.stderr, secret
    assert "project 42" in done.stdout

    # a setup that fails (e.g. no serving model version yet) stops the hook and says what to do
    (tmp_path / "al").write_text("#!/bin/sh\necho 'no serving version of classifier' >&2\nexit 2\n")
    done = subprocess.run(["sh", str(HOOK)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "al bootstrap" in done.stderr and "azd hooks run postdeploy" in done.stderr
    # ... and so does one whose last line names no project
    (tmp_path / "al").write_text("#!/bin/sh\necho done\n")
    done = subprocess.run(["sh", str(HOOK)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "project_id" in done.stderr
    assert len([c for c in log.read_text().splitlines() if c.startswith("azd env set")]) == 1


# -- Flex Consumption -----------------------------------------------------------------------------------

def test_no_site_property_or_setting_that_flex_consumption_does_not_support():
    app = _strip_comments((MODULES / "functionapp.bicep").read_text())
    for name in ("ftpsState", "linuxFxVersion", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION",
                 "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"):
        assert name not in app, name


# -- issue 20, item 6: one identity per app, each with its own stage's roles at the narrowest scope ----------------

STORAGE_ROLES = MODULES / "storage-roles.bicep"
FUNCTION_APP = MODULES / "functionapp.bicep"
GRANT = re.compile(r"\{ app: '(\w+)', role: '([^']+)', (container|queue): (containerNames|queueNames)\.(\w+) \}")


def grants(var: str) -> list[tuple[str, str, str, str]]:
    """(app, role, 'container'|'queue', name) of a grant table in main.bicep."""
    names = {"containerNames": object_values(var_expr("containerNames")),
             "queueNames": object_values(var_expr("queueNames"))}
    return [(app, role, kind, names[table][key].strip("'")) for app, role, kind, table, key
            in GRANT.findall(var_expr(var))]


def loop_account_grants() -> set[tuple[str, str, str, str]]:
    """Every grant on the loop's data account, exports in it included (the default)."""
    return {g for var in ("loopBlobGrants", "loopExportsGrants", "loopQueueGrants", "loopExportsQueueGrants")
            for g in grants(var)}


# What each stage touches on the loop's account, read from the code (shared/backends.py: which port uses which
# container setting; functions/*/wiring.py: which stage takes which port). The table in docs/deploy.md says the same.
EXPECTED_LOOP_GRANTS = {
    ("collector", "Storage Blob Data Contributor", "container", "items"),  # CollectService puts inline items
    ("collector", "Storage Blob Data Contributor", "container", "landing"),  # IngestService lands batches
    ("selector", "Storage Blob Data Reader", "container", "items"),  # hand_off reads the item it copies
    ("selector", "Storage Blob Data Contributor", "container", "selection-lock"),  # BlobLeaseLock
    ("labels", "Storage Blob Data Contributor", "container", "retrain-state"),  # retrain + catch-up watermarks
    ("labels", "Storage Blob Data Contributor", "container", "exports-quarantine"),  # quarantine, refusal reports
    ("labels", "Storage Blob Data Owner", "container", "exports"),  # the blob trigger (exports in this account)
    ("labels", "Storage Queue Data Contributor", "queue", "retrain-requests"),  # sends; creates it if missing
    ("labels", "Storage Queue Data Contributor", "queue", "webjobs-blobtrigger-poison"),  # the blob trigger's
    ("dispatch", "Storage Blob Data Contributor", "container", "manifests"),  # the manifest data asset
    ("dispatch", "Storage Blob Data Contributor", "container", "retrain-outcomes"),  # the outcome report
    ("dispatch", "Storage Queue Data Reader", "queue", "retrain-requests"),  # queue trigger: peek, length
    ("dispatch", "Storage Queue Data Message Processor", "queue", "retrain-requests"),  # receive, delete
    ("dispatch", "Storage Queue Data Contributor", "queue", "retrain-requests-poison"),  # the host moves poison
}


def module_apps(symbol: str) -> set[str]:
    """The apps whose identity a module call of main.bicep passes (principals.<app>, clientIds.<app>)."""
    return set(re.findall(r"\b(?:principals|clientIds)\.(\w+)", module_call(symbol)))


def role_assignments(path: Path) -> list[tuple[str, str]]:
    """(symbolic name, body) of every role assignment resource of a template."""
    text = _strip_comments(path.read_text())
    return re.findall(r"(?s)resource (\w+) 'Microsoft\.Authorization/roleAssignments@[\d-]+' = (.*?\n\}\]?)", text)


def test_the_loop_account_grants_are_what_each_stage_uses():
    assert loop_account_grants() == EXPECTED_LOOP_GRANTS
    # the containers and queues the stages use are the ones the code names
    containers, queues = code_containers_and_queues()
    for _, _, kind, name in EXPECTED_LOOP_GRANTS:
        assert name in (containers if kind == "container" else queues) or name.endswith("-poison"), name
    roles = _strip_comments(STORAGE_ROLES.read_text())
    for _, role, _, _ in EXPECTED_LOOP_GRANTS:
        assert re.search(rf"'{role}': '[0-9a-f-]{{36}}'", roles), role
    call = module_call("storageRoles")
    assert "principals: principals" in call
    assert "blobGrants: concat(loopBlobGrants, externalExports ? [] : loopExportsGrants)" in call
    assert "queueGrants: concat(loopQueueGrants, externalExports ? [] : loopExportsQueueGrants)" in call
    # the settings the code reads name those containers and queues
    for service, stage in app_list():
        settings = app_settings_of(stage)
        for _, _, _, name in (g for g in EXPECTED_LOOP_GRANTS if g[0] == service):
            field = {"items": "AL_ITEMS_CONTAINER", "landing": "AL_LANDING_CONTAINER",
                     "selection-lock": "AL_SELECTION_LOCK_CONTAINER", "retrain-state": "AL_RETRAIN_STATE_CONTAINER",
                     "exports-quarantine": "AL_QUARANTINE_CONTAINER", "retrain-requests": "AL_RETRAIN_QUEUE"}.get(name)
            if field and not (service == "selector" and name == "items"):  # the selector reads items by URI
                assert field in settings, (stage, field)


def test_no_app_identity_has_a_role_another_stage_needs():
    by_app: dict[str, set[str]] = {}
    for app, role, _, name in loop_account_grants():
        by_app.setdefault(app, set()).add(f"{role} on {name}")
    for service, _ in app_list():
        by_app.setdefault(service, set())
    # roles outside the loop account: which module call passes which app's identity
    assert module_apps("aml") == {"dispatch"}  # AzureML Data Scientist: only the app that trains and deploys
    assert module_apps("labelingStorage") == {"selector"}  # the labeling container: only the selector writes
    assert module_apps("exportsRoles") == {"labels"}  # the exports account: only the label stage
    assert module_apps("keyVault") == {"selector", "labels", "dispatch"}  # each at secret scope (test below)
    assert module_apps("adx") == module_apps("appInsights") == {s for s, _ in app_list()}  # every stage
    # the internet-facing collector: no Azure ML, no Key Vault, nothing on the labeling or exports accounts
    assert "collector" not in module_apps("aml") | module_apps("keyVault") | module_apps("labelingStorage") \
        | module_apps("exportsRoles")
    assert by_app["collector"] == {"Storage Blob Data Contributor on items", "Storage Blob Data Contributor on landing"}
    # and nobody shares a writable container with another stage
    writable: dict[str, set[str]] = {}
    for app, role, kind, name in loop_account_grants():
        if kind == "container" and role != "Storage Blob Data Reader":
            writable.setdefault(name, set()).add(app)
    assert all(len(apps) == 1 for apps in writable.values()), writable
    # only the dispatch app receives retrain requests, only the label app sends them
    retrain = {(app, role) for app, role, kind, name in loop_account_grants() if name == "retrain-requests"}
    assert retrain == {("labels", "Storage Queue Data Contributor"), ("dispatch", "Storage Queue Data Reader"),
                       ("dispatch", "Storage Queue Data Message Processor")}
    # no module takes the one identity the four apps used to share
    for name, text in all_bicep().items():
        assert not re.search(r"(?m)^param (appPrincipalId|appClientId) ", text), name


def test_role_scopes_are_containers_queues_and_secrets_where_the_api_allows():
    """No role on a whole storage account but the app's own host storage; Key Vault at secret scope but the
    deployer's; the rest on the one resource (workspace, component, database) the role is about."""
    allowed = {
        "storage-roles.bicep": {"grantContainers[i]", "grantQueues[i]", "trainingReadContainers[i]"},
        "exports-roles.bicep": {"exports", "quarantine", "poison"},
        "labeling-storage.bicep": {"container"},
        "keyvault.bicep": {"labelStudioSecrets[3]", "secret", "labelStudioSecrets[i]", "vault"},
        "functionapp.bicep": {"hostStorage"},
        "appinsights.bicep": {"component"},
        "aml-access.bicep": {"workspace"},
    }
    kinds = {"grantContainers": "containers", "trainingReadContainers": "containers", "grantQueues": "queues",
             "exports": "containers", "quarantine": "containers", "poison": "queues", "container": "containers",
             "labelStudioSecrets": "secrets", "secret": "secrets"}
    seen = set()
    for path in all_bicep_paths():
        assignments = role_assignments(path)
        if not assignments:
            continue
        seen.add(path.name)
        text = _strip_comments(path.read_text())
        for symbol, body in assignments:
            scope = re.search(r"\bscope: ([\w\[\]]+)", body)
            assert scope, (path.name, symbol)
            assert scope.group(1) in allowed[path.name], (path.name, symbol, scope.group(1))
            base = scope.group(1).split("[")[0]
            if base in kinds:  # the scope symbol is a container, queue or secret resource
                assert re.search(rf"resource {base} '[^']+/{kinds[base]}@", text), (path.name, base)
            if scope.group(1) == "vault":
                assert symbol == "deployerReader", "only the deployer reads at vault scope"
            if scope.group(1) == "hostStorage":  # the app's own host account, no one else's
                assert "principalId: identityPrincipalId" in body
    assert seen == set(allowed)
    kv = _strip_comments(KEYVAULT.read_text())
    assert re.search(r"var labelStudioSecretOrder = \[\s*labelStudioSecretNames\.secretKey\s*"
                     r"labelStudioSecretNames\.dbPassword\s*labelStudioSecretNames\.password\s*"
                     r"labelStudioSecretNames\.token\s*\]", kv), "labelStudioSecrets[3] must be the token"


def test_the_label_studio_token_is_readable_by_the_selector_and_label_apps_only():
    call = module_call("keyVault")
    assert "labelStudioTokenReaders: [principals.selector, principals.labels]" in call
    assert "githubTokenReader: principals.dispatch" in call
    kv = _strip_comments(KEYVAULT.read_text())
    readers = dict(role_assignments(KEYVAULT))
    assert "[for reader in labelStudioTokenReaders:" in readers["tokenReaders"]
    assert "scope: labelStudioSecrets[3]" in readers["tokenReaders"]
    assert "scope: secret" in readers["githubTokenReaderAssignment"]
    assert "if (!empty(githubToken))" in readers["githubTokenReaderAssignment"]
    assert "appPrincipalId" not in kv
    for stage in STAGES:
        settings = app_settings_of(stage)
        assert ("AL_LABEL_STUDIO_TOKEN" in settings) == (stage in ("selector_timer", "label_export_trigger")), stage
        assert ("AL_GITHUB_TOKEN" in settings) == (stage == "github_dispatch"), stage


def test_each_app_has_its_own_host_storage_with_only_its_own_roles():
    call = module_call("functionApps")
    assert "hostStorageName: take('st${app.service}${resourceToken}', 24)" in call
    assert "durableTaskHub: app.stage == 'github_dispatch'" in call
    assert "blobTrigger: app.stage == 'label_export_trigger'" in call
    assert "storage.outputs" not in call  # nothing of the loop's data account is any app's host storage
    for service, _ in app_list():
        name = f"st{service}" + "x" * 13  # resourceToken: uniqueString, 13 characters
        assert re.fullmatch(r"[a-z0-9]{3,24}", name[:24]), name
    app = _strip_comments(FUNCTION_APP.read_text())
    host = re.search(r"(?s)resource hostStorage 'Microsoft\.Storage/storageAccounts@[\d-]+' = \{.*?\n\}", app).group(0)
    for needle in ("name: hostStorageName", "allowSharedKeyAccess: false", "allowBlobPublicAccess: false",
                   "minimumTlsVersion: 'TLS1_2'"):
        assert needle in host, needle
    assert "AzureWebJobsStorage__accountName: hostStorage.name" in app
    assert ("var hostRoles = concat([storageBlobDataOwner], durableTaskHub || blobTrigger ? "
            "[storageQueueDataContributor] : [],\n  durableTaskHub ? [storageTableDataContributor] : [])") in app


def test_the_deploy_runbook_has_the_identity_table():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    section = doc.split("### Identities, roles and scopes", 1)
    assert len(section) == 2, "docs/deploy.md has no identities table"
    table = section[1].split("\nOther principals", 1)[0]  # the apps' table, before the other principals'
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]
    for service, _ in app_list():
        mine = [r for r in rows if f"id-al-{service}-" in r[0]]
        assert mine, service
        text = " ".join(" ".join(r) for r in mine)
        for app, role, _, name in loop_account_grants():
            if app == service:
                assert role in text and f"`{name}`" in text, (service, role, name)
        assert ("AzureML Data Scientist" in text) == (service == "dispatch"), service
        assert ("Key Vault Secrets User" in text) == (service != "collector"), service
        assert "Ingestor" in text and "Viewer" in text and "Monitoring Metrics Publisher" in text, service
        assert f"`st{service}…`" in text, service  # its own host storage


# -- issue 20, item 7: network and logs -----------------------------------------------------------------------------

DIAGNOSABLE = ("Microsoft.KeyVault/vaults", "Microsoft.Storage/storageAccounts",
               "Microsoft.Storage/storageAccounts/blobServices", "Microsoft.Storage/storageAccounts/queueServices",
               "Microsoft.Storage/storageAccounts/tableServices", "Microsoft.Kusto/clusters",
               "Microsoft.EventGrid/systemTopics", "Microsoft.Web/sites", "Microsoft.DBforPostgreSQL/flexibleServers",
               "Microsoft.App/managedEnvironments")


def test_every_resource_that_has_diagnostic_settings_sends_them_to_log_analytics():
    """Key Vault, every storage account and its blob/queue/table services, ADX, the Event Grid topic, the function
    apps, PostgreSQL and the Container Apps environment: each has a diagnostic setting to the workspace."""
    found = set()
    for path in all_bicep_paths():
        text = _strip_comments(path.read_text())
        declared = re.findall(r"(?m)^resource (\w+) '([\w./]+)@[\w-]+'( existing)? = ", text)
        settings = re.findall(r"(?s)resource \w+ 'Microsoft\.Insights/diagnosticSettings@[\w-]+' = (?:if \([^\n]*\) )?"
                              r"\{\s*scope: (\w+)\s*name: '[\w-]+'\s*properties: \{\s*workspaceId: (\w+)", text)
        scoped = {scope for scope, _ in settings}
        assert all(ws == "logAnalyticsWorkspaceId" for _, ws in settings), path.name
        for symbol, rtype, existing in declared:
            if rtype in DIAGNOSABLE and not existing:
                assert symbol in scoped, f"{path.name}: {rtype} {symbol} has no diagnostic setting"
                found.add(rtype)
        if settings:
            assert re.search(r"(?m)^param logAnalyticsWorkspaceId string$", text), path.name
    assert found == set(DIAGNOSABLE)
    for symbol in ("storage", "keyVault", "adx", "exportsTopic", "postgres", "labelingStorage", "functionApps",
                   "labelStudio"):
        assert "logAnalytics.outputs.resourceId" in module_call(symbol), symbol
    assert "diagnosticSettings: [{ useThisWorkspace: true }]" in module_call("logAnalytics")


def test_only_the_collector_is_open_to_the_internet():
    inbound = var_expr("inbound")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"(?m)^\s*(\w+): \{ (.+) \}$", inbound)}
    assert set(rows) == {s for s, _ in app_list()}
    assert rows["collector"].startswith("public: true")
    for service in ("selector", "labels", "dispatch"):
        assert rows[service].startswith("public: false"), service
        assert "adminRanges" in rows[service], service
    # the label app: Event Grid (its blobs extension) and Label Studio (the annotation webhook)
    assert "serviceTags: ['AzureEventGrid']" in rows["labels"]
    assert "labelStudio.outputs.outboundIpAddresses" in rows["labels"]
    assert "serviceTags: []" in rows["selector"] and "serviceTags: []" in rows["dispatch"]
    call = module_call("functionApps")
    for key, field in (("publicInbound", "public"), ("allowedServiceTags", "serviceTags"),
                       ("allowedIpRanges", "ipRanges")):
        assert f"{key}: inbound[app.service].{field}" in call, key
    app = _strip_comments(FUNCTION_APP.read_text())
    assert "ipSecurityRestrictionsDefaultAction: publicInbound ? 'Allow' : 'Deny'" in app
    assert "ipSecurityRestrictions: publicInbound ? [] : concat(serviceTagRules, ipRangeRules)" in app
    assert "tag: 'ServiceTag'" in app and "scmIpSecurityRestrictionsUseMain: false" in app
    assert ("output outboundIpAddresses array = contains(app.properties, 'outboundIpAddresses') ? "
            "app.properties.outboundIpAddresses : []") in _strip_comments(LABEL_STUDIO.read_text())
    assert params()["adminIpRanges"] == "''"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["adminIpRanges"] == {"value": "${ADMIN_IP_RANGES}"}


def test_key_vault_keeps_deleted_secrets_and_the_secrets_expire_where_they_can():
    kv = _strip_comments(KEYVAULT.read_text())
    vault = re.search(r"(?s)resource vault 'Microsoft\.KeyVault/vaults@[\d-]+' = \{.*?\n\}", kv).group(0)
    for needle in ("enableRbacAuthorization: true", "enableSoftDelete: true", "enablePurgeProtection: true"):
        assert needle in vault, needle
    github = re.search(r"(?s)resource secret 'Microsoft\.KeyVault/vaults/secrets@[\d-]+' = .*?\n\}", kv).group(0)
    assert "contentType: 'GitHub token (actions:write)'" in github
    assert "attributes: { exp: dateTimeToEpoch(githubTokenExpiry) }" in github
    assert "var githubTokenExpiry = empty(githubTokenExpiresOn) ? dateTimeAdd(now, 'P1Y') : githubTokenExpiresOn" in kv
    assert "githubTokenExpiresOn: githubTokenExpiresOn" in module_call("keyVault")
    lab = _strip_comments(LABELING_STORAGE.read_text())
    assert "attributes: { exp: dateTimeToEpoch(dateTimeAdd(now, 'P1Y')) }" in lab
    for text in (kv, lab):
        assert "param now string = utcNow()" in text


# -- issue 20, item 4 (infra): the exports filter never covers a whole container ------------------------------------

def test_the_exports_prefix_is_required_and_names_a_folder():
    main = MAIN.read_text()
    assert re.search(r"@minLength\(1\)\n@description\([^\n]*\)\nparam exportsPrefix string = '([^']+)'\n", main)
    default = params()["exportsPrefix"].strip("'")
    assert default and default.endswith("/") and default != "/", default
    assert load_settings(exports_prefix=default).exports_prefix == default  # the label app starts with it
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["exportsPrefix"] == {"value": f"${{EXPORTS_PREFIX={default}}}"}
    assert app_settings_of("label_export_trigger")["AL_EXPORTS_PREFIX"] == "exportsPrefix"
    assert outputs()["AL_EXPORTS_PREFIX"] == "exportsPrefix"
    # the Event Grid subscription: a prefix is required, no default
    sub = EVENTGRID.read_text()
    assert template_params(sub)["exportsPrefix"] is None
    assert re.search(r"@minLength\(1\)\n@description\([^\n]*\)\nparam exportsPrefix string\n", sub)
    # and the trigger's path is the folder, not the container
    from functions.label_export_trigger.wiring import exports_path

    assert exports_path(load_settings(exports_prefix=default)) == f"exports/{default}{{name}}"


@pytest.mark.parametrize("prefix, message", [("", "would cover the whole container"), ("labeling", "must end with /")])
def test_the_postdeploy_hook_refuses_a_filter_on_a_whole_container(tmp_path, prefix, message):
    import subprocess

    log = tmp_path / "az.log"
    (tmp_path / "az").write_text(f"#!/bin/sh\necho \"$*\" >> {log}\necho true\n")
    (tmp_path / "azd").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("az", "azd"):
        (tmp_path / tool).chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "SERVICE_LABELS_NAME": "func-al-labels-x",
           "AZURE_RESOURCE_GROUP": "rg-al", "AZURE_SUBSCRIPTION_ID": "sub-app", "EXPORTS_SYSTEM_TOPIC_NAME": "evgt",
           "EXPORTS_SYSTEM_TOPIC_RESOURCE_GROUP": "rg-al", "EXPORTS_SYSTEM_TOPIC_SUBSCRIPTION_ID": "sub-app",
           "AL_EXPORTS_CONTAINER": "exports", "AL_EXPORTS_PREFIX": prefix, "LABEL_STUDIO_PROJECT_ID": "3"}
    done = subprocess.run(["sh", str(HOOK)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert not log.exists() or "deployment group create" not in log.read_text()
