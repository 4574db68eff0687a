"""docs/scoring-result.schema.json is generated from the pydantic model and may not drift from it."""

from __future__ import annotations

import json
from pathlib import Path

from shared.core.payload import ScoringRecord, batch_json_schema

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "scoring-result.schema.json"
REGENERATE = ("python -c \"import json; from shared.core.payload import batch_json_schema; "
              "open('docs/scoring-result.schema.json', 'w').write(json.dumps(batch_json_schema(), indent=2) + '\\n')\"")


def test_published_schema_matches_the_model():
    assert json.loads(SCHEMA.read_text()) == batch_json_schema(), f"regenerate it: {REGENERATE}"


def test_schema_names_every_field_and_the_required_ones():
    schema = batch_json_schema()
    record = schema["$defs"]["ScoringRecord"]
    assert set(record["properties"]) == set(ScoringRecord.model_fields)
    assert set(record["required"]) == {"item_id", "model_name", "model_version", "probabilities",
                                       "predicted_label", "scored_at"}
    assert record["additionalProperties"] is False
    assert schema["type"] == "array"
