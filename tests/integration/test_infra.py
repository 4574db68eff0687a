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

# Issue 10's new settings: the Event Grid source switch, the exports account and its trigger connection,
# the automatic export. Each must reach the apps that read it and be explained for func start users.
ISSUE_10_NEW = {"AL_BLOB_TRIGGER_SOURCE", "AL_EXPORTS_ACCOUNT_URL", "AL_AML_LABELING_JOB", "AL_EXPORT_SCHEDULE",
                "AL_EXPORT_FORMAT", "AL_AML_ARM_URL", "AL_EXPORTS_STORAGE"}


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


def all_bicep() -> dict[str, str]:
    """main.bicep, its modules, and the templates deployed apart from it (infra/eventgrid/)."""
    return {p.name: p.read_text() for p in [MAIN, *sorted(INFRA.glob("*/*.bicep"))]}


def test_no_storage_key_or_secret_connection_string_anywhere_in_the_bicep():
    assert EVENTGRID.name in all_bicep()
    for name, text in all_bicep().items():
        code = _strip_comments(text)
        if name == EVENTGRID.name:
            assert len(HOST_KEY.findall(code)) == 1
            assert "'Microsoft.Web/sites/host', functionAppName, 'default')" in code
            code = HOST_KEY.sub("", code)
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


def test_no_secret_parameter_is_written_in_clear_to_an_output_or_setting():
    main = main_text()
    secure = re.findall(r"@secure\(\)\s*(?:@description\([^\n]*\)\s*)?param (\w+)", MAIN.read_text())
    assert secure == ["githubToken"]
    for name in re.findall(r"@secure\(\)\s*(?:@description\([^\n]*\)\s*)?param (\w+)", MAIN.read_text()):
        uses = [line for line in main.splitlines() if re.search(rf"\b{name}\b", line) and "param " not in line]
        assert all(re.fullmatch(rf"\s*{name}: {name}", u) for u in uses), uses  # only passed to the vault module
        assert not re.search(rf"(?m)^output .*\b{name}\b", main)


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
    created_containers = {v.strip("'") for v in object_values(var_expr("containerNames")).values()}
    created_queues = {v.strip("'") for v in object_values(var_expr("queueNames")).values()}
    assert containers <= created_containers, sorted(containers - created_containers)
    assert queues <= created_queues, sorted(queues - created_queues)
    storage_call = _balanced(main_text(), main_text().index("module storage "))
    assert "map(items(containerNames)" in storage_call and "map(items(queueNames)" in storage_call
    storage = (MODULES / "storage.bicep").read_text()
    assert re.search(r"containers@[\d-]+' = \[for c in containers:", storage)
    assert re.search(r"queues@[\d-]+' = \[for q in queues:", storage)


def test_every_flex_app_has_its_deployment_container():
    assert "var deploymentContainers = [for app in apps: 'deploy-${app.service}']" in main_text()
    assert "deploymentContainerName: deploymentContainers[i]" in main_text()


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
    for name, text in all_bicep().items():
        for body in re.findall(r"(?s)'Microsoft\.Authorization/roleAssignments@[\d-]+' = .*?\n\}", text):
            assert "principalType: 'ServicePrincipal'" in body, name
            assert re.search(r"name: guid\(", body), name  # idempotent on re-deploy


