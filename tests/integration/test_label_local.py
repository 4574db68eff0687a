"""`al label`'s session end to end on the real Label Studio 1.23.2 (from .venv-label-studio): the loop
function runs in a thread on a small demo set, and the test acts as the person through Label Studio's
REST API, answering from the demo's ground truth. It checks the random first batch (no predictions),
that each task's image resolves through Label Studio's local-files route, the retrain after 8 labels
and the second batch carrying the model's guesses, a second retrain, that everything stops, and that
a restart on the same data dir resumes the same project without handing anything off twice.

Label Studio's data dir is prepared from the test support's migrated template database (made by one
cold start per machine, ~40 s) with the credentials it was made with, so the product's runner starts
it in a few seconds: the runner takes whatever credentials it finds beside the database."""

from __future__ import annotations

import io
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from rich.console import Console

from shared.adapters.duckdb_store import DuckDBStore
from shared.errors import ActiveLearningError
from shared.local.loop import LoopOptions
from shared.local.session import DemoSize, LabelConfig, Ready, label
from shared.local.studio import DB_FILE, PID_FILE, Credentials, port_problem
from tests.support import label_studio as support

pytestmark = pytest.mark.slow

CLASSES, PER_CLASS, HELD_OUT = 4, 12, 4
BATCH = RETRAIN_EVERY = 8
PNG = b"\x89PNG\r\n\x1a\n"


def _prepare_label_studio(folder: Path) -> None:
    """A migrated database and its credentials where the product's runner looks for them."""
    maker = support.LabelStudioServer(folder.parent / "template-maker", template_dir=support.TEMPLATE_DIR)
    template = maker._template_db()  # the support runner's key: Label Studio's version + these credentials
    assert template is not None
    if not template.exists():  # the first run on this machine pays for the migrations once
        maker.start()
        maker.stop()
    folder.mkdir(parents=True)
    shutil.copy2(template, folder / DB_FILE)
    Credentials(support.USERNAME, support.PASSWORD, support.TOKEN, support.SECRET_KEY).save(folder)


