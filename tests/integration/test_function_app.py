"""Index the function app the way the host does, once per process."""

import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.settings import STAGES, load_settings


def test_the_root_app_indexes_every_stage():
    function_app = importlib.import_module("function_app")
    functions = function_app.app.get_functions()  # raises on a registration error
    assert isinstance(functions, list)
    names = [f.get_function_name() for f in functions]
    assert len(names) == len(set(names))


def test_stages_setting_picks_the_blueprints(tmp_path):
    # A fresh interpreter: get_functions() may only be called once per app and process.
    code = textwrap.dedent(
        """
        import os, sys
        os.environ["AL_STAGES"] = "selector_timer"
        import function_app
        function_app.app.get_functions()
        print(",".join(sorted(m for m in sys.modules if m.startswith("functions.") and m.endswith(".blueprint"))))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "functions.selector_timer.blueprint"


def test_all_stages_by_default():
    assert load_settings().stage_names == STAGES


LABEL_STUDIO = ("AL_LABEL_STUDIO_URL", "AL_LABEL_STUDIO_TOKEN", "AL_LABEL_STUDIO_PROJECT_ID")
AZURE_NEEDS = {
    "scoring_collector": {"AL_ADX_CLUSTER_URI", "AL_STORAGE_ACCOUNT_URL"},
    "selector_timer": {"AL_ADX_CLUSTER_URI", "AL_STORAGE_ACCOUNT_URL", "AL_LABELING_ACCOUNT_URL", *LABEL_STUDIO},
    "label_export_trigger": {"AL_ADX_CLUSTER_URI", "AL_STORAGE_ACCOUNT_URL", "AL_EXPORTS_ACCOUNT_URL", *LABEL_STUDIO},
    "github_dispatch": {"AL_ADX_CLUSTER_URI", "AL_STORAGE_ACCOUNT_URL", "AL_GITHUB_REPOSITORY", "AL_GITHUB_TOKEN",
                        "AL_AML_SUBSCRIPTION_ID", "AL_AML_RESOURCE_GROUP", "AL_AML_WORKSPACE", "AL_AML_ENDPOINT",
                        "AL_AML_DEPLOYMENT"},
}


def _start(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AL_")}
    return subprocess.run([sys.executable, "-c", "import function_app"], capture_output=True, text=True,
                          env={**clean, **env}, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("stage", sorted(AZURE_NEEDS))
def test_on_azure_a_missing_setting_stops_the_app_at_start_up_naming_it(stage, tmp_path):
    """No local fallback: an Azure app without its settings does not start, and says which to set."""
    failed = _start({"AL_BACKEND": "azure", "AL_STAGES": stage, "AL_DATA_DIR": str(tmp_path)})
    assert failed.returncode != 0
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("shared.errors.ConfigurationError: setting "), failed.stderr
    named = set(re.findall(r"AL_[A-Z_]+", line.split("missing")[0]))
    assert named == AZURE_NEEDS[stage], line
    every = {name: "https://x.example" if "URI" in name or "URL" in name else "o/r" if "REPOSITORY" in name
             else "7" if name.endswith("_ID") else "x" for name in AZURE_NEEDS[stage]}
    started = _start({"AL_BACKEND": "azure", "AL_STAGES": stage, "AL_DATA_DIR": str(tmp_path), **every})
    assert started.returncode == 0, started.stderr
    assert list(tmp_path.iterdir()) == []  # indexing wrote nothing on the instance's disk




def test_an_unresolved_key_vault_reference_stops_the_app_naming_the_setting(tmp_path):
    """Issue 20, item 3: App Service passes the reference text while the secret is missing; sent to GitHub
    it was a 401 far from its cause. The app now refuses to start and says which setting and why."""
    every = {name: "https://x.example" if "URI" in name or "URL" in name else "o/r" if "REPOSITORY" in name
             else "x" for name in AZURE_NEEDS["github_dispatch"]}
    every["AL_GITHUB_TOKEN"] = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/github-token/)"
    failed = _start({"AL_BACKEND": "azure", "AL_STAGES": "github_dispatch", "AL_DATA_DIR": str(tmp_path), **every})
    assert failed.returncode != 0
    line = failed.stderr.strip().splitlines()[-1]
    assert "setting AL_GITHUB_TOKEN is invalid" in line and "unresolved Key Vault reference" in line, line
