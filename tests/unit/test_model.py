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


def test_the_model_emits_a_compact_embedding_that_stays_put_across_versions(rng):
    from shared.model.embedding import EMBEDDING_WIDTH, make_projection
    from shared.model.head import HeadWeights

    x = rng.normal(size=(80, 100)).astype(np.float32)
    y = x[:, :3].argmax(axis=1)
    w = train_head(x, y, 3)
    assert w.projection is not None and w.projection.shape == (100, EMBEDDING_WIDTH)
    warm = train_head(x, y, 3, base=HeadWeights.from_bytes(w.to_bytes()))
    assert np.array_equal(warm.projection, w.projection)  # carried forward: old embeddings stay comparable
    session = ort.InferenceSession(to_onnx(warm), providers=["CPUExecutionProvider"])
    proba, emb = session.run(["probabilities", "embedding"], {"features": x})
    np.testing.assert_allclose(emb, x @ w.projection, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(proba, predict_proba(warm, x), atol=1e-5)
    small = make_projection(10)  # fewer features than the width: an exact isometry
    np.testing.assert_allclose(small @ small.T, np.eye(10), atol=1e-5)
    bare = train_head(x, y, 3, embedding_width=None)
    assert bare.projection is None
    assert "embedding" not in {o.name for o in ort.InferenceSession(to_onnx(bare)).get_outputs()}


def test_scoring_logs_the_compact_embedding_by_default(rng):
    from datetime import UTC, datetime

    from shared.core.records import ModelVersion
    from shared.model.embedding import EMBEDDING_WIDTH
    from shared.model.items import Featurizer, encode_png
    from shared.model.registry import OnnxScorer
    from shared.model.scoring import score_items

    images = render_glyphs67(1, seed=3)[0][:6]
    x = extract_features(images)
    w = train_head(x, np.arange(6) % 3, 3)
    scorer = OnnxScorer(to_onnx(w), ("a", "b", "c"))
    records = score_items(scorer, Featurizer(), ModelVersion("m", "1", ("a", "b", "c")), [f"i{i}" for i in range(6)],
                          [""] * 6, [encode_png(im) for im in images], scored_at=datetime.now(UTC))
    emb = np.asarray([r["embedding"] for r in records])
    assert emb.shape == (6, EMBEDDING_WIDTH)
    np.testing.assert_allclose(emb, x @ w.projection, atol=1e-5)