def _wait_for(what: str, probe: Any, timeout: float, failed: Any = lambda: None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if failed():
            raise AssertionError(f"{what}: the loop ended first: {failed()!r}")
        got = probe()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _label(http: requests.Session, url: str, task: dict[str, Any], choice: str) -> None:
    r = http.post(f"{url}/api/tasks/{task['id']}/annotations/", timeout=10, json={"result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]})
    assert r.status_code == 201, r.text


def test_a_person_labels_the_demo_set_and_the_model_retrains_then_a_restart_resumes(tmp_path):
    t0 = time.monotonic()
    data_dir = tmp_path / "label"
    _prepare_label_studio(data_dir / "label-studio")
    port = support.free_port()
    config = LabelConfig(data_dir=data_dir, port=port, open_browser=False,
                         loop=LoopOptions(batch=BATCH, retrain_every=RETRAIN_EVERY, poll_seconds=0.5, max_rounds=2),
                         demo=DemoSize(classes=CLASSES, per_class=PER_CLASS, held_out_per_class=HELD_OUT))
    out = io.StringIO()
    stop = threading.Event()
    ready: list[Ready] = []
    ended: dict[str, Any] = {}

    def run() -> None:
        try:
            ended["rounds"] = label(config, Console(file=out, width=200), stop=stop, on_ready=ready.append)
        except BaseException as exc:
            ended["error"] = exc

    thread = threading.Thread(target=run, name="al-label", daemon=True)
    thread.start()
    try:
        r = _wait_for("Label Studio up with the project", lambda: ready, 150, lambda: ended.get("error"))[0]
        started = time.monotonic() - t0
        assert (r.username, r.token) == (support.USERNAME, support.TOKEN)
        assert r.items.class_names == ("digit_1", "digit_2", "digit_3", "digit_4")
        assert len(r.items.pool) == CLASSES * PER_CLASS and len(r.items.held_out) == CLASSES * HELD_OUT
        truth = r.items.truth
        http = requests.Session()
        http.trust_env = False
        http.headers["Authorization"] = f"Token {r.token}"

        def tasks() -> list[dict[str, Any]]:
            doc = http.get(f"{r.url}/api/tasks/", timeout=10,
                           params={"project": r.project_id, "page_size": 100, "fields": "all"}).json()
            return sorted(doc["tasks"], key=lambda t: t["id"])

        # --- round 0: a random batch, no predictions; the images come through Label Studio ------
        first = _wait_for("the first batch", lambda: (ts := tasks()) and len(ts) >= BATCH and ts, 30)
        assert len(first) == BATCH
        assert all(not t["predictions"] for t in first)
        for t in first:
            assert t["data"]["image"].startswith("/data/local-files/?d=labeling-input/")
            img = http.get(f"{r.url}{t['data']['image']}", timeout=10)
            assert img.status_code == 200 and img.content.startswith(PNG), (t["data"]["image"], img.status_code)
            assert img.headers["Content-Type"] == "image/png"
        for t in first:
            _label(http, r.url, t, truth[t["data"]["item_id"]])

        # --- round 1: a model from the 8 labels, then a batch picked by it, with its guesses ---------
        both = _wait_for("the second batch", lambda: (ts := tasks()) and len(ts) >= 2 * BATCH and ts, 60,
                         lambda: ended.get("error"))
        second = [t for t in both if t["id"] not in {f["id"] for f in first}]
        assert len(second) == BATCH
        assert not {t["data"]["item_id"] for t in second} & {t["data"]["item_id"] for t in first}
        for t in second:
            (pred,) = t["predictions"]
            assert pred["model_version"] == "1"
            assert 0 < pred["score"] <= 1
            assert pred["result"][0]["value"]["choices"][0] in r.items.class_names
        project = http.get(f"{r.url}/api/projects/{r.project_id}/", timeout=10).json()
        assert project["model_version"] == "1"
        assert project["sampling"] == "Uncertainty sampling"
        for t in second:
            _label(http, r.url, t, truth[t["data"]["item_id"]])

        # --- round 2, then the loop stops (max_rounds) and Label Studio with it -------------------
        thread.join(60)
        assert not thread.is_alive(), "the loop did not stop after two retrains"
    finally:
        stop.set()
        thread.join(60)
    assert "error" not in ended, ended.get("error")
    rounds = ended["rounds"]
    assert [(x.version, x.labels, x.measured_on) for x in rounds] == [("1", 8, "held-out"), ("2", 16, "held-out")]
    assert rounds[0].deployed and rounds[0].handed_off == BATCH and rounds[0].strategy == "calibration_switch"
    assert all(x.accuracy is not None and 0 <= x.accuracy <= 1 for x in rounds)
    text = out.getvalue()
    assert "v1: trained on 8 labels, held-out accuracy" in text and "v2: trained on 16 labels" in text
    assert f"log in at  {r.url}/user/login/?next=" in text and support.PASSWORD in text
    assert port_problem(port) is None, "Label Studio still listens"
    assert not (data_dir / "label-studio" / PID_FILE).exists()
    first_run = time.monotonic() - t0

    # --- a restart on the same data dir: same project, nothing handed off twice ----------------------
    t1 = time.monotonic()
    again: list[Ready] = []
    out2 = io.StringIO()
    assert label(LabelConfig(data_dir=data_dir, port=port, open_browser=False, demo=config.demo,
                             loop=LoopOptions(batch=BATCH, retrain_every=RETRAIN_EVERY, once=True)),
                 Console(file=out2, width=200), on_ready=again.append) == []
    restart = time.monotonic() - t1
    assert again[0].project_id == r.project_id
    assert "new tasks" not in out2.getvalue()
    store = DuckDBStore(data_dir / "loop.duckdb")
    try:
        assert store.count_labels() == 2 * BATCH
        assert store.awaiting_labels() == BATCH  # round 2's batch, still open
        assert store.serving_version("classifier").version == "2"
    finally:
        store.close()
    assert port_problem(port) is None
    print(f"Label Studio up in {started:.1f}s; first run {first_run:.1f}s; restart (--once) {restart:.1f}s")


def _photo(path: Path, rgb: tuple[int, int, int], size: tuple[int, int], fmt: str) -> None:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(abs(hash(path.name)) % 2**32).integers(-30, 30, (size[1], size[0], 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.asarray(rgb) + noise, 0, 255).astype("uint8")).save(path, fmt)


def _colour_of(png_or_jpeg: bytes) -> str:
    import numpy as np
    from PIL import Image

    mean = np.asarray(Image.open(io.BytesIO(png_or_jpeg)).convert("RGB"), dtype=float).mean(axis=(0, 1))
    return "red" if mean[0] > mean[2] else "blue"


def test_a_folder_of_the_persons_own_images(tmp_path):
    """Nested images of two sizes and formats, classes given; the person decides by looking at each
    image as Label Studio serves it. Without ground truth the model is measured on its labels."""
    from shared.adapters.local_objects import LocalFolderObjectStore
    from shared.local.items import folder_items

    photos = tmp_path / "photos"
    for i in range(8):
        colour = (200, 40, 40) if i % 2 else (40, 40, 200)
        _photo(photos / f"trip-{i // 4}" / f"img {i}.png", colour, (64, 48), "PNG")
        _photo(photos / "phone" / "deep" / f"shot{i}.jpg", colour, (40, 40), "JPEG")
    (photos / "broken.png").write_bytes(b"not an image")
    (photos / "notes.txt").write_text("not an image either")
    (photos / ".thumbs" / "x.png").parent.mkdir()
    shutil.copy(photos / "trip-0" / "img 0.png", photos / ".thumbs" / "x.png")  # hidden: left out
    shutil.copy(photos / "trip-0" / "img 0.png", photos / "copy of img 0.png")  # the same bytes: once

    # Without --classes a folder must hold one sub-folder per class (their names, not labels); this one does not.
    scratch = LocalFolderObjectStore(tmp_path / "scratch")
    with pytest.raises(ActiveLearningError, match="--classes"):
        folder_items(scratch, photos)
    _photo(tmp_path / "pets" / "cat" / "a.png", (90, 90, 90), (20, 20), "PNG")
    _photo(tmp_path / "pets" / "dog" / "2023" / "b.jpg", (10, 90, 90), (30, 20), "JPEG")
    pets = folder_items(scratch, tmp_path / "pets")
    assert pets.class_names == ("cat", "dog") and not pets.held_out
    assert [i.truth for i in pets.pool] == [None, None] and pets.pool[1].item_id.startswith("dog_2023_b-")

    data_dir = tmp_path / "label"
    _prepare_label_studio(data_dir / "label-studio")
    port = support.free_port()
    config = LabelConfig(images=photos, classes=("red", "blue"), data_dir=data_dir, port=port, open_browser=False,
                         loop=LoopOptions(batch=4, retrain_every=4, poll_seconds=0.5, max_rounds=1, strategy="margin"))
    ready: list[Ready] = []
    ended: dict[str, Any] = {}

    def run() -> None:
        try:
            ended["rounds"] = label(config, Console(file=io.StringIO(), width=200), on_ready=ready.append)
        except BaseException as exc:
            ended["error"] = exc

    thread = threading.Thread(target=run, name="al-label-folder", daemon=True)
    thread.start()
    try:
        r = _wait_for("Label Studio up with the project", lambda: ready, 150, lambda: ended.get("error"))[0]
        assert r.items.class_names == ("red", "blue") and not r.items.held_out
        assert len(r.items.pool) == 16 and r.items.skipped == ("broken.png",)
        http = requests.Session()
        http.trust_env = False
        http.headers["Authorization"] = f"Token {r.token}"
        tasks = _wait_for("the first batch", lambda: http.get(f"{r.url}/api/tasks/", timeout=10, params={
            "project": r.project_id, "page_size": 100}).json()["tasks"], 30, lambda: ended.get("error"))
        assert len(tasks) == 4
        for t in tasks:
            img = http.get(f"{r.url}{t['data']['image']}", timeout=10)
            assert img.status_code == 200
            _label(http, r.url, t, _colour_of(img.content))
        thread.join(60)
        assert not thread.is_alive()
    finally:
        thread.join(60)
    assert "error" not in ended, ended.get("error")
    (done,) = ended["rounds"]
    assert (done.version, done.labels, done.measured_on, done.deployed) == ("1", 4, "training", True)
    assert done.handed_off == 4 and done.strategy == "margin" and done.accuracy == 1.0
    store = DuckDBStore(data_dir / "loop.duckdb")
    try:
        assert store.awaiting_labels() == 4
    finally:
        store.close()
    assert port_problem(port) is None
