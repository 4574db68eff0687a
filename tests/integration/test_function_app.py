"""Index the function app the way the host does, once per process."""

import importlib
import subprocess
import sys
import textwrap

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
