"""One ``al label`` session: the items, Label Studio, its project and the loop, all under one data dir.

``<data dir>/loop.duckdb`` and ``<data dir>/blobs/`` are the embedded backend's (``AL_DATA_DIR``);
``<data dir>/label-studio/`` is Label Studio's (database, log, credentials); ``label-session.json``
remembers the project and the classes, so a restart resumes the same project and a restart with
other classes is refused rather than mixing two label sets.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import requests

from shared.adapters.label_studio import LabelStudioClient, LabelStudioError
from shared.adapters.local_objects import LocalFolderObjectStore
from shared.backends import Backend
from shared.errors import ActiveLearningError, UnavailableError
from shared.local.items import ItemSet, demo_items, folder_items
from shared.local.loop import LabelLoop, LoopOptions, Round, Status
from shared.local.studio import VENV, LocalLabelStudio
from shared.settings import load_settings

if TYPE_CHECKING:
    from rich.console import Console

SESSION_FILE = "label-session.json"


@dataclass(frozen=True, slots=True)
class DemoSize:
    classes: int = 10
    per_class: int = 30
    held_out_per_class: int = 10


@dataclass(frozen=True)
class LabelConfig:
    images: Path | None = None  # None: the demo set
    classes: tuple[str, ...] | None = None
    data_dir: Path = Path("data/label")
    port: int = 8080
    open_browser: bool = True
    loop: LoopOptions = field(default_factory=LoopOptions)
    demo: DemoSize = field(default_factory=DemoSize)
    venv: Path = VENV
    start_timeout: float = 180.0


@dataclass(frozen=True)
class Ready:
    """What a person (or a test acting as one) needs once Label Studio and the project are up."""

    url: str
    login_url: str
    username: str
    password: str
    token: str
    project_id: int
    items: ItemSet


def _load_items(config: LabelConfig, ports: Backend) -> ItemSet:
    if config.images is None:
        if config.classes:
            raise ActiveLearningError("--classes goes with --images (the demo set has its own classes)")
        d = config.demo
        return demo_items(ports.objects, classes=d.classes, per_class=d.per_class,
                          held_out_per_class=d.held_out_per_class)
    return folder_items(ports.objects, config.images, config.classes)


def _remembered_project(data_dir: Path, items: ItemSet) -> int | None:
    path = data_dir / SESSION_FILE
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    if tuple(doc.get("classes") or ()) != items.class_names:
        had = ", ".join(doc.get("classes") or [])
        raise ActiveLearningError(
            f"{data_dir} holds the labels of {doc.get('source')!r} for the classes {had}; run with the same "
            "--images/--classes to go on, or give another --data-dir")
    pid = doc.get("project_id")
    return int(pid) if isinstance(pid, int) else None


def _remember(data_dir: Path, items: ItemSet, project_id: int) -> None:
    doc = {"source": items.source, "classes": list(items.class_names), "project_id": project_id}
    (data_dir / SESSION_FILE).write_text(json.dumps(doc, indent=1))


def _root(ports: Backend) -> Path:
    """The embedded object store's folder: Label Studio's LOCAL_FILES_DOCUMENT_ROOT."""
    objects = ports.objects
    assert isinstance(objects, LocalFolderObjectStore), "al label runs on the embedded backend"
    return objects.root


def _can_open_browser() -> bool:
    """Only where a graphical browser can show up: on a bare Linux console ``webbrowser`` would run a
    text browser in this very terminal."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _status_text(s: Status) -> str:
    model = "no model yet" if s.serving is None else (
        f"model v{s.serving}" + (f" {s.accuracy:.0%} {s.measured_on}" if s.accuracy is not None else ""))
    return f"{s.labels} labels · next model in {s.until_retrain} · {model} · {s.open_tasks} open · Ctrl-C stops"


