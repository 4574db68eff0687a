import base64
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from shared.core import uncertainty
from shared.core.payload import (
    LANDING_FIELDS,
    derive_prediction_id,
    landing_jsonl,
    parse_landing_jsonl,
    validate_batch,
)
from shared.errors import BatchRejectedError

CLASSES = ("cat", "dog", "eel")


def record(**over):
    r = {
        "item_id": "img-1", "item_uri": "https://x/img-1.png", "model_name": "m", "model_version": "1",
        "probabilities": [0.7, 0.2, 0.1], "predicted_label": "cat", "scored_at": "2026-03-01T10:00:00Z",
    }
    r.update(over)
    return r


def check(payload, **kw):
    return validate_batch(payload, classes_of=lambda n, v: CLASSES if (n, v) == ("m", "1") else None,
                          max_records=kw.get("max_records", 1000), max_item_bytes=kw.get("max_item_bytes", 100))


def reasons(payload, **kw):
    with pytest.raises(BatchRejectedError) as info:
        check(payload, **kw)
    return [(p.where, p.field, p.reason) for p in info.value.problems]


def test_valid_batch_gets_deterministic_ids():
    out = check([record(), record(item_id="img-2")])
    assert [r.prediction_id for r, _, _ in out] == [derive_prediction_id(r) for r, _, _ in out]
    assert out[0][1] == CLASSES


