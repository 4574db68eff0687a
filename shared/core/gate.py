"""The quality gate: deploy a candidate only if it is not worse than the serving model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GateDecision:
    passed: bool
    reason: str


def decide(candidate: float, serving: float | None, *, tolerance: float = 0.0) -> GateDecision:
    """Pass when there is no serving model, or ``candidate >= serving - tolerance``."""
    if candidate != candidate:  # NaN
        return GateDecision(False, "the candidate's metric is NaN")
    if serving is None:
        return GateDecision(True, f"no serving model; candidate scores {candidate:.4f}")
    if candidate + 1e-12 >= serving - tolerance:
        return GateDecision(True, f"candidate {candidate:.4f} >= serving {serving:.4f} - {tolerance:g}")
    return GateDecision(False, f"candidate {candidate:.4f} < serving {serving:.4f} - {tolerance:g}")
