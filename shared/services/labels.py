"""ingest labels: parse a labeling export, validate each row, record the valid labels once."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.core.exports import parse_csv_export
from shared.core.naming import item_id_from_path
from shared.core.records import Label
from shared.errors import ExportFormatError, Problem
from shared.ports import PredictionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestResult:
    export_id: str
    export_sha256: str
    recorded: int
    already_known: int
    problems: tuple[Problem, ...]
    pending: int
    retrain_requested: bool


class LabelService:
    def __init__(
        self,
        store: PredictionStore,
        *,
        model_name: str,
        class_names: Callable[[], tuple[str, ...] | None],
        retrain_threshold: int,
    ) -> None:
        self._store = store
        self._model_name = model_name
        self._class_names = class_names
        self._threshold = retrain_threshold

    def ingest(self, export_id: str, data: bytes) -> IngestResult:
        """Record the valid rows of an export; raise :class:`ExportFormatError` if it cannot be read."""
        sha = hashlib.sha256(data).hexdigest()
        parsed = parse_csv_export(data)
        classes = self._class_names()
        if not classes:
            raise ExportFormatError("no class list to check labels against",
                                    [Problem(None, "classes", "register a model or configure classes")])
        known = set(classes)
        problems = list(parsed.problems)
        by_item: dict[str, list[tuple[int, str]]] = {}
        for row in parsed.rows:
            item_id = item_id_from_path(row.url)
            if row.label not in known:
                problems.append(Problem(row.row, "Label", f"{row.label!r} is not one of the model's classes"))
                continue
            by_item.setdefault(item_id, []).append((row.row, row.label))
        conflicting = {i for i, rows in by_item.items() if len({lb for _, lb in rows}) > 1}
        for item_id in sorted(conflicting):
            for n, label in by_item.pop(item_id):
                problems.append(Problem(n, "Label", f"item {item_id!r} has different labels in this export ({label!r})"))
        ids = sorted(by_item)
        selected = self._store.is_selected(ids)
        now = datetime.now(UTC)
        labels = []
        for item_id, was_selected in zip(ids, selected, strict=True):
            n, label = by_item[item_id][0]
            if not was_selected:
                problems.append(Problem(n, "Url", f"item {item_id!r} was never selected for labeling"))
                continue
            labels.append(Label(item_id, label, export_id, sha, now))
        recorded = self._store.add_labels(labels)
        pending = self.pending()
        if problems:
            log.warning("export %s: %d rows refused (first: %s)", export_id, len(problems), problems[0])
        return IngestResult(export_id, sha, recorded, len(labels) - recorded, tuple(problems),
                            pending, pending >= self._threshold)

    def pending(self) -> int:
        """Labels recorded since the serving model was trained."""
        serving = self._store.serving_version(self._model_name)
        return self._store.count_labels() - (serving.trained_on_labels if serving else 0)