@pytest.mark.parametrize(
    ("over", "field", "needle"),
    [
        ({"probabilities": [0.7, 0.2, float("nan")]}, "probabilities", "finite"),
        ({"probabilities": [1.2, -0.1, -0.1]}, "probabilities", "negative"),
        ({"probabilities": [0.5, 0.2, 0.1]}, "probabilities", "sum to 0.8"),
        ({"probabilities": [0.5, 0.5]}, "probabilities", "2 probabilities for 3 classes"),
        ({"predicted_label": "fox"}, "predicted_label", "not one of"),
        ({"item_id": "../etc"}, "item_id", "path separators"),
        ({"item_id": "a..b"}, "item_id", ".."),
        ({"model_version": "9"}, "class_names", "not registered"),
        ({"item_uri": None}, "item_uri", "exactly one"),
        ({"item_uri": None, "item_base64": "***"}, "item_base64", "base64"),
        ({"item_uri": None, "item_base64": base64.b64encode(b"x" * 101).decode()}, "item_base64", "limit"),
        ({"scored_at": "2026-03-01T10:00:00"}, "scored_at", "timezone"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_each_bad_field_is_named(over, field, needle):
    got = reasons([record(), record(**{"item_id": "img-2", **over})])
    assert any(w == 1 and f == field and needle in r for w, f, r in got), got


def test_every_problem_of_every_record_is_reported():
    got = reasons([record(predicted_label="fox"), record(item_id="img-2", probabilities=[0.1, 0.1, 0.1])])
    assert {(w, f) for w, f, _ in got} == {(0, "predicted_label"), (1, "probabilities")}


def test_duplicate_prediction_id_in_one_batch():
    got = reasons([record(prediction_id="p1"), record(item_id="img-2", prediction_id="p1")])
    assert got == [(1, "prediction_id", "duplicate of record 0 in this batch")]


def test_batch_shape_limits():
    assert "limit is 1" in reasons([record(), record()], max_records=1)[0][2]
    with pytest.raises(BatchRejectedError, match="JSON array"):
        check({"nope": 1})
    assert reasons([])[0][2] == "no records"
    assert check({"records": [record()]})


def test_the_one_pass_path_gives_the_same_records_or_defers():
    import json

    from pydantic_core import from_json

    from shared.core.payload import records_from_json

    body = json.dumps([record(), record(item_id="img-2", prediction_id="p2")]).encode()
    fast = records_from_json(body, max_records=10)
    assert fast is not None
    assert [r.model_dump() for r, _, _ in check(fast)] == [r.model_dump() for r, _, _ in check(from_json(body))]
    # anything that needs the full path to be named defers to it
    assert records_from_json(json.dumps({"records": [record()]}).encode(), max_records=10) is None
    assert records_from_json(body, max_records=1) is None
    assert records_from_json(b'[{"item_id": "x", "probabilities": [NaN, 1]}]', max_records=10) is None
    assert records_from_json(b"[]", max_records=10) is None
    assert records_from_json(b"[{", max_records=10) is None


# --- hostile input (issue 13) ----------------------------------------------------------------------

def strict(payload, **kw):
    """Both ways a body reaches validate_batch: the one-pass JSON path (or its refusal) and parsed JSON."""
    import json

    from pydantic_core import from_json

    from shared.core.payload import records_from_json

    body = json.dumps(payload).encode()
    fast = records_from_json(body, max_records=1000)
    with pytest.raises(BatchRejectedError) as info:
        validate_batch(fast if fast is not None else from_json(body),
                       classes_of=lambda n, v: CLASSES if (n, v) == ("m", "1") else None,
                       max_records=1000, max_item_bytes=100, **kw)
    return [(p.where, p.field, p.reason) for p in info.value.problems]


@pytest.mark.parametrize(("field", "values", "kind"), [
    ("probabilities", [True, False, False], "a boolean (true)"),
    ("probabilities", ["0.7", "0.2", "0.1"], 'a string ("0.7")'),
    ("probabilities", [0.7, None, 0.1], "not a number (null)"),
    ("embedding", [True, 0.5], "a boolean (true)"),
    ("embedding", [0.1, "2.5"], 'a string ("2.5")'),
])
def test_numbers_must_be_json_numbers(field, values, kind):
    got = strict([record(), record(item_id="img-2", **{field: values})])
    (problem,) = got
    assert problem[:2] == (1, field) and "JSON numbers" in problem[2] and kind in problem[2], problem
    bad = sum(not isinstance(v, float) for v in values)
    assert f"{bad} {'is' if bad == 1 else 'are'} not" in problem[2]


def test_integers_are_json_numbers_too():
    (rec, _, _), = check([record(probabilities=[1, 0, 0], embedding=[0, 1, 2])])
    assert rec.probabilities == [1.0, 0.0, 0.0] and rec.embedding == [0.0, 1.0, 2.0]


def test_embedding_length_is_capped():
    assert check([record(embedding=[0.5] * 4096)])
    got = strict([record(embedding=[0.5] * 4097)])
    assert got == [(0, "embedding", "4097 values, the limit is 4096 (AL_MAX_EMBEDDING_DIM)")]
    got = strict([record(embedding=[0.5] * 9)], max_embedding_dim=8)
    assert got == [(0, "embedding", "9 values, the limit is 8 (AL_MAX_EMBEDDING_DIM)")]
    assert strict([record(embedding=[])])[0][:2] == (0, "embedding")  # an empty vector is no embedding
    # finite in JSON, infinite once stored as float32
    assert strict([record(embedding=[1e308, 0.5])]) == [
        (0, "embedding", "values must lie within ±3.403e+38 (embeddings are stored as float32)")]


def test_one_embedding_length_per_model_version():
    batch = [record(embedding=[0.1, 0.2, 0.3]), record(item_id="img-2", embedding=[0.1, 0.2]),
             record(item_id="img-3", embedding=[0.1, 0.2, 0.3])]
    got = strict(batch)
    assert got == [(1, "embedding", "2 values, but model 'm' version '1' has embeddings of 3 (at record 0); "
                                    "one length per model version")]
    # The stored length wins over the batch's first.
    got = strict(batch, embedding_dim_of=lambda n, v: 2)
    assert [(w, f) for w, f, _ in got] == [(0, "embedding"), (2, "embedding")]
    assert "has embeddings of 2 (in the store)" in got[0][2]


def test_one_embedding_length_per_batch_across_versions():
    other = record(item_id="img-2", model_version="2", class_names=list(CLASSES), embedding=[0.5, 0.5])
    got = strict([record(embedding=[0.1, 0.2, 0.3]), other])
    assert got == [(1, "embedding", "2 values, but record 0 has 3: a batch's embeddings need one length "
                                    "(send each model version on its own)")]


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "1999-12-31T23:59:59Z",
                                  "2000-01-01T00:30:00+01:00"])
def test_scored_at_before_the_bound_is_implausible(when):
    got = strict([record(scored_at=when)])
    assert len(got) == 1 and got[0][:2] == (0, "scored_at") and "AL_MIN_SCORED_AT" in got[0][2], got


def test_scored_at_bound_is_inclusive_and_configurable():
    from datetime import UTC, datetime

    assert check([record(scored_at="2000-01-01T00:00:00Z")])
    got = strict([record(scored_at="2019-06-01T00:00:00Z")], min_scored_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert got[0][:2] == (0, "scored_at") and "2020-01-01" in got[0][2]


def test_scored_at_that_overflows_in_utc_is_refused_not_a_crash():
    got = strict([record(scored_at="9999-12-31T23:59:59-01:00")])
    assert got == [(0, "scored_at", "out of range once converted to UTC")]


def test_item_uris_are_held_to_the_policy():
    from shared.core.item_uris import ItemUriPolicy

    policy = ItemUriPolicy.of(roots=["file:///data/blobs/"])
    assert check([record(item_uri="file:///data/blobs/items/a.png")])
    got = strict([record(item_uri="file:///data/blobs/items/a.png"), record(item_id="img-2", item_uri="ftp://x/y"),
                  record(item_id="img-3", item_uri="file:///etc/passwd")], item_uris=policy)
    assert [(w, f) for w, f, _ in got] == [(1, "item_uri"), (2, "item_uri")]
    assert "scheme 'ftp'" in got[0][2] and "outside the object store" in got[1][2]
def test_landing_lines_carry_the_scores_and_random_key_of_the_numpy_core():
    """Computed once, at landing, with shared.core.uncertainty: ADX stores and ranks by these columns."""
    batch = [record(), record(item_id="img-2", probabilities=[0.4, 0.4, 0.2]),
             record(item_id="img-3", model_version="2", probabilities=[0.5, 0.5], class_names=["a", "b"],
                    predicted_label="a")]
    out = check(batch)
    recs = [r for r, _, _ in out]
    landed = landing_jsonl(recs, ["u"] * 3, datetime(2026, 3, 1, tzinfo=UTC), seed=7)
    lines = [json.loads(x) for x in landed.splitlines()]
    assert [list(x) for x in lines] == [list(LANDING_FIELDS)] * 3
    for rec, line in zip(recs, lines, strict=True):
        p = np.array([rec.probabilities])
        assert line["least_confidence"] == uncertainty.least_confidence(p)[0]
        assert line["margin"] == uncertainty.margin(p)[0] and line["entropy"] == uncertainty.entropy(p)[0]
        assert line["random_key"] == uncertainty.random_keys([rec.item_id], 7)[0] and line["random_seed"] == 7
    assert lines[1]["margin"] == 0.0  # a tie on top


def test_a_landing_line_from_before_the_scores_still_parses():
    old = {f: "x" for f in ("prediction_id", "item_id", "item_uri", "model_name", "model_version",
                            "predicted_label", "scored_at", "ingested_at")} | {"probabilities": [1.0, 0.0],
                                                                              "embedding": None}
    assert parse_landing_jsonl(json.dumps(old).encode()) == [old]
