"""The extra data sets of the strategy suite, built from data shipped inside PyPI packages or
rendered by the project (nothing is downloaded at run time), written once as ``.npz`` files that
``al simulate --dataset <file>.npz`` reads like a user's own data.

- ``photos17``: real photographs. 64×64 grey patches cut at random from the 17 photographs bundled
  with scikit-image and scikit-learn; the class is the photograph. Texture and scene statistics,
  no shapes to lean on.
- ``glyphs67_ocr``: pretrained-network features. glyphs67 images (60 per class, another seed)
  through the PP-OCRv4 text recogniser shipped inside the ``rapidocr_onnxruntime`` wheel: the
  sequence features before its CTC classifier, mean-pooled (dense, not unit length). Made once by
  ``python -m bench.suite_data --ocr`` and committed (``bench/sets/glyphs67_ocr.npz``): the wheel is
  only needed to remake it.
- ``blobs10_noisy``: tabular. scikit-learn's ``make_classification``: 10 classes of two clusters
  each in 32 dimensions, 5 % of labels flipped at random (label noise no query can fix).

Three more sets were added after the default (``calibration_switch``) was chosen on the five above,
to check it on data it was not chosen on (docs/label-efficiency.md):

- ``blobs20_clean``: tabular, 20 classes of one cluster each in 32 dimensions, no label noise.
- ``tab5_imbalanced``: tabular, 5 classes of two clusters each in 20 dimensions, class shares
  50/25/12/8/5 %, 1 % of labels flipped.
- ``photos17_ocr``: pretrained-network features of real photographs: photos17 patches (another seed)
  through the same PP-OCRv4 recogniser as ``glyphs67_ocr``; made once, committed
  (``bench/sets/photos17_ocr.npz``).

Three more were defined after the default gained its fit-limited arm (chosen on the tabular sets
above), before any strategy ran on them:

- ``seattle_weather``: real tabular data, the daily Seattle weather 2012–2015 shipped inside the
  ``vega_datasets`` wheel: precipitation, maximum and minimum temperature, wind and the day of the
  year (as sine and cosine), standardised; the class is the recorded weather (sun, fog, rain,
  drizzle, snow: 49/28/18/4/2 % of 1,461 days). Made once by
  ``python -m bench.suite_data --seattle`` and committed
  (``bench/sets/seattle_weather.npz``): the wheel is only needed to remake it.
- ``blobs12_uneven``: tabular, scikit-learn's ``make_blobs``: 12 Gaussian classes in 16 dimensions
  whose spreads range from 1 to 4.
- ``multimodal6``: tabular, ``make_classification``: 6 classes of three clusters each in 24
  dimensions, 3 % of labels flipped.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "sets"
OCR_FILE = DATA / "glyphs67_ocr.npz"
PHOTOS_OCR_FILE = DATA / "photos17_ocr.npz"
SEATTLE_FILE = DATA / "seattle_weather.npz"

_SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "cat", "coffee", "coins", "grass", "gravel",
                   "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text")
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def _grey(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        img = img[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(img, 0, 255).astype(np.uint8)


def photos17(per_class: int = 240, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from skimage import data as skdata
    from sklearn.datasets import load_sample_image

    photos = [(n, _grey(getattr(skdata, n)())) for n in _SKIMAGE_PHOTOS]
    photos += [(n.split(".")[0], _grey(load_sample_image(n))) for n in _SKLEARN_PHOTOS]
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c, (_, img) in enumerate(photos):
        h, w = img.shape
        for _ in range(per_class):
            y, x = int(rng.integers(h - size)), int(rng.integers(w - size))
            images.append(img[y : y + size, x : x + size])
            labels.append(c)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.asarray(labels)[order], [n for n, _ in photos]


def _classification(n: int, seed: int, **shape: object) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``make_classification`` as float32 features and integer classes."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, random_state=seed, **shape)
    return x.astype(np.float32), y


def blobs10_noisy(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return _classification(n, seed, n_features=32, n_informative=16, n_redundant=8, n_classes=10,
                           n_clusters_per_class=2, flip_y=0.05, class_sep=1.5)


def blobs20_clean(n: int = 4000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    return _classification(n, seed, n_features=32, n_informative=20, n_redundant=4, n_classes=20,
                           n_clusters_per_class=1, flip_y=0.0, class_sep=1.0)


def tab5_imbalanced(n: int = 4000, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    return _classification(n, seed, n_features=20, n_informative=10, n_redundant=4, n_classes=5,
                           n_clusters_per_class=2, weights=[0.5, 0.25, 0.12, 0.08, 0.05], flip_y=0.01,
                           class_sep=1.0)


def seattle_weather(csv_text: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and weather labels from vega_datasets' ``seattle-weather.csv`` (date, precipitation,
    temp_max, temp_min, wind, weather)."""
    import csv
    import io
    from datetime import date

    rows = list(csv.DictReader(io.StringIO(csv_text)))
    if not rows:
        raise ValueError("seattle-weather.csv holds no rows")
    day = np.array([date.fromisoformat(r["date"].replace("/", "-")).timetuple().tm_yday for r in rows], dtype=float)
    angle = 2 * np.pi * day / 365.25
    x = np.column_stack([[float(r[c]) for r in rows] for c in ("precipitation", "temp_max", "temp_min", "wind")]
                        + [np.sin(angle), np.cos(angle)])
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype(np.float32), np.asarray([r["weather"] for r in rows])


