"""The default strategy: trust the model's uncertainty as far as its own held-out labels do.

``calibration_switch`` picks with :func:`shared.core.batch.gradient_spaced` (greedy, uncertainty-led)
while the serving model is not overconfident on its held-out labels, and with BADGE
(:func:`shared.core.peers.badge`, D² sampling over gradient embeddings) while it is
(:class:`shared.core.calibration.Calibration`). An overconfident model's probabilities say more than
its errors bear out, so a greedy order by them chases its mistaken certainties; BADGE samples in
proportion to the gradient mass and stays representative of the pool. The threshold is calibration
itself (confidence = accuracy), not a constant fitted to a data set; docs/label-efficiency.md has
the measurements. Without recorded calibration (a version registered by hand) it picks like
``gradient_spaced``; without logged embeddings, like the others, by margin with class-pair capping.
"""

from __future__ import annotations

import numpy as np

from shared.core.batch import GRADIENT_SPACED
from shared.core.peers import BADGE
from shared.core.strategies import BatchStrategy, register
from shared.ports import CandidateSet, LabeledSet


def calibration_arm(cands: CandidateSet) -> BatchStrategy:
    """The strategy :data:`CALIBRATION_SWITCH` delegates to for these candidates."""
    cal = cands.calibration
    return BADGE if cal is not None and cal.overconfident else GRADIENT_SPACED


def _pick(cands: CandidateSet, labeled: LabeledSet, k: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return calibration_arm(cands).pick(cands, labeled, k, rng)


CALIBRATION_SWITCH = register(BatchStrategy(
    "calibration_switch", _pick, needs_embeddings=True,
    description="gradient_spaced while the serving model's held-out confidence does not exceed its held-out "
                "accuracy, BADGE while it does",
))
