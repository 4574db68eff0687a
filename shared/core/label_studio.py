"""Label Studio's JSON, both ways: the tasks the loop hands over and the annotations it takes back.

Pure: no I/O. The shapes were checked against Label Studio 1.23.2 (docs/labeling.md): a task is
``{"data": {...}, "predictions": [{"model_version", "score", "result": [...]}]}``; an annotation is
``{"id", "result": [{"from_name", "to_name", "type": "choices", "value": {"choices": [CLASS]}}],
"was_cancelled", "updated_at", "task", "project", ...}``; a webhook is ``{"action", "annotation",
"task", "project"}`` (``ANNOTATIONS_DELETED``: ``{"annotations": [{"id"}]}``).

Everything from outside is validated here and turned into answers (:class:`shared.core.records.Label`
rows with a stable ``answer_id``, :mod:`shared.core.answers`) or refusals naming the task, the
annotation and the reason; nothing is guessed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import quoteattr

from shared.core.answers import label_studio_answer_id
from shared.core.records import Label, LabelingTask

CONTROL = "label"  # <Choices name=...>
IMAGE = "image"  # <Image name=... value="$image">
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
ANSWER_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
DELETE_ACTION = "ANNOTATIONS_DELETED"
WEBHOOK_ACTIONS = (*ANSWER_ACTIONS, DELETE_ACTION)
MAX_ECHO = 200  # characters of outside input echoed into a report


def clip(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + f"… ({len(text)} characters)"


# --- the hand-off -------------------------------------------------------------------------------
def label_config(class_names: Sequence[str]) -> str:
    """Single-label image classification over the model's classes (in the model's order)."""
    if not class_names:
        raise ValueError("a label config needs at least one class")
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in class_names)
    return (f'<View>\n  <Image name="{IMAGE}" value="${IMAGE}"/>\n'
            f'  <Choices name="{CONTROL}" toName="{IMAGE}" choice="single" showInLine="true">\n'
            f"{choices}\n  </Choices>\n</View>")


def task_json(task: LabelingTask, image: str) -> dict[str, Any]:
    """One Label Studio task: the item in ``data`` (kept by every import and export, unlike ``meta``)
    and the serving model's guess as a prediction, which the labeling UI pre-selects."""
    doc: dict[str, Any] = {"data": {IMAGE: image, "item_id": task.item_id, "batch_id": task.batch_id,
                                    "uncertainty": task.score, "rank": task.rank,
                                    "model_version": task.model_version}}
    if task.predicted_label is not None:
        doc["predictions"] = [{
            "model_version": task.model_version,
            "score": float(task.confidence) if task.confidence is not None else 0.0,
            "result": [{"from_name": CONTROL, "to_name": IMAGE, "type": "choices",
                        "value": {"choices": [task.predicted_label]}}],
        }]
    return doc


def data_filter(key: str, value: str) -> dict[str, Any]:
    """A Data Manager filter: ``data.<key>`` equals ``value``."""
    return {"filter": f"filter:tasks:data.{key}", "operator": "equal", "type": "String", "value": value}


def updated_since_filter(since: datetime) -> dict[str, Any]:
    return {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
            "value": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


# --- answers back -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Refusal:
    """An annotation not recorded, and why (for the report and the log)."""

    task_id: object
    annotation_id: object
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"task": _echo_id(self.task_id), "annotation": _echo_id(self.annotation_id), "reason": self.reason}


def _echo_id(value: object) -> object:
    """An id for a report: an integer of id size as it is, anything else (a 4,000-digit number too) clipped."""
    return value if isinstance(value, int) and -10**20 < value < 10**20 else clip(value)


