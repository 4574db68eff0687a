"""How far the serving model's confidence can be trusted, measured on the loop's own labels.

A model version is trained on part of the labels and measured on the rest (the gate's held-out
split). Beside its accuracy there, the trainers record its **confidence** there: the mean probability
it gives its top class. A model whose confidence exceeds its accuracy on labels it never saw is
overconfident: its probabilities (and so every uncertainty score) say more than its errors bear out.

They also record its **training accuracy**: on the labels it was trained on. A model that gets more
of its own training labels wrong (training error) than it loses from them to held-out labels
(generalisation gap) is limited by what it can fit (its bias, or label noise), not by what it has
seen: more coverage of the input space cannot help it, a better placed decision boundary can.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

ACCURACY = "accuracy"
CONFIDENCE = "confidence"
TRAIN_ACCURACY = "train_accuracy"


@dataclass(frozen=True, slots=True)
class Calibration:
    """The serving model's accuracy and mean top-class probability on the same held-out labels, and
    its accuracy on its training labels (None: not recorded)."""

    accuracy: float
    confidence: float
    train_accuracy: float | None = None

    @property
    def overconfident(self) -> bool:
        """More confident than accurate on labels it did not train on."""
        return self.confidence > self.accuracy

    @property
    def fit_limited(self) -> bool:
        """Its training error exceeds its generalisation gap (False when training accuracy is not
        recorded): it misses more of the labels it learned from than it loses to unseen ones."""
        if self.train_accuracy is None:
            return False
        return 1.0 - self.train_accuracy > self.train_accuracy - self.accuracy

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> Calibration | None:
        """From a model version's metrics; None when accuracy or confidence is missing or not a
        number (a version registered by hand, or trained before confidence was recorded). Training
        accuracy is optional (versions trained before it was recorded): None when missing."""
        acc, conf = metrics.get(ACCURACY), metrics.get(CONFIDENCE)
        if acc is None or conf is None:
            return None
        acc, conf = float(acc), float(conf)
        if not (np.isfinite(acc) and np.isfinite(conf)):
            return None
        train = metrics.get(TRAIN_ACCURACY)
        train = float(train) if train is not None else None
        return cls(acc, conf, train if train is not None and np.isfinite(train) else None)


def mean_confidence(probabilities: np.ndarray) -> float:
    """The mean top-class probability of ``probabilities`` (n, classes); NaN for no rows."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        return float("nan")
    return float(p.max(axis=1).mean())
