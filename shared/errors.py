"""One exception tree for the whole product.

Callers catch :class:`ActiveLearningError` to handle anything the product raises on purpose; the
subclasses exist where a caller acts differently (answer 400 instead of 500, quarantine an export,
exit with code 2 instead of a traceback).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ActiveLearningError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigurationError(ActiveLearningError):
    """A setting is missing or invalid; the message names the environment variable."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason an input was refused: where (record index or row), which field, and why."""

    where: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        prefix = f"record {self.where}: " if self.where is not None else ""
        return f"{prefix}{self.field}: {self.reason}"


class InvalidInputError(ActiveLearningError, ValueError):
    """Input from outside was refused; ``problems`` lists every reason, not only the first."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        self.message = message  # without the problems (str() appends them), for who shows both apart
        self.problems = tuple(problems)
        detail = "; ".join(str(p) for p in self.problems[:5])
        more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{message}: {detail}{more}" if detail else message)


class BatchRejectedError(InvalidInputError):
    """A batch of scoring results failed validation; nothing of it was stored."""


class ExportFormatError(InvalidInputError):
    """A labeling export could not be parsed or validated."""


class DatasetError(InvalidInputError):
    """A dataset for the simulation is missing, malformed or too small."""


class NotFoundError(ActiveLearningError, LookupError):
    """Something the caller named does not exist (a model version, an export, a batch)."""


class UnavailableError(ActiveLearningError):
    """A service the request depends on cannot be reached now; the caller should retry later."""

    def __init__(self, message: str, *, retry_after_s: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SelectionError(ActiveLearningError):
    """Selection could not run (unknown strategy, bad arguments)."""


class TrainingError(ActiveLearningError):
    """Training or evaluation of a candidate model failed."""
