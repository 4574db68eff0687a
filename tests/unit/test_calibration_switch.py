"""The default strategy: margin top-k while the serving model is fit-limited, else BADGE while it is
overconfident on its held-out labels, else gradient_spaced; and the figures it reads."""

import math

import numpy as np
import pytest

from shared.core import uncertainty
from shared.core.adaptive import CALIBRATION_SWITCH, TOP_MARGIN, calibration_arm
from shared.core.batch import GRADIENT_SPACED, PAIR_CAPPED_MARGIN
from shared.core.calibration import Calibration, mean_confidence
from shared.core.peers import BADGE
from shared.ports import CandidateSet, LabeledSet


def candidates(seed: int, calibration: Calibration | None, n: int = 120, embeddings: bool = True) -> CandidateSet:
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{j:03d}" for j in range(n)])
    p = rng.dirichlet(np.full(6, 0.4), size=n).astype(np.float32)
    emb = rng.normal(size=(n, 8)).astype(np.float32) if embeddings else None
    return CandidateSet(ids, ids, p, emb, calibration)


def labeled(seed: int) -> LabeledSet:
    rng = np.random.default_rng(seed + 100)
    ids = np.array([f"l{j}" for j in range(15)])
    return LabeledSet(ids, np.array(["a"] * 15), rng.normal(size=(15, 8)).astype(np.float32))


def test_overconfidence_is_confidence_above_accuracy_on_the_same_held_out_labels():
    assert Calibration(accuracy=0.3, confidence=0.6).overconfident
    assert not Calibration(accuracy=0.8, confidence=0.6).overconfident
    assert not Calibration(accuracy=0.5, confidence=0.5).overconfident  # calibrated: trust it


@pytest.mark.parametrize("metrics", [{}, {"accuracy": 0.5}, {"confidence": 0.5},
                                     {"accuracy": float("nan"), "confidence": 0.5}])
def test_calibration_is_none_unless_both_figures_are_recorded(metrics):
    assert Calibration.from_metrics(metrics) is None


def test_calibration_from_a_versions_metrics():
    assert Calibration.from_metrics({"accuracy": 0.25, "confidence": 0.5, "n_eval": 9}) == Calibration(0.25, 0.5)


def test_fit_limited_is_training_error_above_the_generalisation_gap():
    assert Calibration(accuracy=0.45, confidence=0.5, train_accuracy=0.55).fit_limited  # 0.45 > 0.10
    assert not Calibration(accuracy=0.40, confidence=0.5, train_accuracy=1.0).fit_limited  # 0 > 0.60: no
    assert not Calibration(accuracy=0.50, confidence=0.5, train_accuracy=0.75).fit_limited  # 0.25 = 0.25: no
    assert Calibration(accuracy=0.50, confidence=0.5, train_accuracy=0.74).fit_limited
    assert not Calibration(accuracy=0.45, confidence=0.5).fit_limited  # not recorded: never


def test_training_accuracy_is_read_when_recorded():
    assert Calibration.from_metrics({"accuracy": 0.4, "confidence": 0.5, "train_accuracy": 0.6}) == \
        Calibration(0.4, 0.5, 0.6)
    assert Calibration.from_metrics({"accuracy": 0.4, "confidence": 0.5, "train_accuracy": float("nan")}) == \
        Calibration(0.4, 0.5)
    assert Calibration.from_metrics({"accuracy": 0.4, "train_accuracy": 0.6}) is None


def test_mean_confidence_is_the_mean_top_class_probability():
    assert mean_confidence(np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])) == pytest.approx(0.55)
    assert math.isnan(mean_confidence(np.zeros((0, 3))))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("calibration, arm", [
    (None, GRADIENT_SPACED), (Calibration(0.9, 0.6), GRADIENT_SPACED), (Calibration(0.3, 0.6), BADGE),
    (Calibration(0.9, 0.6, train_accuracy=1.0), GRADIENT_SPACED), (Calibration(0.3, 0.6, train_accuracy=1.0), BADGE),
    (Calibration(0.45, 0.6, train_accuracy=0.55), TOP_MARGIN), (Calibration(0.6, 0.5, train_accuracy=0.65), TOP_MARGIN),
])
def test_the_switch_picks_exactly_what_its_arm_picks(seed, calibration, arm):
    cands, lab = candidates(seed, calibration), labeled(seed)
    got = CALIBRATION_SWITCH.pick(cands, lab, 20, np.random.default_rng(seed))
    want = arm.pick(cands, lab, 20, np.random.default_rng(seed))
    assert calibration_arm(cands).name == arm.name
    assert got[0].tolist() == want[0].tolist()
    np.testing.assert_allclose(got[1], want[1])


def test_the_three_arms_pick_differently_on_these_candidates():
    """Otherwise the switch test above could not tell the arms apart."""
    for seed in range(4):
        cands, lab = candidates(seed, None), labeled(seed)
        g = GRADIENT_SPACED.pick(cands, lab, 20, np.random.default_rng(seed))[0]
        b = BADGE.pick(cands, lab, 20, np.random.default_rng(seed))[0]
        m = TOP_MARGIN.pick(cands, lab, 20, np.random.default_rng(seed))[0]
        assert len({tuple(g.tolist()), tuple(b.tolist()), tuple(m.tolist())}) == 3


def test_the_fit_limited_arm_picks_what_the_ranked_margin_strategy_picks():
    cands = candidates(3, Calibration(0.45, 0.6, train_accuracy=0.55))
    cands.probabilities[[7, 40]] = [0.5, 0.5, 0, 0, 0, 0]  # a tie at margin 0: the lower item id first
    idx, scores = CALIBRATION_SWITCH.pick(cands, labeled(3), 12, np.random.default_rng(0))
    assert idx.tolist() == uncertainty.rank_order("margin", cands.item_ids, cands.probabilities)[:12].tolist()
    assert idx[:2].tolist() == [7, 40] and np.all(np.diff(scores) >= 0)


@pytest.mark.parametrize("calibration", [None, Calibration(0.3, 0.6), Calibration(0.45, 0.6, train_accuracy=0.55)])
def test_without_embeddings_every_arm_falls_back_to_pair_capped_margin(calibration):
    cands = candidates(0, calibration, embeddings=False)
    got = CALIBRATION_SWITCH.pick(cands, labeled(0), 10, np.random.default_rng(0))[0]
    want = PAIR_CAPPED_MARGIN.pick(cands, labeled(0), 10, np.random.default_rng(0))[0]
    assert got.tolist() == want.tolist()
