import numpy as np

from bench.suite import figures, paired_aulc
from bench.suite_data import OCR_FILE, SEATTLE_FILE, blobs10_noisy, blobs12_uneven, multimodal6, seattle_weather
from shared.sim.datasets import load_dataset
from shared.sim.report import Curve


def test_suite_figures_are_points_against_random():
    labels = [100, 200, 300, 400, 500]
    random = Curve("random", labels, np.array([[0.5, 0.6, 0.7, 0.75, 0.8]]))
    better = Curve("s", labels, np.array([[0.5, 0.65, 0.8, 0.80, 0.82]]))
    f = figures(better, random)
    assert f["labels_to_random_final"] == 300
    assert np.isclose(f["gain"], (5 + 10 + 5 + 2) / 4)
    assert np.isclose(f["min_gap_from_round3"], 2.0) and f["min_gap_any_round"] == 0.0
    assert np.isclose(f["aulc"], 100 * better.aulc(), atol=0.01)


def test_suite_sets_ship_or_render_offline():
    x, y = blobs10_noisy(n=200)
    assert x.shape == (200, 32) and len(set(y.tolist())) == 10
    d = load_dataset(str(OCR_FILE))  # the committed pretrained-network features
    assert len(d.class_names) == 67 and d.items.shape == (4020, 120) and not d.is_images
    w = load_dataset(str(SEATTLE_FILE))  # the committed real tabular set
    assert w.class_names == ("drizzle", "fog", "rain", "snow", "sun") and w.items.shape == (1461, 6)
    for make, classes, dim in ((blobs12_uneven, 12, 16), (multimodal6, 6, 24)):
        x, y = make(n=240)
        assert x.shape == (240, dim) and len(set(y.tolist())) == classes


def test_seattle_weather_reads_the_csv_into_standardised_features():
    text = ("date,precipitation,temp_max,temp_min,wind,weather\n"
            "2012/01/01,0.0,12.8,5.0,4.7,drizzle\n2012/07/02,10.9,25.6,12.8,4.5,rain\n"
            "2012/10/03,0.8,11.7,7.2,2.3,sun\n")
    x, y = seattle_weather(text)
    assert x.shape == (3, 6) and y.tolist() == ["drizzle", "rain", "sun"]
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-5)
    assert x[1, 0] > x[2, 0] > x[0, 0]  # precipitation keeps its order


def test_paired_aulc_is_the_mean_per_seed_difference_with_a_t_interval():
    labels = [0, 100, 200]
    a = Curve("a", labels, np.array([[0.5, 0.7, 0.9], [0.5, 0.6, 0.8], [0.5, 0.65, 0.85]]))
    b = Curve("b", labels, np.array([[0.5, 0.6, 0.8], [0.5, 0.6, 0.8], [0.5, 0.6, 0.8]]))
    diff, half = paired_aulc(a, b)
    per_seed = np.array([7.5, 0.0, 3.75])  # trapezoid areas over the 200-label range, in points
    assert np.isclose(diff, per_seed.mean())
    assert np.isclose(half, 4.302653 * per_seed.std(ddof=1) / np.sqrt(3), rtol=1e-5)
    same, zero = paired_aulc(b, b)
    assert same == 0.0 and zero == 0.0


def test_random_redraw_picks_distinct_candidates_uniformly():
    from bench.suite import RANDOM_REDRAW
    from shared.core.strategies import BATCH_STRATEGIES
    from shared.ports import CandidateSet, LabeledSet

    assert BATCH_STRATEGIES["random_redraw"] is RANDOM_REDRAW and not RANDOM_REDRAW.needs_embeddings
    n = 50
    cands = CandidateSet(np.array([f"i{i}" for i in range(n)]), np.array([f"u{i}" for i in range(n)]),
                         np.full((n, 3), 1 / 3), None)
    labeled = LabeledSet(np.array([], dtype=str), np.array([], dtype=str), None)
    counts = np.zeros(n)
    for s in range(400):
        idx, scores = RANDOM_REDRAW.pick(cands, labeled, 10, np.random.default_rng(s))
        assert len(set(idx.tolist())) == 10 and np.all(scores == 0)
        counts[idx] += 1
    # every candidate equally likely: 80 picks each on average; a rank-by-score bug would pin 10 of them
    assert counts.min() > 40 and counts.max() < 125


def test_a_suite_run_keeps_the_curves_and_drops_the_runs_item_files(tmp_path):
    from bench.suite import run_dataset

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    npz = tmp_path / "small.npz"
    np.savez(npz, features=(rng.normal(size=(400, 5)) + y[:, None]).astype(np.float32), labels=y)
    curves, meta, wall = run_dataset("small", str(npz), ["margin", "random"], 1, tmp_path / "suite", False, 1)
    assert set(curves) == {"margin", "random"} and meta == {"n_items": 400, "n_classes": 3} and wall > 0
    assert curves["random"].labels[:2] == [10, 20]  # the CLI's sizes for a set this small
    (run,) = (tmp_path / "suite" / "small").glob("run-*")
    assert (run / "summary.json").exists() and not (run / "work").exists()
