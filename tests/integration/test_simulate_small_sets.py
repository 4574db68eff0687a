"""`al simulate` on a newcomer's own small folder, through the CLI entry point: the defaults fit the set
(one line says how), a file that is not a readable image is skipped with one warning, and every error is
one line, said once, `al: error: <what is wrong> (<what to do>)`, exit code 2."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from shared.cli import main

ERROR = re.compile(r"^al: error: [^\n]+ \([^\n]+\)$")


def photos(root, classes=4, per_class=50, side=12):
    """A folder of one sub-folder per class of small JPEGs: noise with a bar whose place is the class."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = rng.normal(100, 50, (side, side, 3))
            at = c * side // classes
            if c % 2:
                image[at : at + side // 4] += 70
            else:
                image[:, at : at + side // 4] += 70
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"img{i:03d}.jpg")
    return root


def one_error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ERROR.match(lines[0]), err
    assert "0x" not in err and "Traceback" not in err
    return lines[0]


@pytest.mark.slow
def test_a_folder_of_4_x_50_images_runs_with_no_options(tmp_path, capsys, monkeypatch):
    folder = photos(tmp_path / "myphotos")
    monkeypatch.chdir(tmp_path)  # the report goes to the default runs/latest, here
    assert main(["simulate", "--dataset", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    notes = [line for line in out.splitlines() if line.startswith("sizes fitted")]
    assert len(notes) == 1, out
    assert "150 items to label (after 30 test and 20 validation)" in notes[0]
    assert "--initial 10 --rounds 9 --batch 10 --scored 100, which label 100" in notes[0]
    assert "myphotos: 200 items, 4 classes; 10 initial labels, 9 rounds of 10" in out
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert set(summary["strategies"]) == {"calibration_switch", "least_confidence", "margin", "entropy", "random"}
    for s in summary["strategies"].values():
        assert s["labels"] == list(range(10, 101, 10))
        assert len(s["accuracy"]["per_seed"]) == 3


def test_sizes_given_are_kept_and_the_rest_fitted(tmp_path, capsys):
    folder = photos(tmp_path / "myphotos")
    out_dir = tmp_path / "run"
    assert main(["simulate", "--dataset", str(folder), "--batch", "20", "--seeds", "1",
                 "--strategies", "random,margin", "--out", str(out_dir), "--quiet"]) == 0
    out, _ = capsys.readouterr()
    (note,) = [line for line in out.splitlines() if line.startswith("sizes fitted")]
    assert "--initial 10 --rounds 4 --scored 150 with your --batch 20, which label 90" in note
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["strategies"]["random"]["labels"] == [10, 30, 50, 70, 90]


def test_a_folder_with_one_class_is_one_error_said_once(tmp_path, capsys):
    folder = photos(tmp_path / "one", classes=1, per_class=3)
    line = one_error_line(capsys, ["simulate", "--dataset", str(folder), "--out", str(tmp_path / "run")])
    assert line == (f"al: error: {folder} has 1 class sub-folder; at least two are needed (put each class's "
                    f"images in its own sub-folder, e.g. {folder / 'cats'} and {folder / 'dogs'})")
    flat = tmp_path / "flat"  # images straight in the folder: the newcomer's first try
    flat.mkdir()
    for f in (folder / "class0").iterdir():
        f.rename(flat / f.name)
    line = one_error_line(capsys, ["simulate", "--dataset", str(flat), "--out", str(tmp_path / "run")])
    assert f"{flat} holds 3 images but no class sub-folders; at least two are needed" in line


def test_an_unreadable_file_is_skipped_with_one_warning_and_counted(tmp_path, capsys):
    folder = photos(tmp_path / "myphotos", classes=2, per_class=10)
    (folder / "class0" / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "class1" / "notes.txt").write_text("taken in May")
    (folder / "class1" / ".DS_Store").write_bytes(b"\0\0")  # hidden files are not the user's items
    truncated = (folder / "class1" / "img000.jpg").read_bytes()[:-40]
    (folder / "class1" / "cut.jpg").write_bytes(truncated)
    assert main(["simulate", "--dataset", str(folder), "--seeds", "1", "--strategies", "random,margin",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    warnings = err.splitlines()
    assert warnings[0] == f"al: warning: skipped {folder / 'class0' / 'broken.jpg'}: not an image Pillow can read"
    assert warnings[1].startswith(f"al: warning: skipped {folder / 'class1' / 'cut.jpg'}: unreadable image: "
                                  "image file is truncated")
    assert warnings[2] == f"al: warning: skipped {folder / 'class1' / 'notes.txt'}: not an image file (.txt)"
    assert len(warnings) == 3 and "0x" not in err and "BytesIO" not in err
    assert "myphotos: 20 items, 2 classes, 3 files skipped; 2 initial labels" in out


def test_a_class_left_with_too_few_images_fails_naming_it(tmp_path, capsys):
    folder = photos(tmp_path / "myphotos", classes=2, per_class=1)
    (folder / "class1" / "broken.jpg").write_bytes(b"not a jpeg")
    line = one_error_line(capsys, ["simulate", "--dataset", str(folder), "--out", str(tmp_path / "run")])
    assert line.startswith(f"al: error: class folder {folder / 'class0'} has 1 readable image; each class needs "
                           "at least 2 (add images to it")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--initial", "10", "--rounds", "20", "--batch", "10"],
         "10 initial + 20 rounds x 10 = 210 labels, more than the pool of 150 items left after 30 test and 20 "
         "validation (give --rounds 14 or less, or --batch 7 or less)"),
        (["--rounds", "200"],
         "2 initial + 200 rounds x 2 = 402 labels, more than the pool of 150 items left after 30 test and 20 "
         "validation (give --rounds 74 or less)"),
        (["--test-size", "150", "--val-size", "50"],
         "--test-size 150 and --val-size 50 leave none of the 200 items to label (lower --test-size or --val-size)"),
        (["--initial", "1"], "--initial 1 is too few to train a first model (give --initial 2 or more)"),
        (["--batch", "30", "--scored", "20"],
         "a batch of 30 is larger than the 20 items scored per round (give --batch 20 or less, or --scored 30 or "
         "more)"),
        (["--rounds", "0"], "--rounds is 0 (give --rounds 1 or more)"),
        (["--seeds", "0"], "--seeds is 0 (give --seeds 1 or more)"),
        (["--strategies", "margin,clairvoyant"], "unknown strategy 'clairvoyant' in --strategies (choose from "),
        (["--seeds", "x"], "argument --seeds: invalid int value: 'x' (see al simulate --help)"),
    ],
)
def test_an_impossible_plan_is_one_line_naming_the_option(tmp_path, capsys, argv, expected):
    folder = photos(tmp_path / "myphotos")
    argv = ["simulate", "--dataset", str(folder), "--out", str(tmp_path / "run"), *argv]
    if "x" in argv:  # a usage error: argparse exits
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.splitlines() == [f"al: error: {expected}"]
        return
    line = one_error_line(capsys, argv)
    assert line.startswith(f"al: error: {expected}"), line
    assert not (tmp_path / "run" / "work").exists()  # refused before the set was prepared


@pytest.mark.parametrize("argv", [["--help"], ["simulate", "--help"], ["label", "--help"]])
def test_help_is_plain_words(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: al" in out and "`" not in out and ":class:" not in out
    if argv == ["simulate", "--help"]:
        from shared.cli import _parser

        (subcommands,) = [a for a in _parser()._actions if a.dest == "command"]
        options = [a for a in subcommands.choices["simulate"]._actions if a.option_strings]
        assert {o.option_strings[0] for o in options if not o.help} == set()
        assert "labels picked per round (default 100, 50 on digits, fewer on a small set)" in " ".join(out.split())