def test_the_apps_run_as_the_one_user_assigned_identity():
    app = (MODULES / "functionapp.bicep").read_text()
    assert "type: 'UserAssigned'" in app
    assert re.search(r"\bAZURE_CLIENT_ID: identityClientId", app)  # DefaultAzureCredential picks it
    assert "sku: { name: 'FC1', tier: 'FlexConsumption' }" in app
    assert "runtime: { name: 'python', version: pythonVersion }" in app


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
    end = main_text().index("\n}\n", m.end())
    return main_text()[m.start():end + 2]


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
           "AL_EXPORTS_CONTAINER": "azureml-blobstore-1", "AL_EXPORTS_PREFIX": "Labeling/export/"}
    done = subprocess.run(["sh", str(HOOK)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
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
    assert "scope: account" in reader.group(0) and "principalId: computePrincipalId" in reader.group(0)
    assert "roles.storageBlobDataReader" in reader.group(0)
    assert "storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'" in roles
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
def test_the_label_and_dispatch_apps_reach_the_retrain_queue_and_the_workspace(stage):
    settings = app_settings_of(stage)
    assert settings["AL_STORAGE_QUEUE_URL"] == "storage.outputs.queueEndpoint"
    assert settings["AL_RETRAIN_QUEUE"] == "queueNames.retrain"
    assert settings["AL_STORAGE_ACCOUNT_URL"] == "storage.outputs.blobEndpoint"
    for name, param in (("AL_AML_SUBSCRIPTION_ID", "amlSubscriptionId"), ("AL_AML_RESOURCE_GROUP", "amlResourceGroup"),
                        ("AL_AML_WORKSPACE", "amlWorkspace")):
        assert settings[name] == param


def test_the_apps_identity_is_ingestor_and_viewer_of_the_adx_database():
    assert "appClientId: identity.outputs.clientId" in module_call("adx")
    adx = (MODULES / "adx.bicep").read_text()
    for role in ("Ingestor", "Viewer"):
        assert re.search(rf"principalId: appClientId\s*principalType: 'App'\s*role: '{role}'", adx), role


# setting -> the apps that must have it (the Python side of issue 10 reads them under these names)
ISSUE_10_SETTINGS = {
    "AL_BLOB_TRIGGER_SOURCE": {"label_export_trigger"},
    "AL_EXPORTS_ACCOUNT_URL": {"label_export_trigger"},
    "AL_EXPORT_SCHEDULE": {"label_export_trigger"},
    "AL_EXPORT_FORMAT": {"label_export_trigger"},
    "AL_AML_ARM_URL": {"label_export_trigger"},
    "AL_AML_LABELING_JOB": {"label_export_trigger", "selector_timer"},
    "AL_AML_SUBSCRIPTION_ID": {"label_export_trigger", "github_dispatch"},
    "AL_AML_RESOURCE_GROUP": {"label_export_trigger", "github_dispatch"},
    "AL_AML_WORKSPACE": {"label_export_trigger", "github_dispatch"},
}


def test_the_settings_issue_10_adds_reach_the_apps_that_read_them():
    for name, stages in ISSUE_10_SETTINGS.items():
        for stage in stages:
            assert name in app_settings_of(stage), (name, stage)
    labels = app_settings_of("label_export_trigger")
    assert labels["AL_EXPORT_SCHEDULE"] == "exportSchedule" and params()["exportSchedule"] == "'0 */30 * * * *'"
    assert labels["AL_AML_LABELING_JOB"] == app_settings_of("selector_timer")["AL_AML_LABELING_JOB"] == "amlLabelingJob"
    values = json.loads((ROOT / "local.settings.json.example").read_text())
    assert set(ISSUE_10_SETTINGS) <= set(values["Values"])
    assert values["Values"]["AL_EXPORT_SCHEDULE"] == "0 */30 * * * *"
    assert set(ISSUE_10_NEW) <= set(values["Comments"])  # what each new setting means, for func start users
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["amlLabelingJob"] == {"value": "${AML_LABELING_JOB}"}


# The runbook

def test_the_deploy_runbook_walks_to_the_first_closed_round_and_cites_its_sources():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    for needle in ("azd up", "infra/adx/", "AML_LABELING_JOB", "al bootstrap --model-dir", "al bootstrap --aml-model",
                   "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID", "AML_WORKSPACE", "AML_RESOURCE_GROUP",
                   "postdeploy", "retrain-requests", "/api/retrain/retrain-", "ModelVersions", "Labels"):
        assert needle in doc, needle
    cli = (ROOT / "shared" / "cli.py").read_text()
    if '"bootstrap"' in cli:  # the options the runbook uses are the command's
        for option in set(re.findall(r"al bootstrap (?:[^\n`]*?)(--[a-z-]+)", doc)) | {"--collector-url", "--classes"}:
            assert f'"{option}"' in cli, option
    refs = doc.split("## References", 1)
    assert len(refs) == 2, "no References section"
    urls = re.findall(r"https://[^\s)>\]]+", refs[1])
    assert len(urls) >= 8
    assert all(u.startswith(("https://learn.microsoft.com/", "https://docs.github.com/", "https://github.com/Azure"))
               for u in urls), urls
    for topic in ("functions-event-grid-blob-trigger", "flex-consumption", "durable-functions-azure-storage-provider",
                  "exportlabels", "create-a-workflow-dispatch-event", "ingest-data-streaming", "extent-tags"):
        assert any(topic in u for u in urls), topic


# -- Flex Consumption -----------------------------------------------------------------------------------

def test_no_site_property_or_setting_that_flex_consumption_does_not_support():
    app = _strip_comments((MODULES / "functionapp.bicep").read_text())
    for name in ("ftpsState", "linuxFxVersion", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION",
                 "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"):
        assert name not in app, name
