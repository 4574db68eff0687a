"""The IaC scan (issue 20, item 7): Checkov over every template in infra/, against the committed baseline.

``checkov -d infra --framework bicep`` (Checkov from PyPI, in its own venv: ``make checkov``) must
- scan every ``.bicep`` file: Checkov's Bicep parser (pycep) skips a file it cannot parse and says so only in
  its JSON's ``parsing_errors``; a file without a check that applies leaves no trace at all. So the scan runs with
  a probe check (written here, ``--external-checks-dir``) that passes on every resource: each template must then
  show up in the results, and none among the parsing errors;
- report no finding that ``infra/checkov-baseline.yaml`` does not list with a reason;
- and the baseline must hold no stale entry (one that no finding matches any more) and no entry without a reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BASELINE = INFRA / "checkov-baseline.yaml"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
PROBE_ID = "CKV_AL_SCANNED"

PROBE = f'''
from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


class Scanned(BaseResourceCheck):
    """Passes on every resource: a template with a resource in the results was parsed and scanned."""

    def __init__(self):
        super().__init__(name="the template was parsed and scanned", id="{PROBE_ID}",
                         categories=(CheckCategories.CONVENTION,), supported_resources=("*",))

    def scan_resource_conf(self, conf):
        return CheckResult.PASSED


check = Scanned()
'''


def run_checkov(directory: Path, probe_dir: Path) -> dict:
    """Checkov's JSON report of ``directory`` (Bicep only, offline: no platform download)."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV.relative_to(ROOT)} is missing: run `make checkov` (Checkov in its own venv)")
    probe_dir.mkdir(parents=True, exist_ok=True)
    (probe_dir / "__init__.py").write_text("")
    (probe_dir / "al_scanned.py").write_text(PROBE)
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE",
           "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", "bicep", "--output", "json", "--skip-download",
         "--external-checks-dir", str(probe_dir), "--compact"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode in (0, 1), f"checkov failed ({done.returncode}): {done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    assert len(bicep) == 1, [r.get("check_type") for r in reports]
    return bicep[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    return run_checkov(INFRA, tmp_path_factory.mktemp("checkov-probe"))


def rel(path: str) -> str:
    """Checkov's file path (``/modules/x.bicep``, relative to the scanned directory) as infra-relative posix."""
    return path.replace("\\", "/").lstrip("/")


def scanned_files(report: dict) -> set[str]:
    results = report["results"]
    return {rel(c["file_path"]) for c in results.get("passed_checks", []) if c["check_id"] == PROBE_ID}


def findings(report: dict) -> Counter:
    return Counter((c["check_id"], rel(c["file_path"]), c["resource"]) for c in report["results"]["failed_checks"]
                   if c["check_id"] != PROBE_ID)


@cache
def baseline() -> list[dict]:
    doc = yaml.safe_load(BASELINE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("findings"), list), "the baseline has no findings list"
    return doc["findings"]


def all_templates() -> set[str]:
    return {p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep")}


def test_every_template_parses_and_is_scanned(report):
    parse_errors = [rel(p.removeprefix(str(INFRA))) for p in report["results"].get("parsing_errors", [])]
    assert not parse_errors, f"Checkov could not parse (and so skipped) {parse_errors}"
    templates = all_templates()
    assert {"main.bicep", "eventgrid/exports-subscription.bicep", "modules/functionapp.bicep"} <= templates
    missing = sorted(templates - scanned_files(report))
    assert not missing, f"Checkov scanned no resource of {missing}"


def test_no_finding_outside_the_baseline(report):
    listed = {(e["check"], e["file"], e["resource"]) for e in baseline()}
    new = sorted(f for f in findings(report) if f not in listed)
    assert not new, ("Checkov findings neither fixed nor in infra/checkov-baseline.yaml (fix them, or add an entry "
                     f"with the reason): {new}")


def test_every_baseline_entry_has_a_reason_and_still_matches_a_finding(report):
    entries = baseline()
    assert entries
    keys = [(e.get("check"), e.get("file"), e.get("resource")) for e in entries]
    assert len(keys) == len(set(keys)), [k for k, n in Counter(keys).items() if n > 1]
    for entry in entries:
        assert set(entry) == {"check", "file", "resource", "reason"}, entry
        reason = entry["reason"]
        assert isinstance(reason, str) and len(reason.split()) >= 8, f"no real reason for {entry}"
        assert (INFRA / entry["file"]).is_file(), entry
    stale = sorted(k for k in keys if k not in findings(report))
    assert not stale, f"baseline entries no finding matches any more (delete them): {stale}"


def test_the_scan_sees_a_template_its_parser_skips(tmp_path):
    """The proof above is not vacuous: a template pycep cannot parse (the lambda main.bicep used to have) is
    reported among the parsing errors and is missing from the scanned files."""
    infra = tmp_path / "infra"
    infra.mkdir()
    (infra / "good.bicep").write_text(
        "resource id 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {\n"
        "  name: 'id-x'\n  location: 'westeurope'\n}\n")
    (infra / "lambda.bicep").write_text(
        "var names = { a: 'x', b: 'y' }\n"
        "var values = map(items(names), c => c.value)\n"
        "resource id 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {\n"
        "  name: values[0]\n  location: 'westeurope'\n}\n")
    report = run_checkov(infra, tmp_path / "probe")
    assert scanned_files(report) == {"good.bicep"}
    assert [Path(p).name for p in report["results"]["parsing_errors"]] == ["lambda.bicep"]