def blobs12_uneven(n: int = 4000, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=n, n_features=16, centers=12, cluster_std=np.linspace(1.0, 4.0, 12),
                      random_state=seed)
    return x.astype(np.float32), y


def multimodal6(n: int = 4000, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    return _classification(n, seed, n_features=24, n_informative=12, n_redundant=4, n_classes=6,
                           n_clusters_per_class=3, flip_y=0.03, class_sep=2.0)


def ocr_features(images: np.ndarray, batch: int = 256) -> np.ndarray:
    """PP-OCRv4 recogniser features: 48×48 dark-on-light input, the (time, channels) sequence
    before the CTC classifier, mean over time."""
    import onnx
    import onnxruntime as ort

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps rapidocr_onnxruntime (only to remake the .npz)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info("transpose_51.tmp_0", onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    from skimage.transform import resize

    out = []
    for i in range(0, len(images), batch):
        chunk = np.stack([resize(255 - im, (48, 48), preserve_range=True) for im in images[i : i + batch]])
        x = ((chunk / 255.0 - 0.5) / 0.5).astype(np.float32)
        x = np.repeat(x[:, None], 3, axis=1)
        feats = session.run(["transpose_51.tmp_0"], {"x": x})[0]
        out.append(feats.mean(axis=1))
    return np.concatenate(out).astype(np.float32)


def build(out: Path, *, ocr: bool = False, seattle: bool = False) -> dict[str, Path]:
    """Write the extra sets into ``out`` (the committed files are used as they are, or remade with
    ``ocr`` / ``seattle``); return {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    p = out / "photos17.npz"
    if not p.exists():
        images, labels, names = photos17()
        np.savez_compressed(p, images=images, labels=np.asarray(names)[labels])
    paths["photos17"] = p
    if ocr or not OCR_FILE.exists():
        from shared.sim.glyphs import GLYPH_CLASSES, render_glyphs67

        images, labels = render_glyphs67(60, seed=1)
        DATA.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(OCR_FILE, features=ocr_features(images).astype(np.float16),
                            labels=np.asarray(GLYPH_CLASSES)[labels])
    paths["glyphs67_ocr"] = OCR_FILE
    if ocr or not PHOTOS_OCR_FILE.exists():
        images, labels, names = photos17(seed=1)
        DATA.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(PHOTOS_OCR_FILE, features=ocr_features(images).astype(np.float16),
                            labels=np.asarray(names)[labels])
    paths["photos17_ocr"] = PHOTOS_OCR_FILE
    if seattle or not SEATTLE_FILE.exists():
        from importlib.resources import files

        text = files("vega_datasets").joinpath("_data/seattle-weather.csv").read_text(encoding="utf-8")
        x, labels = seattle_weather(text)
        DATA.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(SEATTLE_FILE, features=x, labels=labels)
    paths["seattle_weather"] = SEATTLE_FILE
    tabular = (("blobs10_noisy", blobs10_noisy), ("blobs20_clean", blobs20_clean),
               ("tab5_imbalanced", tab5_imbalanced), ("blobs12_uneven", blobs12_uneven), ("multimodal6", multimodal6))
    for name, make in tabular:
        p = out / f"{name}.npz"
        if not p.exists():
            x, y = make()
            np.savez_compressed(p, features=x, labels=np.asarray([f"class_{v}" for v in y]))
        paths[name] = p
    return paths


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m bench.suite_data", description=__doc__.split("\n")[0])
    ap.add_argument("--ocr", action="store_true", help="remake bench/sets/glyphs67_ocr.npz from the ONNX model")
    ap.add_argument("--seattle", action="store_true",
                    help="remake bench/sets/seattle_weather.npz from the vega_datasets wheel")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/data"))
    args = ap.parse_args()
    for name, path in build(args.out, ocr=args.ocr, seattle=args.seattle).items():
        print(name, path)