@dataclass(slots=True)
class Parsed:
    """What a delivery (a webhook, or the catch-up's page of tasks) says."""

    answers: list[Label] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # answer ids whose annotation was deleted
    refused: list[Refusal] = field(default_factory=list)
    skipped: int = 0  # annotations that are skips (was_cancelled): no label

    def extend(self, other: Parsed) -> None:
        self.answers += other.answers
        self.deleted += other.deleted
        self.refused += other.refused
        self.skipped += other.skipped


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _listed(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _choice(result: object) -> tuple[str | None, str | None]:
    """(the one class chosen, None) or (None, why not)."""
    if not isinstance(result, list):
        return None, "result is not a list"
    picked = [r for r in result if isinstance(r, Mapping) and r.get("type") == "choices"
              and r.get("from_name") == CONTROL]
    if not picked:
        return None, f"no choice of the {CONTROL!r} control in the result"
    if len(picked) > 1:
        return None, "more than one choices result"
    value = picked[0].get("value")
    choices = value.get("choices") if isinstance(value, Mapping) else None
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
        return None, f"not exactly one class chosen: {clip(choices)}"
    return choices[0], None


def annotation_answer(annotation: Mapping[str, Any], task: Mapping[str, Any], *, project_id: int,
                      class_names: Sequence[str], delivery: str) -> Parsed:
    """One annotation of one task, judged alone: an answer, a skip (a retraction of that answer, so a
    label turned into a skip is withdrawn), or a refusal."""
    out = Parsed()
    task_id = task.get("id") if isinstance(task, Mapping) else None
    ann_id = _int(annotation.get("id"))
    if ann_id is None:
        out.refused.append(Refusal(task_id, annotation.get("id"), "annotation without an integer id"))
        return out
    projects = {p for p in (_int(annotation.get("project")), _int(task.get("project"))) if p is not None}
    if projects and projects != {project_id}:
        out.refused.append(Refusal(task_id, ann_id,
                                   f"from another project ({clip(sorted(projects))}, not {project_id})"))
        return out
    data = task.get("data") if isinstance(task, Mapping) else None
    item_id = data.get("item_id") if isinstance(data, Mapping) else None
    if not isinstance(item_id, str) or not item_id or len(item_id) > 512:
        out.refused.append(Refusal(task_id, ann_id, "unknown task: its data has no item_id the loop handed out"))
        return out
    at = parse_time(annotation.get("updated_at")) or parse_time(annotation.get("created_at"))
    if at is None:
        out.refused.append(Refusal(task_id, ann_id, f"unreadable updated_at {clip(annotation.get('updated_at'))}"))
        return out
    answer_id = label_studio_answer_id(project_id, ann_id)
    digest = hashlib.sha256(json.dumps({"result": annotation.get("result"), "updated_at": annotation.get("updated_at"),
                                        "was_cancelled": annotation.get("was_cancelled")},
                                       sort_keys=True, default=str).encode()).hexdigest()
    if annotation.get("was_cancelled") is True:
        out.skipped += 1
        out.answers.append(Label(item_id, "", delivery, digest, at, answer_id, retracted=True))
        return out
    label, why = _choice(annotation.get("result"))
    if label is None:
        out.refused.append(Refusal(task_id, ann_id, str(why)))
        return out
    if label not in class_names:
        out.refused.append(Refusal(task_id, ann_id, f"class {clip(label)} is not one of the model's classes"))
        return out
    out.answers.append(Label(item_id, label, delivery, digest, at, answer_id))
    return out


def task_answers(task: Mapping[str, Any], *, project_id: int, class_names: Sequence[str],
                 delivery: str) -> Parsed:
    """Every annotation of a task as the API returns it (``annotations`` nested)."""
    out = Parsed()
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        out.refused.append(Refusal(task.get("id"), None, "annotations is not a list"))
        return out
    for annotation in annotations:
        if isinstance(annotation, Mapping):
            out.extend(annotation_answer(annotation, task, project_id=project_id, class_names=class_names,
                                         delivery=delivery))
    return out


def webhook_answers(doc: object, *, project_id: int, class_names: Sequence[str], delivery: str) -> Parsed:
    """A webhook body: the answers it carries, the annotations it deletes, or refusals. Actions the
    loop does not use (PROJECT_*, TASKS_*) say nothing."""
    out = Parsed()
    if not isinstance(doc, Mapping) or not isinstance(doc.get("action"), str):
        out.refused.append(Refusal(None, None, "not a Label Studio webhook: no action"))
        return out
    action = doc["action"]
    project = doc.get("project")
    pid = _int(project.get("id")) if isinstance(project, Mapping) else _int(project)
    if pid is not None and pid != project_id:
        out.refused.append(Refusal(None, None, f"webhook of another project ({clip(pid)}, not {project_id})"))
        return out
    if action == DELETE_ACTION:
        for ann in _listed(doc.get("annotations")):
            ann_id = _int(ann.get("id")) if isinstance(ann, Mapping) else None
            if ann_id is None:
                out.refused.append(Refusal(None, clip(ann), "deleted annotation without an integer id"))
            else:
                out.deleted.append(label_studio_answer_id(project_id, ann_id))
        return out
    if action not in ANSWER_ACTIONS:
        return out
    task = doc.get("task")
    single = task if isinstance(task, Mapping) else None
    pairs: list[tuple[Any, Any]] = []
    if isinstance(doc.get("annotation"), Mapping):
        pairs.append((doc["annotation"], task))
    # ANNOTATIONS_CREATED (bulk, e.g. the Data Manager's "predictions to annotations"): Label Studio
    # 1.23.2 sends lists under the same keys, {"annotation": [...], "task": [...]}.
    tasks = {_int(t.get("id")): t for t in _listed(task) + _listed(doc.get("tasks")) if isinstance(t, Mapping)}
    for ann in _listed(doc.get("annotation")) + _listed(doc.get("annotations")):
        if isinstance(ann, Mapping):
            tid = _int(ann.get("task"))
            pairs.append((ann, tasks.get(tid, single) if tid is not None else single))
    for ann, t in pairs:
        if not isinstance(t, Mapping):
            out.refused.append(Refusal(None, ann.get("id"), "webhook without its task"))
            continue
        out.extend(annotation_answer(ann, t, project_id=project_id, class_names=class_names, delivery=delivery))
    return out
