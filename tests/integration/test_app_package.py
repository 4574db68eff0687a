"""The function apps as deployed: a fresh venv from exactly ``requirements.txt`` (what the Azure
Functions build installs), the package as ``.funcignore`` leaves it, indexed on the Azure backend,
with every Azure port built (no network: clients connect on first use). Issue 20, item 8: the apps
install only what they import (no DuckDB or pyarrow), with tested upper bounds. Prints the installed
size. The venv is built once per content of the file (``.venv-app-env``) and reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.venvs import built_venv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-app-env"
PACKAGE = ("function_app.py", "host.json", "requirements.txt", "functions", "shared")


@pytest.fixture(scope="module")
def app_python() -> Path:
    wanted = (ROOT / "requirements.txt").read_text()
    return built_venv(VENV, f".stamp-{hashlib.sha256(wanted.encode()).hexdigest()[:16]}",
                      ["-r", str(ROOT / "requirements.txt")])


def site_packages_mb(python: Path) -> float:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) / 2**20


def test_the_apps_index_and_build_their_azure_ports_with_only_requirements_txt(app_python, tmp_path):
    code = tmp_path / "package"
    code.mkdir()
    for part in PACKAGE:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, code / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, code / part)
    script = textwrap.dedent("""
        import importlib, json, os
        import function_app
        names = sorted(f.get_function_name() for f in function_app.app.get_functions())
        from shared.backends import Backend
        from shared.settings import get_settings
        ports = Backend(get_settings())
        built = [type(getattr(ports, p)).__name__ for p in
                 ("store", "objects", "exports", "labeling_objects", "ingestor", "retrain_requests",
                  "selection_lock", "labeling_tool")]
        for module in ("shared.adapters.azureml", "shared.adapters.github", "functions.github_dispatch.orchestrator",
                       "shared.services.retrain", "shared.services.annotations", "shared.telemetry"):
            importlib.import_module(module)
        missing = [m for m in ("duckdb", "pyarrow", "sklearn", "matplotlib") if importlib.util.find_spec(m)]
        print(json.dumps({"functions": names, "ports": built, "embedded_packages_present": missing}))
    """)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AL_BACKEND": "azure", "AL_STAGES": "all",
           "AL_ADX_CLUSTER_URI": "https://c.westeurope.kusto.windows.net",
           "AL_STORAGE_ACCOUNT_URL": "https://loop.blob.core.windows.net",
           "AL_EXPORTS_ACCOUNT_URL": "https://exports.blob.core.windows.net",
           "AL_LABELING_ACCOUNT_URL": "https://labeling.blob.core.windows.net",
           "AL_LABEL_STUDIO_URL": "https://labelstudio.example", "AL_LABEL_STUDIO_TOKEN": "t",
           "AL_LABEL_STUDIO_PROJECT_ID": "1", "AL_GITHUB_REPOSITORY": "o/r", "AL_GITHUB_TOKEN": "t",
           "AL_AML_SUBSCRIPTION_ID": "s", "AL_AML_RESOURCE_GROUP": "g", "AL_AML_WORKSPACE": "w",
           "AL_AML_ENDPOINT": "e", "AL_AML_DEPLOYMENT": "d", "AL_SELECTION_SCHEDULE": "0 0 * * * *"}
    run = subprocess.run([str(app_python), "-c", script], cwd=code, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(got["functions"]) >= 20 and "labels_webhook" in got["functions"], got["functions"]
    assert got["ports"] == ["AdxStore", "BlobObjectStore", "BlobObjectStore", "BlobObjectStore", "AdxIngestor",
                            "QueueRetrainRequests", "BlobLeaseLock", "LabelStudioTool"], got["ports"]
    assert got["embedded_packages_present"] == [], "the apps install only what they import"
    size = site_packages_mb(app_python)
    print(f"\nfunction app packages (requirements.txt): {size:.0f} MB installed")
    assert size < 456  # the review measured 456 MB with DuckDB and pyarrow
