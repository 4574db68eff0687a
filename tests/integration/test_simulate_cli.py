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
        (["--dataset", "digits", "--batch", "5000"], "more than the pool of 1257 items left after 360 test and 180 "
         "validation (give --batch 80 or less)"),
        (["--dataset", "digits", "--batch", "60", "--scored", "50"], "larger than the 50 items scored per round"),
        (["--dataset", "digits", "--initial", "1000"], "more than the pool"),
        (["--dataset", "digits", "--seeds", "0"], "--seeds is 0 (give --seeds 1 or more)"),
        (["--dataset", "digits", "--seeds", "x"], "invalid int value: 'x' (see al simulate --help)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    result = run(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    assert lines[0].startswith("al: error: ") and lines[0].endswith(")")


def test_bad_folders_and_npz_files(tmp_path):
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(one / "only" / "a.png")
    result = run("--dataset", str(one))
    assert result.returncode == 2 and result.stderr.count("at least two") == 1 and "dataset:" not in result.stderr
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "b").mkdir()
    (bad / "a" / "x.png").write_bytes(b"not a png")
    for name in ("y.png", "z.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / "b" / name)
    result = run("--dataset", str(bad))  # the unreadable file is skipped, which leaves class a with none
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"al: warning: skipped {bad / 'a' / 'x.png'}: not an image Pillow can read",
        f"al: error: class folder {bad / 'a'} has 0 readable images and 1 skipped file; each class needs at least 2 "
        f"(add images to it, bmp, gif, jpeg, jpg, png, tif, tiff, webp, or move it out of {bad})",
    ]
    npz = tmp_path / "x.npz"
    np.savez(npz, features=np.zeros((10, 3)))
    result = run("--dataset", str(npz))
    assert result.returncode == 2 and "no 'labels' array" in result.stderr
    assert result.stderr.count("no 'labels' array") == 1


def _no_sizes(**given):
    import argparse

    keys = ("initial", "rounds", "batch", "scored", "test_size", "val_size")
    return argparse.Namespace(**{k: given.get(k) for k in keys})


def test_a_users_small_set_gets_sizes_that_fit_it():
    from shared.cli import _sizes

    big, note = _sizes(_no_sizes(), "", 4000)  # the generic plan fits: unchanged, and nothing said
    assert (big["initial"], big["batch"], big["scored"], big["rounds"]) == (200, 100, 1000, 15) and note is None
    small, note = _sizes(_no_sizes(), "", 1461)  # pool 1,096: 4 % in tens; 15 rounds still fit two thirds
    assert (small["initial"], small["batch"], small["scored"], small["rounds"]) == (40, 40, 400, 15)
    assert small["initial"] + small["rounds"] * small["batch"] <= 1461 - small["test_size"] - small["val_size"]
    assert note == ("sizes fitted to the set: its 1096 items to label (after 219 test and 146 validation) are too "
                    "few for 200 initial + 15 rounds x 100 = 1700 labels, so --initial 40 --rounds 15 --batch 40 "
                    "--scored 400, which label 640 (give --initial, --rounds, --batch or --scored to choose them "
                    "yourself)")
    tiny, _ = _sizes(_no_sizes(), "", 200)  # pool 150: the rounds shrink too, to label two thirds of it
    assert (tiny["initial"], tiny["batch"], tiny["scored"], tiny["rounds"]) == (10, 10, 100, 9)
    smallest, _ = _sizes(_no_sizes(), "", 20)  # pool 15: batches under 10 sooner than fewer than 5 rounds
    assert (smallest["initial"], smallest["batch"], smallest["rounds"]) == (2, 2, 4)
    # what the user gave is kept; only the others are fitted (the plan check names what does not fit)
    kept, note = _sizes(_no_sizes(batch=100), "", 1461)
    assert (kept["initial"], kept["batch"], kept["rounds"]) == (40, 100, 6) and "with your --batch 100" in note
    assert _sizes(_no_sizes(initial=300, rounds=15, batch=100, scored=1000), "", 1461)[0]["initial"] == 300
    assert _sizes(_no_sizes(), "digits", 1797) == (
        {"initial": 50, "rounds": 15, "batch": 50, "scored": 500, "test_size": 360, "val_size": 180}, None)


def test_a_small_npz_runs_with_no_sizes_given(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "small.npz"
    y = rng.integers(0, 3, 400)
    np.savez(npz, features=(rng.normal(size=(400, 5)) + y[:, None]).astype(np.float32), labels=y)
    out = tmp_path / "run"
    assert main(["simulate", "--dataset", str(npz), "--strategies", "margin,random", "--seeds", "1",
                 "--rounds", "2", "--workers", "1", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategies"]["margin"]["labels"] == [10, 20, 30]
