"""`al simulate` as a user runs it: a small real run, and every bad input as one line with exit 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from shared.cli import main

AL = [sys.executable, "-m", "shared.cli"]


@pytest.mark.slow
def test_a_small_simulation_writes_the_three_files(tmp_path):
    out = tmp_path / "run"
    code = main(["simulate", "--dataset", "digits", "--strategies", "margin,random", "--seeds", "2",
                 "--rounds", "2", "--batch", "30", "--scored", "200", "--initial", "40",
                 "--workers", "2", "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["default_strategy"] == "margin"
    for name in ("margin", "random"):
        s = summary["strategies"][name]
        assert s["labels"] == [40, 70, 100]
        assert len(s["accuracy"]["mean"]) == 3 and len(s["accuracy"]["per_seed"]) == 2
        assert 0.3 < s["final_accuracy"] <= 1.0
        assert set(s) >= {"aulc", "final_accuracy", "labels_to_random_final"}
    assert summary["strategies"]["random"]["labels_to_random_final"] == 100
    assert (out / "curves.png").stat().st_size > 10_000
    rows = (out / "rounds.csv").read_text().splitlines()
    assert rows[0].startswith("strategy,seed,round") and len(rows) == 1 + 2 * 2 * 3


def run(*args):
    return subprocess.run([*AL, "simulate", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--dataset", "digits", "--strategies", "margin,clairvoyant"], "unknown strategy 'clairvoyant'"),
        (["--dataset", "digits", "--batch", "5000"], "larger than"),
        (["--dataset", "digits", "--initial", "1000"], "more than the pool"),
        (["--dataset", "digits", "--seeds", "0"], "--seeds must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    result = run(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


def test_bad_folders_and_npz_files(tmp_path):
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(one / "only" / "a.png")
    assert "at least two" in run("--dataset", str(one)).stderr
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "b").mkdir()
    (bad / "a" / "x.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / "b" / "y.png")
    assert "unreadable image" in run("--dataset", str(bad)).stderr
    npz = tmp_path / "x.npz"
    np.savez(npz, features=np.zeros((10, 3)))
    result = run("--dataset", str(npz))
    assert result.returncode == 2 and "no 'labels' array" in result.stderr
