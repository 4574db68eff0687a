"""How far the serving model's confidence can be trusted, measured on the loop's own labels.

A model version is trained on part of the labels and measured on the rest (the gate's held-out
split). Beside its accuracy there, the trainers record its **confidence** there: the mean probability
it gives its top class. A model whose confidence exceeds its accuracy on labels it never saw is
overconfident: its probabilities (and so every uncertainty score) say more than its errors bear out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

ACCURACY = "accuracy"
CONFIDENCE = "confidence"


@dataclass(frozen=True, slots=True)
class Calibration:
    """The serving model's accuracy and mean top-class probability on the same held-out labels."""

    accuracy: float
    confidence: float

    @property
    def overconfident(self) -> bool:
        """More confident than accurate on labels it did not train on."""
        return self.confidence > self.accuracy

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> Calibration | None:
        """From a model version's metrics; None when either figure is missing or not a number (a
        version registered by hand, or trained before confidence was recorded)."""
        acc, conf = metrics.get(ACCURACY), metrics.get(CONFIDENCE)
        if acc is None or conf is None:
            return None
        acc, conf = float(acc), float(conf)
        if not (np.isfinite(acc) and np.isfinite(conf)):
            return None
        return cls(acc, conf)


def mean_confidence(probabilities: np.ndarray) -> float:
    """The mean top-class probability of ``probabilities`` (n, classes); NaN for no rows."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        return float("nan")
    return float(p.max(axis=1).mean())
