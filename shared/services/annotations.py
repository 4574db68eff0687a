"""annotations: Label Studio's answers back into the store, by two paths that may overlap.

* :meth:`AnnotationIntake.webhook` — Label Studio posts each annotation change once, inside the
  labeler's own request, and never retries (its 1 s default timeout; errors swallowed). So the
  webhook only validates and records, and returns.
* :meth:`AnnotationIntake.sync` — the catch-up (a timer): it pages through the project's tasks
  updated since its watermark (minus an overlap, for clocks and in-flight saves), newest first,
  records what it finds and moves the watermark. A lost webhook, a label app that was down, a
  storage outage on Label Studio's side: the next catch-up has the annotation. It also finds
  deletions: an answer recorded for a task that no longer carries that annotation is retracted.

Either path may deliver an annotation again, or an older version of it after a newer one: the store
records a row only when it changes something (:mod:`shared.core.answers`), so nothing is recorded
twice and an older answer never reverts a newer one. An annotation for an item the loop never handed
out, from another project, or with a class the model does not have is refused: never recorded,
logged, and written to a report beside the exports (``<reports>/label-studio/<date>/<delivery>.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core import label_studio as ls
from shared.core.records import Label
from shared.errors import NotFoundError
from shared.ports import LabelingTool, ObjectStore, PredictionStore
from shared.services.labels import LabelService

log = logging.getLogger(__name__)
SYNC_OVERLAP = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    delivery: str
    answers: int
    recorded: int
    retracted: int
    skipped: int
    refused: tuple[ls.Refusal, ...]
    pending: int
    retrain_requested: bool
    report: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"delivery": self.delivery, "answers": self.answers, "recorded": self.recorded,
                "retracted": self.retracted, "skipped": self.skipped, "refused": [r.as_dict() for r in self.refused],
                "pending": self.pending, "retrain_requested": self.retrain_requested, "report": self.report,
                **self.extra}


class AnnotationIntake:
    def __init__(self, labels: LabelService, store: PredictionStore, objects: ObjectStore,
                 tool: LabelingTool | None, *, project_id: int, reports_container: str, state_container: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """``objects``: where refusal reports go (``reports_container``) and the catch-up keeps its
        watermark (``state_container``); ``tool``: what the catch-up reads (None: webhooks only)."""
        self.labels = labels
        self._store = store
        self._objects = objects
        self._tool = tool
        self.project_id = project_id
        self._reports = reports_container
        self._state = state_container
        self._clock = clock

    # --- the two paths ---------------------------------------------------------------------------
    def webhook(self, body: bytes) -> IntakeResult:
        """One webhook delivery (raw body). Raises ``ValueError`` for a body that is not JSON."""
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"the webhook body is not JSON: {exc}") from exc
        sha = hashlib.sha256(body).hexdigest()
        action = doc.get("action") if isinstance(doc, dict) else None
        delivery = f"label-studio:webhook:{ls.clip(action)}:{sha[:16]}"
        parsed = ls.webhook_answers(doc, project_id=self.project_id, class_names=self.labels.class_names,
                                    delivery=delivery)
        return self._record(parsed, delivery, sha)

    def sync(self) -> IntakeResult:
        """The catch-up: every task updated since the watermark (less :data:`SYNC_OVERLAP`)."""
        if self._tool is None:
            raise NotFoundError("no labeling tool to read from (AL_LABEL_STUDIO_URL is not set)")
        mark = self.watermark()
        since = mark - SYNC_OVERLAP if mark else None
        now = self._clock()
        delivery = f"label-studio:sync:{now:%Y%m%dT%H%M%S.%fZ}"
        classes = self.labels.class_names
        parsed, newest, tasks = ls.Parsed(), mark, 0
        answered: dict[str, set[str]] = {}
        for task in self._tool.changed_tasks(since):
            tasks += 1
            got = ls.task_answers(task, project_id=self.project_id, class_names=classes, delivery=delivery)
            parsed.extend(got)
            data = task.get("data")
            item = data.get("item_id") if isinstance(data, dict) else None
            if isinstance(item, str):
                answered.setdefault(item, set()).update(a.answer_id for a in got.answers)
                answered[item].update(f"{ls.label_studio_answer_id(self.project_id, r.annotation_id)}"
                                      for r in got.refused if isinstance(r.annotation_id, int))
            at = ls.parse_time(task.get("updated_at"))
            if at is not None and (newest is None or at > newest):
                newest = at
        parsed.deleted += self._vanished(answered)
        result = self._record(parsed, delivery, hashlib.sha256(delivery.encode()).hexdigest(),
                              extra={"tasks_read": tasks, "since": since.isoformat() if since else None})
        if newest is not None and newest != mark:
            self._objects.put(self._state, self._state_name(), json.dumps(
                {"project_id": self.project_id, "updated_at": newest.isoformat()}).encode(), overwrite=True)
        return result

    def watermark(self) -> datetime | None:
        try:
            doc = json.loads(self._objects.get(self._state, self._state_name()))
        except NotFoundError:
            return None
        return ls.parse_time(doc.get("updated_at"))

    # --- shared ----------------------------------------------------------------------------------
    def _state_name(self) -> str:
        return f"label-studio/project-{self.project_id}.json"

    def _vanished(self, answered: dict[str, set[str]]) -> list[str]:
        """Answers recorded for these tasks' items whose annotation the task no longer has (deleted
        while no webhook got through)."""
        if not answered:
            return []
        prefix = ls.label_studio_answer_id(self.project_id, 0)[:-1]
        current = {lb.item_id: lb.answer_id for lb in self._store.list_labels() if lb.item_id in answered}
        return [answer for item, answer in current.items()
                if answer.startswith(prefix) and answer not in answered[item]]

    def _record(self, parsed: ls.Parsed, delivery: str, sha: str, *, extra: dict[str, Any] | None = None,
                ) -> IntakeResult:
        now = self._clock()
        refused = list(parsed.refused)
        retractions: list[Label] = []
        if parsed.deleted:
            items = self._store.answer_items(parsed.deleted)
            # A deletion carries no time: it is observed now, later than the answer it withdraws.
            retractions = [Label(items[a], "", delivery, sha, now, a, retracted=True)
                           for a in dict.fromkeys(parsed.deleted) if a in items]
        answers = parsed.answers
        if answers:
            handed = self.labels.reached_labelers(sorted({a.item_id for a in answers}))
            for a in answers:
                if a.item_id not in handed:
                    refused.append(ls.Refusal(None, a.answer_id, f"unknown task: item {ls.clip(a.item_id)} "
                                              "was never handed out for labeling"))
            answers = [a for a in answers if a.item_id in handed]
        rows = [*answers, *retractions]
        recorded, pending, watermark = self.labels.record(rows, delivery, sha) if rows else (0, self.labels.pending(),
                                                                                            None)
        report = self._report(delivery, sha, refused) if refused else None
        if refused:
            log.warning("label studio %s: %d annotations refused (first: %s)", delivery, len(refused),
                        refused[0].as_dict())
        log.info("label studio %s: %d answers, %d recorded, %d deletions, %d skips", delivery, len(answers),
                 recorded, len(retractions), parsed.skipped)
        return IntakeResult(delivery, len(answers), recorded, len(retractions), parsed.skipped, tuple(refused),
                            pending, watermark is not None, report, extra or {})

    def _report(self, delivery: str, sha: str, refused: list[ls.Refusal]) -> str:
        now = self._clock()
        name = f"label-studio/{now:%Y-%m-%d}/{delivery.replace(':', '-')}.json"
        body = {"delivery": delivery, "sha256": sha, "project_id": self.project_id, "written_at": now.isoformat(),
                "refused": [r.as_dict() for r in refused[:1000]], "refused_count": len(refused)}
        self._objects.put(self._reports, name, json.dumps(body, indent=1).encode(), overwrite=True)
        return f"{self._reports}/{name}"