def label(config: LabelConfig, console: Console, *, stop: threading.Event | None = None,
          on_ready: Callable[[Ready], None] | None = None) -> list[Round]:
    """Run the session until the loop ends (``max_rounds``, ``once``, ``stop``) or Ctrl-C; Label Studio
    is stopped either way, and the data dir keeps everything for the next run. The retrains done."""
    from shared.core.strategies import check_strategy

    check_strategy(config.loop.strategy)
    data_dir = config.data_dir.expanduser().resolve()
    settings = load_settings(backend="embedded", data_dir=data_dir, strategy=config.loop.strategy,
                             batch_size=config.loop.batch, retrain_threshold=config.loop.retrain_every)
    ports = Backend(settings)
    rounds: list[Round] = []
    try:
        studio = LocalLabelStudio(data_dir / "label-studio", port=config.port, document_root=_root(ports),
                                  venv=config.venv, start_timeout=config.start_timeout)
        studio.check_can_start()  # before the images are read: a busy port is said at once
        with console.status("reading the images…" if config.images else "rendering the demo images…"):
            items = _load_items(config, ports)
        project_id = _remembered_project(data_dir, items)
        what = "first start: Label Studio migrates its new database, 30-40 s" if studio.first_start else "4-5 s"
        with console.status(f"starting Label Studio ({what})…") as spinner:
            studio.start(lambda s: spinner.update(f"starting Label Studio ({what})… {s:.0f} s"))
        try:
            rounds = _serve(config, console, ports, items, studio, project_id, stop, on_ready)
        except UnavailableError as exc:
            if studio.running:
                raise
            raise ActiveLearningError(f"Label Studio stopped unexpectedly; its log {studio.log_path} ends:\n"
                                      f"{studio.log_tail()}") from exc
        finally:
            with console.status("stopping Label Studio…"):
                studio.stop()
    except KeyboardInterrupt:
        console.print(f"stopped. Everything is kept in {config.data_dir}: run the same command again to go on.",
                      markup=False, highlight=False)
    finally:
        close = getattr(ports.store, "close", None)
        if close is not None:
            close()
    return rounds


def _serve(config: LabelConfig, console: Console, ports: Backend, items: ItemSet, studio: LocalLabelStudio,
           project_id: int | None, stop: threading.Event | None, on_ready: Callable[[Ready], None] | None,
           ) -> list[Round]:
    def say(text: str) -> None:  # plain text (no markup from names or passwords), URLs never broken
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    http = requests.Session()
    http.trust_env = False
    creds = studio.credentials
    client = LabelStudioClient(studio.url, creds.token, session=http)
    try:
        client.request("GET", "/api/current-user/whoami")
    except LabelStudioError as exc:
        raise ActiveLearningError(
            f"Label Studio under {studio.data_dir} does not know this session's user ({exc.status}): its "
            f"credentials.json was lost; delete {studio.data_dir} to start Label Studio over") from exc
    labeling = _root(ports) / ports.settings.labeling_container
    labeling.mkdir(parents=True, exist_ok=True)  # Label Studio checks the folder when the storage is saved
    name = "demo" if items.source == "demo" else Path(items.source).name
    setup = client.ensure_project(
        title=f"al label: {name}", class_names=items.class_names, project_id=project_id,
        description=f"Label the images; the model retrains every {config.loop.retrain_every} labels and the next "
                    "tasks carry its guesses.",
        storage={"type": "localfiles", "title": "labeling items", "path": str(labeling), "use_blob_urls": True,
                 "regex_filter": ""})
    data_dir = ports.settings.data_dir
    _remember(data_dir, items, setup.project_id)
    page = f"/projects/{setup.project_id}/data?labeling=1"
    login = f"{studio.url}/user/login/?next={quote(page, safe='')}"
    say(f"Label Studio {client.version()} on {studio.url} (data in {config.data_dir})\n"
        f"  log in at  {login}\n  user       {creds.username}\n  password   {creds.password}")
    if items.held_out:
        say(f"demo set: {len(items.pool)} glyph images of {len(items.class_names)} classes to label, "
            f"{len(items.held_out)} more held out to measure each model")
    else:
        skipped = f"; {len(items.skipped)} unreadable files left out" if items.skipped else ""
        say(f"{len(items.pool)} images from {items.source}, classes {', '.join(items.class_names)}{skipped}")
    o = config.loop
    say(f"the model retrains every {o.retrain_every} labels; each hand-off is {o.batch} images "
        f"(the first ones random, then picked by {o.strategy}). Ctrl-C stops; the data dir keeps it all.")
    loop = LabelLoop(ports, items, client, setup.project_id, o, say=say)
    if config.open_browser and _can_open_browser():
        webbrowser.open(login)
    with console.status(_status_text(loop.status())) as spinner:
        loop.show = lambda s: spinner.update(_status_text(s))
        if on_ready is not None:
            on_ready(Ready(studio.url, login, creds.username, creds.password, creds.token, setup.project_id, items))
        return loop.run(stop)
