"""What a person labels with ``al label``: a folder of their images, or the built-in demo set.

Either way every item's bytes go into the object store content-addressed (``items/sha256/<hex><ext>``,
like the collector's inline items), so a restart finds the same items under the same ids, and new
files in the folder join the pool. A folder's sub-folders are never taken as labels: the person
gives them. The demo set (glyphs of a few classes, rendered deterministically) knows its classes,
so part of it is held out, never handed to labeling, to measure each model on.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from shared.errors import ActiveLearningError
from shared.ports import ObjectStore
from shared.services.collect import ITEMS_CONTAINER

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")  # what a browser shows
_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    uri: str  # where the object store keeps its bytes
    truth: str | None = None  # the known class (demo set only)


@dataclass(frozen=True)
class ItemSet:
    """``pool``: what may be handed to labeling; ``held_out``: items of known class, never handed
    out, that each model is measured on (empty: no ground truth, the model's training accuracy is
    shown instead); ``skipped``: files under the folder that are not readable images."""

    source: str
    class_names: tuple[str, ...]
    pool: tuple[Item, ...]
    held_out: tuple[Item, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def truth(self) -> dict[str, str]:
        return {i.item_id: i.truth for i in (*self.pool, *self.held_out) if i.truth is not None}


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,c"`` -> ``("a", "b", "c")``; refuses fewer than two or repeated classes."""
    if text is None:
        return None
    classes = tuple(c.strip() for c in text.split(",") if c.strip())
    if len(classes) < 2:
        raise ActiveLearningError(f"--classes needs at least two comma-separated classes, got {text!r}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ActiveLearningError(f"--classes names {', '.join(repeated)} more than once")
    return classes


def _store(objects: ObjectStore, data: bytes, extension: str) -> tuple[str, str]:
    digest = hashlib.sha256(data).hexdigest()
    return digest, objects.put(ITEMS_CONTAINER, f"sha256/{digest}{extension}", data)


# --- a folder of images -----------------------------------------------------------------------------
def _visible_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        return True
    except Exception:  # PIL raises many types for a broken or foreign file
        return False


def folder_items(objects: ObjectStore, root: Path, classes: Sequence[str] | None = None) -> ItemSet:
    """Every image under ``root`` (any nesting; hidden files and folders left out), identical files
    once. Without ``classes``, ``root`` must hold one sub-folder per class and nothing else: their
    names are the classes (the images are still labeled by the person, not by their folder)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ActiveLearningError(f"--images {root}: no such folder")
    root = root.resolve()
    if classes is None:
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if len(folders) < 2 or loose:
            raise ActiveLearningError(
                f"give the classes to label with --classes a,b,c ({root} does not hold one sub-folder per class"
                f"{': it has images of its own' if loose else ''})")
        classes = folders
    pool: list[Item] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for path in _visible_files(root):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        data = path.read_bytes()
        if not _is_image(data):
            skipped.append(str(path.relative_to(root)))
            continue
        digest, uri = _store(objects, data, path.suffix.lower())
        if digest in seen:
            continue
        seen.add(digest)
        slug = _SLUG.sub("_", path.relative_to(root).with_suffix("").as_posix()).strip("_")[:100]
        pool.append(Item(f"{slug or 'image'}-{digest[:8]}", uri))
    if not pool:
        raise ActiveLearningError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return ItemSet(str(root), tuple(classes), tuple(pool), skipped=tuple(skipped))


# --- the demo set -----------------------------------------------------------------------------------
def demo_classes(n: int) -> tuple[str, ...]:
    """Digits first, 1..9 then 0, so the labeling UI's hotkeys (1..9, 0) match them; then letters."""
    from shared.sim.glyphs import GLYPH_CLASSES

    first = tuple(f"digit_{d}" for d in "1234567890")
    ordered = first + tuple(c for c in GLYPH_CLASSES if c not in first)
    if not 2 <= n <= len(ordered):
        raise ActiveLearningError(f"the demo set has 2 to {len(ordered)} classes, not {n}")
    return ordered[:n]


def demo_items(objects: ObjectStore, *, classes: int = 10, per_class: int = 30, held_out_per_class: int = 10,
               seed: int = 0, size: int = 48) -> ItemSet:
    """Glyph images (``shared/sim/glyphs.py``) of ``classes`` classes: ``per_class`` of each to label,
    ``held_out_per_class`` more to measure the model on. Ids say nothing about the class."""
    from shared.model.items import encode_png
    from shared.sim.glyphs import GLYPH_CLASSES, render_glyphs67

    if per_class < 1 or held_out_per_class < 1:
        raise ActiveLearningError("the demo set needs at least one image per class to label and one held out")
    names = demo_classes(classes)
    images, labels = render_glyphs67(per_class + held_out_per_class, seed=seed, size=size)  # shuffled
    wanted = {GLYPH_CLASSES.index(c): c for c in names}
    count = dict.fromkeys(names, 0)
    pool: list[Item] = []
    held: list[Item] = []
    for image, label in zip(images, labels, strict=True):
        name = wanted.get(int(label))
        if name is None:
            continue
        _, uri = _store(objects, encode_png(image), ".png")
        count[name] += 1
        if count[name] <= per_class:
            pool.append(Item(f"demo-{len(pool):04d}", uri, name))
        else:
            held.append(Item(f"held-{len(held):04d}", uri, name))
    return ItemSet("demo", names, tuple(pool), tuple(held))
