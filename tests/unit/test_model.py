import numpy as np
import onnxruntime as ort
import pytest

from shared.errors import DatasetError
from shared.model.features import extract_features
from shared.model.head import predict_proba, to_onnx, train_head
from shared.sim.datasets import load_dataset
from shared.sim.glyphs import GLYPH_CLASSES, render_glyphs67


def test_onnx_matches_numpy_and_covers_unseen_classes(rng):
    x = rng.normal(size=(120, 16)).astype(np.float32)
    y = x[:, :4].argmax(axis=1)  # classes 4 and 5 never labeled
    w = train_head(x, y, 6)
    warm = train_head(x, y, 6, base=w)
    session = ort.InferenceSession(to_onnx(warm), providers=["CPUExecutionProvider"])
    onnx_p = session.run(["probabilities"], {"features": x})[0]
    np.testing.assert_allclose(onnx_p, predict_proba(warm, x), atol=1e-5)
    assert onnx_p.shape == (120, 6) and onnx_p[:, 4:].max() < 1e-9
    assert (onnx_p.argmax(1) == y).mean() > 0.5


def test_binary_heads_export_too(rng):
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    w = train_head(x, y, 2)
    session = ort.InferenceSession(to_onnx(w), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["probabilities"], {"features": x})[0], predict_proba(w, x), atol=1e-5)


def test_features_are_deterministic_and_size_independent():
    imgs = render_glyphs67(2, seed=1)[0]
    a, b = extract_features(imgs), extract_features(imgs.copy())
    assert a.dtype == np.float32 and np.array_equal(a, b)
    big = np.repeat(np.repeat(imgs, 3, axis=1), 3, axis=2)
    assert extract_features(big).shape == a.shape
    with pytest.raises(ValueError):
        extract_features(imgs.astype(np.float32))


def test_glyphs67_is_deterministic_per_seed():
    a, la = render_glyphs67(3, seed=5)
    b, lb = render_glyphs67(3, seed=5)
    c, _ = render_glyphs67(3, seed=6)
    assert len(GLYPH_CLASSES) == 67 and len({g.lower() for g in GLYPH_CLASSES}) == 67
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert a.shape == (201, 32, 32) and sorted(set(la.tolist())) == list(range(67))


def test_user_npz_with_features(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, features=np.eye(4), labels=np.array(["a", "b", "a", "b"]))
    d = load_dataset(str(path))
    assert d.class_names == ("a", "b") and d.items.dtype == np.float32 and not d.is_images
    np.savez(path, images=np.zeros((4, 8, 8), np.float32), labels=np.arange(4))
    with pytest.raises(DatasetError, match="uint8"):
        load_dataset(str(path))
