"""DuckDB SQL for the tables and the selection contract (text only: the adapter runs it).

The uncertainty scores are computed here in SQL, once per prediction at ingestion (the same idea
as an ADX update policy), and tested against :mod:`shared.core.uncertainty`. Values always travel
as parameters, never formatted into the text.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    prediction_id    VARCHAR   NOT NULL,
    item_id          VARCHAR   NOT NULL,
    item_uri         VARCHAR   NOT NULL,
    model_name       VARCHAR   NOT NULL,
    model_version    VARCHAR   NOT NULL,
    predicted_label  VARCHAR   NOT NULL,
    scored_at        TIMESTAMP NOT NULL,
    probabilities    FLOAT[]   NOT NULL,
    embedding        FLOAT[],
    ingested_at      TIMESTAMP NOT NULL,
    least_confidence DOUBLE    NOT NULL,
    margin           DOUBLE    NOT NULL,
    entropy          DOUBLE    NOT NULL
);
-- The latest prediction per (model, version, item) with its scores, maintained at ingestion so
-- that selection does not group millions of rows per query (an ADX materialized view's role).
CREATE TABLE IF NOT EXISTS latest_predictions (
    model_name       VARCHAR   NOT NULL,
    model_version    VARCHAR   NOT NULL,
    item_id          VARCHAR   NOT NULL,
    prediction_id    VARCHAR   NOT NULL,
    item_uri         VARCHAR   NOT NULL,
    scored_at        TIMESTAMP NOT NULL,
    least_confidence DOUBLE    NOT NULL,
    margin           DOUBLE    NOT NULL,
    entropy          DOUBLE    NOT NULL,
    PRIMARY KEY (model_name, model_version, item_id)
);
CREATE TABLE IF NOT EXISTS selections (
    batch_id      VARCHAR   NOT NULL,
    item_id       VARCHAR   NOT NULL,
    item_uri      VARCHAR   NOT NULL,
    model_name    VARCHAR   NOT NULL,
    model_version VARCHAR   NOT NULL,
    strategy      VARCHAR   NOT NULL,
    score         DOUBLE    NOT NULL,
    rank          INTEGER   NOT NULL,
    selected_at   TIMESTAMP NOT NULL,
    handed_off    BOOLEAN   NOT NULL DEFAULT FALSE,
    PRIMARY KEY (batch_id, item_id)
);
CREATE TABLE IF NOT EXISTS labels (
    item_id       VARCHAR   NOT NULL,
    label         VARCHAR   NOT NULL,
    export_id     VARCHAR   NOT NULL,
    export_sha256 VARCHAR   NOT NULL,
    labeled_at    TIMESTAMP,
    recorded_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (item_id, export_sha256)
);
CREATE TABLE IF NOT EXISTS model_versions (
    model_name        VARCHAR   NOT NULL,
    version           VARCHAR   NOT NULL,
    class_names       VARCHAR[] NOT NULL,
    metrics           VARCHAR   NOT NULL,
    artifact_uri      VARCHAR   NOT NULL,
    status            VARCHAR   NOT NULL,
    created_at        TIMESTAMP,
    trained_on_labels INTEGER   NOT NULL,
    PRIMARY KEY (model_name, version)
);
"""

# Ingestion, in one transaction: new rows (unknown prediction ids, once each) get their scores
# computed in SQL, land in ``predictions``, and move ``latest_predictions`` forward.
STAGE_NEW_ROWS = """
CREATE OR REPLACE TEMP TABLE new_rows AS
SELECT s.prediction_id, s.item_id, s.item_uri, s.model_name, s.model_version, s.predicted_label,
       s.scored_at, s.probabilities, s.embedding, now()::TIMESTAMP AS ingested_at,
       1.0 - list_max(list_transform(s.probabilities, lambda x: x::DOUBLE)) AS least_confidence,
       list_sort(list_transform(s.probabilities, lambda x: x::DOUBLE), 'DESC')[1]
         - list_sort(list_transform(s.probabilities, lambda x: x::DOUBLE), 'DESC')[2] AS margin,
       -list_sum(list_transform(s.probabilities,
                 lambda x: CASE WHEN x > 0 THEN x::DOUBLE * ln(x::DOUBLE) ELSE 0.0 END)) AS entropy
FROM (SELECT * FROM staged QUALIFY row_number() OVER (PARTITION BY prediction_id) = 1) AS s
WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE p.prediction_id = s.prediction_id)
"""

INSERT_NEW_ROWS = "INSERT INTO predictions SELECT * FROM new_rows"

UPSERT_LATEST = """
INSERT INTO latest_predictions
SELECT model_name, model_version, item_id, prediction_id, item_uri, scored_at,
       least_confidence, margin, entropy
FROM new_rows
QUALIFY row_number() OVER (
    PARTITION BY model_name, model_version, item_id ORDER BY scored_at DESC, prediction_id DESC) = 1
ON CONFLICT (model_name, model_version, item_id) DO UPDATE SET
    prediction_id = excluded.prediction_id, item_uri = excluded.item_uri,
    scored_at = excluded.scored_at, least_confidence = excluded.least_confidence,
    margin = excluded.margin, entropy = excluded.entropy
WHERE excluded.scored_at > latest_predictions.scored_at
   OR (excluded.scored_at = latest_predictions.scored_at
       AND excluded.prediction_id > latest_predictions.prediction_id)
"""

_CANDIDATES = """
WITH candidates AS (
    SELECT l.*
    FROM latest_predictions l
    WHERE l.model_name = $model_name AND l.model_version = $model_version
      AND l.scored_at BETWEEN $window_start AND $window_end
      AND NOT EXISTS (SELECT 1 FROM selections s WHERE s.item_id = l.item_id)
      AND NOT EXISTS (SELECT 1 FROM labels b WHERE b.item_id = l.item_id)
)
"""

_RANKED_ORDER = {
    "least_confidence": ("least_confidence", "least_confidence DESC, item_id ASC"),
    "margin": ("margin", "margin ASC, item_id ASC"),
    "entropy": ("entropy", "entropy DESC, item_id ASC"),
    "random": ("0.0", "md5(CAST($seed AS VARCHAR) || ':' || item_id) ASC, item_id ASC"),
}


def top_k_query(strategy: str) -> str:
    """The top-``$k`` query of a ranked strategy (parameters: model, window, k, seed)."""
    try:
        score, order = _RANKED_ORDER[strategy]
    except KeyError:
        raise ValueError(f"no SQL for strategy {strategy!r}; known: {', '.join(_RANKED_ORDER)}") from None
    return (f"{_CANDIDATES}SELECT item_id, {score} AS score, item_uri FROM candidates "
            f"ORDER BY {order} LIMIT $k")


CANDIDATES_QUERY = _CANDIDATES + """
SELECT c.item_id, c.item_uri, p.probabilities, p.embedding
FROM candidates c JOIN predictions p ON p.prediction_id = c.prediction_id
ORDER BY c.item_id
"""

# The ``$limit`` most uncertain candidates by margin, the shortlist a batch-aware strategy picks from.
SHORTLIST_QUERY = _CANDIDATES + """
, shortlist AS (SELECT * FROM candidates ORDER BY margin ASC, item_id ASC LIMIT $limit)
SELECT c.item_id, c.item_uri, p.probabilities, p.embedding
FROM shortlist c JOIN predictions p ON p.prediction_id = c.prediction_id
ORDER BY c.item_id
"""
