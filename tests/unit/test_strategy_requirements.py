"""A strategy the function apps cannot run is refused when it is configured (issue 20, item 5:
cluster_margin imports SciPy, which requirements.txt does not install, and failed at its first run)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from shared.core import strategies
from shared.errors import ConfigurationError, SelectionError
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def app_packages() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("-", "_"))
    return names


def test_a_strategy_whose_module_is_missing_is_refused_by_name(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(strategies.importlib.util, "find_spec", lambda n, *a: None if n == "scipy" else real(n, *a))
    with pytest.raises(SelectionError, match=r"'cluster_margin' needs scipy"):
        strategies.check_strategy("cluster_margin")
    with pytest.raises(ConfigurationError, match=r"setting AL_STRATEGY is invalid: .*needs scipy"):
        load_settings(strategy="cluster_margin")
    assert load_settings(strategy="badge").strategy == "badge"


def test_every_strategy_the_deployment_offers_runs_on_the_apps_packages():
    text = (ROOT / "infra" / "main.bicep").read_text()
    offered = re.search(r"Selection strategy \(AL_STRATEGY\): ([^(']+)", text).group(1)
    names = [n.strip().split(" ")[0] for n in offered.split(",")]
    assert "calibration_switch" in names and "cluster_margin" not in names
    have = app_packages()
    for name in names:
        spec = strategies.BATCH_STRATEGIES.get(name)
        assert spec is None or set(spec.requires) <= have, (name, spec.requires)
