import numpy as np

from bench.suite import figures
from bench.suite_data import OCR_FILE, blobs10_noisy
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
