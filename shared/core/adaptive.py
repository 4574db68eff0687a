"""The default strategy: read the serving model's own held-out figures, and pick the way they call for.

``calibration_switch`` looks at two diagnostics of the serving version
(:class:`shared.core.calibration.Calibration`), both measured on the loop's own labels:

1. **Fit-limited** (its training error exceeds its generalisation gap): plain margin, top-k. The
   model misses labels it was trained on more than it loses to unseen ones, so its error comes from
   what it can fit (bias, label noise), not from what it has seen; spreading the batch over the input
   or gradient space buys coverage it cannot use, while the items nearest its decision boundaries
   place that boundary.
2. Else **overconfident** (held-out confidence above held-out accuracy): BADGE
   (:func:`shared.core.peers.badge`, D² sampling over gradient embeddings). Its probabilities say
   more than its errors bear out, so a greedy order by them chases its mistaken certainties; BADGE
   samples in proportion to the gradient mass and stays representative of the pool.
3. Else :func:`shared.core.batch.gradient_spaced` (greedy, uncertainty-led, spaced).

Both thresholds compare two measured figures (training error with the gap; confidence with
accuracy), not a constant fitted to a data set; docs/label-efficiency.md has the measurements.
Without recorded figures (a version registered by hand) it picks like ``gradient_spaced``; without
training accuracy, it skips the first test; without logged embeddings, like the others, by margin
with class-pair capping.
"""

from __future__ import annotations

import numpy as np

from shared.core import uncertainty
from shared.core.batch import GRADIENT_SPACED, PAIR_CAPPED_MARGIN
from shared.core.peers import BADGE
from shared.core.strategies import BatchStrategy, register
from shared.ports import CandidateSet, LabeledSet


def _top_margin(cands: CandidateSet, labeled: LabeledSet, k: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The k lowest margins, ties by item id: the ranked ``margin`` strategy's order."""
    idx = uncertainty.rank_order("margin", cands.item_ids, cands.probabilities)[:k]
    return idx, uncertainty.margin(cands.probabilities[idx])


# The fit-limited arm: the same picks as the ranked ``margin`` strategy, made on the shortlist (which is
# the most uncertain candidates by margin already). Not registered: ``margin`` itself runs in SQL/KQL.
TOP_MARGIN = BatchStrategy("margin", _top_margin, needs_embeddings=False,
                           description="the k lowest margins, ties by item id")


def calibration_arm(cands: CandidateSet) -> BatchStrategy:
    """The strategy :data:`CALIBRATION_SWITCH` delegates to for these candidates."""
    cal = cands.calibration
    if cands.embeddings is None:  # what every embedding strategy falls back to
        return PAIR_CAPPED_MARGIN
    if cal is None:
        return GRADIENT_SPACED
    if cal.fit_limited:
        return TOP_MARGIN
    return BADGE if cal.overconfident else GRADIENT_SPACED


def _pick(cands: CandidateSet, labeled: LabeledSet, k: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return calibration_arm(cands).pick(cands, labeled, k, rng)


CALIBRATION_SWITCH = register(BatchStrategy(
    "calibration_switch", _pick, needs_embeddings=True,
    description="margin top-k while the serving model's training error exceeds its generalisation gap; else "
                "BADGE while its held-out confidence exceeds its held-out accuracy; else gradient_spaced",
))
