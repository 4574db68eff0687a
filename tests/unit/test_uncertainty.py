import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shared.core import uncertainty as u


def test_known_values():
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(u.least_confidence(p), [0.3, 0.5, 0.0])
    np.testing.assert_allclose(u.margin(p), [0.5, 0.0, 1.0])
    expected = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(u.entropy(p), [expected, np.log(2), 0.0])


def test_zero_probabilities_contribute_nothing_to_entropy():
    assert u.entropy(np.array([[0.0, 1.0]]))[0] == 0.0
    assert np.isfinite(u.entropy(np.array([[0.0, 0.0, 1.0]]))).all()


def test_rank_order_breaks_ties_by_item_id():
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])
    ids = np.array(["b", "a", "a0"])
    assert u.rank_order("margin", ids, p).tolist() == [2, 0, 1]
    assert u.rank_order("least_confidence", ids, p).tolist() == [2, 0, 1]
    assert u.rank_order("entropy", ids, p).tolist() == [2, 0, 1]


def test_random_is_seeded_and_order_independent():
    ids = np.array([f"item{i}" for i in range(50)])
    p = np.full((50, 2), 0.5)
    a = ids[u.rank_order("random", ids, p, seed=7)]
    b = ids[::-1][u.rank_order("random", ids[::-1], p, seed=7)]
    assert a.tolist() == b.tolist()
    assert a.tolist() != ids[u.rank_order("random", ids, p, seed=8)].tolist()


def test_unknown_strategy_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown ranked strategy"):
        u.scores("nope", np.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="classes>=2"):
        u.margin(np.ones((3, 1)))


@given(arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(2, 12)),
              elements=st.floats(0, 1, allow_nan=False)))
def test_scores_stay_in_their_ranges(raw):
    p = raw + 1e-9
    p = p / p.sum(axis=1, keepdims=True)
    c = p.shape[1]
    lc, m, h = u.least_confidence(p), u.margin(p), u.entropy(p)
    assert ((lc >= -1e-12) & (lc <= 1 - 1 / c + 1e-9)).all()
    assert ((m >= -1e-12) & (m <= 1 + 1e-12)).all()
    assert ((h >= -1e-12) & (h <= np.log(c) + 1e-9)).all()
