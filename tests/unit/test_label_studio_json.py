"""Label Studio's JSON both ways (shared/core/label_studio.py): the label config and tasks handed over,
and webhook bodies taken back. The webhook bodies below are the shapes Label Studio 1.23.2 posts
(captured from a running server: ``annotation`` with ``task`` and ``project`` objects, the bulk
``ANNOTATIONS_CREATED`` with lists under the same keys, ``ANNOTATIONS_DELETED`` with ids only)."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core import label_studio as ls
from shared.core.answers import label_studio_answer_id
from shared.core.records import LabelingTask

PROJECT = 7
CLASSES = ("cat", "dog", "bird")
DELIVERY = "label-studio:webhook:test"
RESULT = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}]


def annotation(ann_id: int = 11, task_id: int = 3, *, result: Any = None, cancelled: bool = False,
               updated_at: Any = "2026-12-02T00:56:05.296498Z", project: Any = PROJECT) -> dict[str, Any]:
    return {
        "id": ann_id, "result": copy.deepcopy(RESULT) if result is None else result, "was_cancelled": cancelled,
        "ground_truth": False, "created_at": "2026-12-02T00:56:04.943795Z", "updated_at": updated_at,
        "draft_created_at": None, "lead_time": None,
        "prediction": {"id": 1, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                            "value": {"choices": ["cat"]}}], "model_version": "v1",
                       "score": 0.4, "task": task_id, "project": project},
        "result_count": 1, "unique_id": "595f773c-5b1c-435e-9205-ba0a38cdb4ac", "import_id": None,
        "last_action": None, "bulk_created": False, "task": task_id, "project": project, "completed_by": 1,
        "updated_by": 1, "parent_prediction": None, "parent_annotation": None, "last_created_by": None,
    }


def task(task_id: int = 3, item_id: Any = "item-3", *, project: Any = PROJECT) -> dict[str, Any]:
    data: dict[str, Any] = {"image": "azure-blob://labeling-input/x.png", "batch_id": "b1", "uncertainty": 0.6}
    if item_id is not None:
        data["item_id"] = item_id
    return {"id": task_id, "data": data, "meta": {}, "created_at": "2026-12-02T00:56:04.230707Z",
            "updated_at": "2026-12-02T00:56:05.098480Z", "is_labeled": True, "allow_skip": True, "overlap": 1,
            "inner_id": 1, "total_annotations": 1, "cancelled_annotations": 0, "total_predictions": 1,
            "precomputed_agreement": None, "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": project, "updated_by": 1, "file_upload": None,
            "comment_authors": []}


def project(pid: Any = PROJECT) -> dict[str, Any]:
    return {"id": pid, "title": "m", "model_version": "v1", "sampling": "Uncertainty sampling",
            "token": "n5IkU7AWth0DW6QikqL7WNu2XNUe4C2xJtKvz1jb", "show_skip_button": True,
            "label_config": ls.label_config(CLASSES)}


def webhook(action: str = "ANNOTATION_CREATED", ann: Any = None, t: Any = None, p: Any = None) -> dict[str, Any]:
    return {"action": action, "annotation": annotation() if ann is None else ann,
            "project": project() if p is None else p, "task": task() if t is None else t}


def parse(doc: object) -> ls.Parsed:
    return ls.webhook_answers(doc, project_id=PROJECT, class_names=CLASSES, delivery=DELIVERY)


# --- the hand-off -----------------------------------------------------------------------------
def test_label_config_escapes_class_names_and_has_one_choice_per_class():
    names = ["cat", 'say "hi"', "a<b", "fish & chips", "it's", "naïve ☃"]
    root = ET.fromstring(ls.label_config(names))
    assert root.tag == "View"
    (image,) = root.iter("Image")
    assert (image.get("name"), image.get("value")) == ("image", "$image")
    (choices,) = root.iter("Choices")
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == ("label", "image", "single")
    assert [c.get("value") for c in choices.iter("Choice")] == names


def test_label_config_needs_a_class():
    with pytest.raises(ValueError):
        ls.label_config([])


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
                min_size=1, max_size=6, unique=True))
@settings(max_examples=50, deadline=None)
def test_label_config_round_trips_any_class_names(names):
    root = ET.fromstring(ls.label_config(names))
    assert [c.get("value") for c in root.iter("Choice")] == names


def _task(**kw: Any) -> LabelingTask:
    base = {"item_id": "item-1", "batch_id": "batch-1", "container": "labeling-input", "name": "b/item-1.png",
            "score": 0.83, "rank": 2, "model_version": "5"}
    return LabelingTask(**(base | kw))


def test_task_json_carries_the_item_and_the_guess():
    doc = ls.task_json(_task(predicted_label="dog", confidence=0.41), "azure-blob://labeling-input/b/item-1.png")
    assert doc["data"] == {"image": "azure-blob://labeling-input/b/item-1.png", "item_id": "item-1",
                           "batch_id": "batch-1", "uncertainty": 0.83, "rank": 2, "model_version": "5"}
    (pred,) = doc["predictions"]
    assert pred == {"model_version": "5", "score": 0.41, "result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}]}
    json.dumps(doc)  # plain JSON


def test_task_json_has_no_prediction_without_a_guess():
    doc = ls.task_json(_task(), "azure-blob://labeling-input/b/item-1.png")
    assert "predictions" not in doc
    assert doc["data"]["item_id"] == "item-1" and doc["data"]["uncertainty"] == 0.83
    # A guess without a probability still makes a prediction (score 0: first in the queue).
    assert ls.task_json(_task(predicted_label="cat"), "x")["predictions"][0]["score"] == 0.0


def test_filters():
    assert ls.data_filter("batch_id", "b1") == {"filter": "filter:tasks:data.batch_id", "operator": "equal",
                                                "type": "String", "value": "b1"}
    since = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert ls.updated_since_filter(since)["value"] == "2026-03-01T10:00:00.123456Z"


# --- webhooks back ----------------------------------------------------------------------------
def test_annotation_created_is_an_answer():
    out = parse(webhook())
    (a,) = out.answers
    assert (a.item_id, a.label, a.retracted) == ("item-3", "dog", False)
    assert a.answer_id == label_studio_answer_id(PROJECT, 11) == "label-studio:7:11"
    assert a.labeled_at == datetime(2026, 12, 2, 0, 56, 5, 296498, tzinfo=UTC)  # updated_at, not created_at
    assert a.export_id == DELIVERY and len(a.export_sha256) == 64
    assert out.refused == [] and out.deleted == [] and out.skipped == 0


def test_annotation_updated_is_a_newer_version_of_the_same_answer():
    created = parse(webhook()).answers[0]
    ann = annotation(result=[{**RESULT[0], "value": {"choices": ["bird"]}}], updated_at="2026-12-02T00:57:00Z")
    (updated,) = parse(webhook("ANNOTATION_UPDATED", ann)).answers
    assert updated.answer_id == created.answer_id and updated.label == "bird"
    assert updated.labeled_at > created.labeled_at and updated.export_sha256 != created.export_sha256
    # The same content delivered twice has the same digest.
    assert parse(webhook()).answers[0].export_sha256 == created.export_sha256


def test_a_skip_is_a_retraction_with_no_label():
    out = parse(webhook(ann=annotation(12, result=[], cancelled=True)))
    (a,) = out.answers
    assert a.retracted and a.label == "" and a.answer_id == label_studio_answer_id(PROJECT, 12)
    assert out.skipped == 1 and out.refused == []


def test_annotations_deleted_names_the_answers():
    out = parse({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 4}, {"id": 5}, {"id": "x"}],
                 "project": project()})
    assert out.deleted == [label_studio_answer_id(PROJECT, 4), label_studio_answer_id(PROJECT, 5)]
    assert [r.reason for r in out.refused] == ["deleted annotation without an integer id"]
    assert out.answers == []


def test_bulk_annotations_created_as_label_studio_sends_it():
    # Label Studio 1.23.2 (the Data Manager's "predictions to annotations"): lists under the singular keys.
    doc = {"action": "ANNOTATIONS_CREATED", "project": project(),
           "annotation": [annotation(21, 3), annotation(22, 4), annotation(23, 99)],
           "task": [task(3, "item-3"), task(4, "item-4")]}
    out = parse(doc)
    assert [(a.item_id, a.answer_id) for a in out.answers] == [
        ("item-3", label_studio_answer_id(PROJECT, 21)), ("item-4", label_studio_answer_id(PROJECT, 22))]
    assert [(r.annotation_id, r.reason) for r in out.refused] == [(23, "webhook without its task")]


def test_actions_the_loop_does_not_use_say_nothing():
    for action in ("PROJECT_UPDATED", "TASKS_CREATED", "TASKS_DELETED", "LABEL_LINK_CREATED"):
        out = parse({"action": action, "project": project(), "tasks": [task()]})
        assert (out.answers, out.deleted, out.refused) == ([], [], [])


@pytest.mark.parametrize(("doc", "reason"), [
    (webhook(p=project(8)), "webhook of another project (8, not 7)"),
    (webhook(ann=annotation(project=8), t=task(project=8), p={}), "from another project ([8], not 7)"),
    (webhook(ann=annotation(project=8)), "from another project ([7, 8], not 7)"),  # annotation and task disagree
    (webhook(ann=annotation(result=[{**RESULT[0], "value": {"choices": ["cow"]}}])),
     "class cow is not one of the model's classes"),
    (webhook(t=task(item_id=None)), "unknown task: its data has no item_id the loop handed out"),
    (webhook(t=task(item_id="")), "unknown task: its data has no item_id the loop handed out"),
    (webhook(t=task(item_id=42)), "unknown task: its data has no item_id the loop handed out"),
    (webhook(ann=annotation(result=[{**RESULT[0], "value": {"choices": ["cat", "dog"]}}])),
     "not exactly one class chosen: ['cat', 'dog']"),
    (webhook(ann=annotation(result=[RESULT[0], RESULT[0]])), "more than one choices result"),
    (webhook(ann=annotation(result=[])), "no choice of the 'label' control in the result"),
    (webhook(ann=annotation(result="dog")), "result is not a list"),
    (webhook(ann={**annotation(), "updated_at": "yesterday", "created_at": None}),
     "unreadable updated_at yesterday"),
    (webhook(ann={**annotation(), "id": "11"}), "annotation without an integer id"),
    (webhook(ann={**annotation(), "id": True}), "annotation without an integer id"),
    ({"annotation": annotation()}, "not a Label Studio webhook: no action"),
    ([1, 2], "not a Label Studio webhook: no action"),
])
def test_refusals(doc, reason):
    out = parse(doc)
    assert out.answers == [] and out.deleted == []
    (refusal,) = out.refused
    assert refusal.reason == reason
    json.dumps(refusal.as_dict())


def test_task_answers_reads_a_task_from_the_api():
    t = task() | {"annotations": [annotation(11), annotation(12, result=[], cancelled=True), annotation(13, result=[])]}
    out = ls.task_answers(t, project_id=PROJECT, class_names=CLASSES, delivery=DELIVERY)
    assert [(a.answer_id[-2:], a.label, a.retracted) for a in out.answers] == [("11", "dog", False), ("12", "", True)]
    assert [r.annotation_id for r in out.refused] == [13]
    assert ls.task_answers(task() | {"annotations": {}}, project_id=PROJECT, class_names=CLASSES,
                           delivery=DELIVERY).refused == []
    bad = ls.task_answers(task() | {"annotations": "x"}, project_id=PROJECT, class_names=CLASSES, delivery=DELIVERY)
    assert [r.reason for r in bad.refused] == ["annotations is not a list"]


@pytest.mark.parametrize("doc", [
    {"action": "ANNOTATIONS_DELETED", "annotations": 5},
    {"action": "ANNOTATIONS_DELETED", "annotations": True},
    {"action": "ANNOTATIONS_DELETED", "annotations": {"id": 4}},
    {"action": "ANNOTATIONS_CREATED", "annotation": [annotation(21, [3])], "task": [task(3)]},  # unhashable task
    {"action": "ANNOTATIONS_CREATED", "annotation": [annotation(21, 3)], "task": [{**task(3), "id": {}}]},
    {"action": "ANNOTATIONS_CREATED", "annotations": 3, "tasks": "abc"},
    {"action": "ANNOTATION_CREATED", "annotation": annotation(), "task": [task()]},
])
def test_malformed_containers_are_refused_not_raised(doc):
    out = parse(doc)
    assert out.answers == [] and out.deleted == []
    assert all(r.reason in ("webhook without its task",) for r in out.refused)


def test_a_huge_value_is_echoed_clipped():
    huge = "9" * 5000
    out = parse(webhook(ann={**annotation(), "updated_at": huge, "created_at": None}))
    (r,) = out.refused
    assert len(r.reason) < 260 and "5000 characters" in r.reason
    out = parse(webhook(p=project(int("9" * 4000))))
    assert len(out.refused[0].reason) < 260
    out = parse(webhook(ann=annotation(project=int("8" * 4000)), p={}))
    assert len(out.refused[0].reason) < 260


# --- mutated bodies never break the parser ----------------------------------------------------
json_leaf = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400)
             | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
             | st.text(min_size=300, max_size=3000) | st.just("") | st.just("2026-12-02T00:56:05Z"))
json_junk = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_webhooks(draw: st.DrawFn) -> dict[str, Any]:
    base = draw(st.sampled_from([
        webhook(), webhook("ANNOTATION_UPDATED"), webhook(ann=annotation(12, result=[], cancelled=True)),
        {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 4}, {"id": 5}], "project": project()},
        {"action": "ANNOTATIONS_CREATED", "project": project(), "annotation": [annotation(21, 3), annotation(22, 4)],
         "task": [task(3, "item-3"), task(4, "item-4")]},
    ]))
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        how = draw(st.sampled_from(["drop", "junk", "huge", "type"]))
        if how == "drop":
            del parent[key]
        elif how == "huge":
            parent[key] = draw(st.sampled_from(["x" * 100_000, 10**4000, [{"id": 1}] * 50, {"id": "9" * 5000}]))
        elif how == "type":
            v = parent[key]
            parent[key] = [v] if not isinstance(v, list) else (v[0] if v else {})
        else:
            parent[key] = draw(json_junk)
    return doc


def _annotations_in(doc: Any) -> int:
    """How many annotation objects an answer webhook carries (what must each come out once)."""
    if not isinstance(doc, dict) or doc.get("action") not in ls.ANSWER_ACTIONS:
        return 0
    n = 1 if isinstance(doc.get("annotation"), dict) else 0
    for key in ("annotation", "annotations"):
        if isinstance(doc.get(key), list):
            n += sum(isinstance(a, dict) for a in doc[key])
    return n


@given(mutated_webhooks())
@settings(max_examples=300, deadline=None)
def test_mutated_webhooks_never_raise_and_every_annotation_is_judged_once(doc):
    json.dumps(doc, default=str)  # still a JSON-like body
    out = parse(doc)
    answered = {a.answer_id for a in out.answers}
    refused = {label_studio_answer_id(PROJECT, r.annotation_id) for r in out.refused
               if isinstance(r.annotation_id, int) and not isinstance(r.annotation_id, bool)}
    assert not answered & refused  # never both
    carried = _annotations_in(doc)
    webhook_level = any(r.annotation_id is None and r.task_id is None and "project" in r.reason for r in out.refused)
    if carried and not webhook_level:
        assert len(out.answers) + len(out.refused) == carried  # each one an answer or a refusal
    for a in out.answers:
        assert a.item_id and isinstance(a.item_id, str) and a.labeled_at is not None and a.labeled_at.tzinfo
        assert a.answer_id.startswith(f"label-studio:{PROJECT}:")
        assert (a.retracted and a.label == "") or (not a.retracted and a.label in CLASSES)
    for r in out.refused:
        assert len(r.reason) <= 300, r.reason[:400]  # at most MAX_ECHO (200) characters of input
        d = r.as_dict()
        assert len(str(d["task"])) <= 230 and len(str(d["annotation"])) <= 230, {k: str(v)[:300] for k, v in d.items()}
        json.dumps(d)
    for answer_id in out.deleted:
        assert answer_id.startswith(f"label-studio:{PROJECT}:")


@given(json_junk)
@settings(max_examples=200, deadline=None)
def test_arbitrary_json_never_raises(doc):
    out = parse(doc)
    assert all(len(r.reason) <= 300 for r in out.refused)
    if isinstance(doc, dict):
        out = parse({"action": "ANNOTATION_CREATED", **doc})
        out = parse({**doc, "action": "ANNOTATIONS_DELETED"})
        assert all(len(r.reason) <= 300 for r in out.refused)
