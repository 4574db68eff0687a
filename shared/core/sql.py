"""DuckDB SQL for the tables and the selection contract (text only: the adapter runs it).

Everything a selection ranks by is computed here once per prediction, at ingestion (the role the
collector's NumPy scores and the materialized view play in ADX): least confidence, margin and entropy
from the probabilities, and the random key ``md5("<seed>:<item id>")`` for the store's configured
seed. ``latest_predictions`` keeps the latest prediction per (model, version, item) with those
values, so a selection reads one narrow row per item and never the probability vectors. Tested
against :mod:`shared.core.uncertainty`. Values always travel as parameters, never formatted into the
text (table names and constant thresholds are the only generated parts).

Three layouts keep a 10M-row selection fast and its memory bounded (docs/selection.md):
- **Bound first, rows second.** A top-k first finds the k-th best key over the numeric score column
  alone (:func:`prebound_query` guesses from a sample, :func:`bound_query` makes it exact), then
  reads ids and URIs of the rows within that bound only (:func:`top_k_query`); see
  :func:`bound_size` for why the bound is exact despite exclusions.
- **Margin bands.** ``predictions`` is a view over one table per band of margin
  (:data:`BAND_EDGES`). A margin shortlist fetches its probabilities and embeddings from the tables
  of its own bands only: rows within ~4x of the shortlist's largest margin, not the whole table.
- **Labeled embeddings.** ``labeled_embeddings`` keeps each labeled item's latest embedding, so the
  labeled set is as large as the labels.
"""

from __future__ import annotations

# A prediction's band: b such that margin is in [4^-(b+1), 4^-b); the last band holds everything
# smaller (exact ties at 0 included). Edges are powers of two, exact in binary floating point.
BAND_EDGES = tuple(4.0**-b for b in range(1, 12))
BANDS = len(BAND_EDGES) + 1


def band_of(margin: float) -> int:
    """The band a margin falls in (the SQL ``band`` expression, in Python)."""
    return sum(margin < edge for edge in BAND_EDGES)


def band_table(band: int) -> str:
    return f"predictions_band_{band:02d}"


_BAND_SQL = " + ".join(f"(margin < {edge!r})::INTEGER" for edge in BAND_EDGES)

# The columns of ADX's Predictions (infra/adx/01-tables.kql), snake_case: the schema's single source.
_PREDICTION_COLUMNS = """
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
    entropy          DOUBLE    NOT NULL,
    random_key       VARCHAR   NOT NULL,
    random_seed      BIGINT    NOT NULL
"""
PREDICTION_COLUMNS = tuple(line.split()[0] for line in _PREDICTION_COLUMNS.strip().splitlines())

SCHEMA = "".join(f"CREATE TABLE IF NOT EXISTS {band_table(b)} ({_PREDICTION_COLUMNS});\n" for b in range(BANDS)) + (
    "CREATE OR REPLACE VIEW predictions AS "
    + " UNION ALL ".join(f"SELECT * FROM {band_table(b)}" for b in range(BANDS)) + ";\n"
) + """
-- The latest prediction per (model, version, item) with its scores, maintained at ingestion so
-- that selection does not group millions of rows per query (ADX: the LatestPredictions view).
-- random_key is the same MD5 as predictions.random_key, held as the 128-bit number its hex spells:
-- the same order, compared as a number.
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
    random_key       UHUGEINT  NOT NULL,
    random_seed      BIGINT    NOT NULL,
    PRIMARY KEY (model_name, model_version, item_id)
);
-- The latest embedded prediction per (model, labeled item), kept up to date when labels are recorded
-- and when predictions arrive, so that the labeled set a distance strategy needs is read from a
-- table as large as the labels, not found by scanning every prediction.
CREATE TABLE IF NOT EXISTS labeled_embeddings (
    model_name    VARCHAR   NOT NULL,
    item_id       VARCHAR   NOT NULL,
    scored_at     TIMESTAMP NOT NULL,
    prediction_id VARCHAR   NOT NULL,
    embedding     FLOAT[]   NOT NULL,
    PRIMARY KEY (model_name, item_id)
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
    labeled_at    TIMESTAMP NOT NULL,
    recorded_at   TIMESTAMP NOT NULL,
    answer_id     VARCHAR   NOT NULL,
    retracted     BOOLEAN   NOT NULL
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

# The random key of shared.core.uncertainty.random_keys, for the seed $seed: lowercase MD5 hex.
_RANDOM_KEY = "md5(CAST($seed AS VARCHAR) || ':' || {item})"

# Ingestion, in one transaction: new rows (unknown prediction ids, once each) get their scores and
# random key computed in SQL (parameter: $seed), land in their band's table, and move
# ``latest_predictions`` forward.
STAGE_NEW_ROWS = f"""
CREATE OR REPLACE TEMP TABLE new_rows AS
SELECT *, {_BAND_SQL} AS band FROM (
SELECT s.prediction_id, s.item_id, s.item_uri, s.model_name, s.model_version, s.predicted_label,
       s.scored_at, s.probabilities, s.embedding, now()::TIMESTAMP AS ingested_at,
       1.0 - list_max(list_transform(s.probabilities, lambda x: x::DOUBLE)) AS least_confidence,
       list_sort(list_transform(s.probabilities, lambda x: x::DOUBLE), 'DESC')[1]
         - list_sort(list_transform(s.probabilities, lambda x: x::DOUBLE), 'DESC')[2] AS margin,
       -list_sum(list_transform(s.probabilities,
                 lambda x: CASE WHEN x > 0 THEN x::DOUBLE * ln(x::DOUBLE) ELSE 0.0 END)) AS entropy,
       {_RANDOM_KEY.format(item="s.item_id")} AS random_key, $seed::BIGINT AS random_seed
FROM (SELECT * FROM staged QUALIFY row_number() OVER (PARTITION BY prediction_id) = 1) AS s
WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE p.prediction_id = s.prediction_id))
"""

BANDS_PRESENT = "SELECT DISTINCT band FROM new_rows ORDER BY band"


def insert_band(band: int) -> str:
    """Append the staged rows of one band to its table (parameter: none; ``band`` is generated)."""
    return (f"INSERT INTO {band_table(band)} SELECT {', '.join(PREDICTION_COLUMNS)} FROM new_rows "
            f"WHERE band = {int(band)}")


UPSERT_LATEST = """
INSERT INTO latest_predictions
SELECT model_name, model_version, item_id, prediction_id, item_uri, scored_at,
       least_confidence, margin, entropy, ('0x' || random_key)::UHUGEINT, random_seed
FROM new_rows
QUALIFY row_number() OVER (
    PARTITION BY model_name, model_version, item_id ORDER BY scored_at DESC, prediction_id DESC) = 1
ON CONFLICT (model_name, model_version, item_id) DO UPDATE SET
    prediction_id = excluded.prediction_id, item_uri = excluded.item_uri,
    scored_at = excluded.scored_at, least_confidence = excluded.least_confidence,
    margin = excluded.margin, entropy = excluded.entropy,
    random_key = excluded.random_key, random_seed = excluded.random_seed
WHERE excluded.scored_at > latest_predictions.scored_at
   OR (excluded.scored_at = latest_predictions.scored_at
       AND excluded.prediction_id > latest_predictions.prediction_id)
"""


def upsert_labeled_embeddings(source: str, labeled: str) -> str:
    """Move ``labeled_embeddings`` forward from the embedded rows of ``source`` (a table of prediction
    rows) whose item is in ``labeled`` (a relation with an ``item_id`` column): latest scored_at, then
    highest prediction id, per (model, item). Both names are fixed by the adapter, never user values."""
    return f"""
INSERT INTO labeled_embeddings
SELECT r.model_name, r.item_id, r.scored_at, r.prediction_id, r.embedding
FROM {source} r SEMI JOIN {labeled} b ON r.item_id = b.item_id
WHERE r.embedding IS NOT NULL
QUALIFY row_number() OVER (
    PARTITION BY r.model_name, r.item_id ORDER BY r.scored_at DESC, r.prediction_id DESC) = 1
ON CONFLICT (model_name, item_id) DO UPDATE SET
    scored_at = excluded.scored_at, prediction_id = excluded.prediction_id, embedding = excluded.embedding
WHERE excluded.scored_at > labeled_embeddings.scored_at
   OR (excluded.scored_at = labeled_embeddings.scored_at
       AND excluded.prediction_id > labeled_embeddings.prediction_id)
"""


# The answer rule of shared/core/answers.py: each answer's state (latest labeled_at, then recorded_at),
# then per item the latest non-retracted state by labeled_at, ties to the greater answer_id.
ANSWER_STATES = """
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY item_id, answer_id ORDER BY labeled_at DESC, recorded_at DESC) AS rn
    FROM labels) WHERE rn = 1"""
CURRENT_LABELS = f"""
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY labeled_at DESC, answer_id DESC) AS rn
    FROM ({ANSWER_STATES}) WHERE NOT retracted) WHERE rn = 1"""

LABELED_SET_QUERY = f"""
WITH b AS ({CURRENT_LABELS})
SELECT b.item_id, b.label, e.embedding
FROM b LEFT JOIN labeled_embeddings e ON e.item_id = b.item_id AND e.model_name = $model_name
ORDER BY b.item_id
"""

# The selection contract over latest_predictions (alias l): one model version, a window. Exclusions
# (items selected or labeled before) are applied separately, to the few rows within the bound.
_IN_FILTER = """l.model_name = $model_name AND l.model_version = $model_version
  AND l.scored_at BETWEEN $window_start AND $window_end"""
_NOT_EXCLUDED = """NOT EXISTS (SELECT 1 FROM selections s WHERE s.item_id = l.item_id)
  AND NOT EXISTS (SELECT 1 FROM labels b WHERE b.item_id = l.item_id)"""

# How many items exclusion can remove at most: every item ever selected or labeled.
EXCLUDED_COUNT = "SELECT count(*) FROM (SELECT item_id FROM selections UNION SELECT item_id FROM labels)"

# Ranked strategies: (score column, sort key, descending). Random's key is the stored one for rows
# keyed with the asked seed and md5 computed here for any other row (a store keyed with seed 0 asked
# for seed 3 computes every key, as before); it is split in two branches so that the stored case
# reads no item id at all.
_RANKED = {
    "least_confidence": ("l.least_confidence", "l.least_confidence", True),
    "margin": ("l.margin", "l.margin", False),
    "entropy": ("l.entropy", "l.entropy", True),
    "random": ("0.0", "l.random_key", False),
}
_COMPUTED_KEY = f"('0x' || {_RANDOM_KEY.format(item='l.item_id')})::UHUGEINT"


def _ranked(strategy: str) -> tuple[str, str, bool]:
    try:
        return _RANKED[strategy]
    except KeyError:
        raise ValueError(f"no SQL for strategy {strategy!r}; known: {', '.join(_RANKED)}") from None


def _branches(strategy: str, where: str) -> list[tuple[str, str]]:
    """(sort key, WHERE clause) per branch of a ranked scan (random has two, by key origin)."""
    _, key, _ = _ranked(strategy)
    if strategy != "random":
        return [(key, where)]
    return [(key, f"{where} AND l.random_seed = $seed"), (_COMPUTED_KEY, f"{where} AND l.random_seed <> $seed")]


def bound_size(k: int, excluded: int) -> int:
    """How many best keys the bound is taken over: k plus every item exclusion could remove. The
    k best non-excluded candidates are all among the (k + excluded) best candidates, so each has a
    key within the bound, and filtering by it before excluding loses none of them."""
    return int(k) + int(excluded)


def prebound_query(strategy: str, percent: float) -> str:
    """A guess at a bound, from a ``percent`` system sample of the table: the ``$m``-th best key of
    the sample (the caller asks for about twice the share of n the sample holds). Only a guess:
    :func:`bound_query` with ``$pre`` checks it and the caller falls back when it is too tight."""
    _, _, desc = _ranked(strategy)
    agg = "max" if desc else "min"
    sample = f"TABLESAMPLE {float(percent)!r}% (system, 7)"
    keys = " UNION ALL ".join(
        f"SELECT {key} AS key FROM latest_predictions l {sample} WHERE {where}"
        for key, where in _branches(strategy, _IN_FILTER))
    return f"SELECT list_last({agg}(key, $m)) FROM ({keys})"


def bound_query(strategy: str, *, within_pre: bool = False) -> str:
    """How many of the ``$n`` best candidates by ``strategy`` (before exclusions) there are, and the
    worst key among them (NULL when there are none). Reads the sort key column only;
    ``min(x, n)``/``max(x, n)`` keep a heap of n, where ORDER BY ... LIMIT n turns into a full sort
    once n is a few thousand. ``within_pre`` feeds the heap only keys at least as good as ``$pre``:
    when n of them come back, the bound is exact (n keys are that good, so the n best all are)."""
    _, _, desc = _ranked(strategy)
    agg, op = ("max", ">=") if desc else ("min", "<=")
    pre = ("CAST($pre AS UHUGEINT)" if strategy == "random" else "$pre") if within_pre else ""
    keys = " UNION ALL ".join(
        f"SELECT {key} AS key FROM latest_predictions l WHERE {where}" + (f" AND {key} {op} {pre}" if pre else "")
        for key, where in _branches(strategy, _IN_FILTER))
    return f"SELECT len(best), list_last(best) FROM (SELECT {agg}(key, $n) AS best FROM ({keys}))"


def top_k_query(strategy: str) -> str:
    """The top ``$k`` of a ranked strategy among candidates within ``$bound`` (from :func:`bound_query`),
    exclusions applied, ties by item id (parameters: model, window, bound, k, and seed for random)."""
    score, _, desc = _ranked(strategy)
    order = "DESC" if desc else "ASC"
    op = ">=" if desc else "<="
    bound = "CAST($bound AS UHUGEINT)" if strategy == "random" else "$bound"
    parts = " UNION ALL ".join(
        f"SELECT l.item_id, {score} AS score, l.item_uri, {key} AS key FROM latest_predictions l "
        f"WHERE {where} AND {key} {op} {bound} AND {_NOT_EXCLUDED}"
        for key, where in _branches(strategy, _IN_FILTER))
    return f"SELECT item_id, score, item_uri FROM ({parts}) ORDER BY key {order}, item_id ASC LIMIT $k"


# The batch-aware shortlist: the $limit most uncertain candidates by margin within $bound, with the
# prediction id their probabilities and embedding are fetched by (from the bands of
# :func:`payload_query` only).
SHORTLIST_QUERY = f"""
SELECT l.item_id, l.item_uri, l.prediction_id, l.margin FROM latest_predictions l
WHERE {_IN_FILTER} AND l.margin <= $bound AND {_NOT_EXCLUDED}
ORDER BY l.margin ASC, l.item_id ASC LIMIT $limit
"""


def payload_query(max_margin: float) -> str:
    """The shortlist in the registered relation ``wanted`` (item_id, item_uri, prediction_id) with
    its probabilities and embeddings, sorted by item id, read from the band tables that can hold a
    margin of at most ``max_margin``."""
    bands = " UNION ALL ".join(
        f"SELECT p.prediction_id, p.probabilities, p.embedding FROM {band_table(b)} p "
        "SEMI JOIN wanted w ON p.prediction_id = w.prediction_id"
        for b in range(band_of(max_margin), BANDS))
    return (f"SELECT w.item_id, w.item_uri, v.probabilities, v.embedding FROM wanted w "
            f"JOIN ({bands}) v ON v.prediction_id = w.prediction_id ORDER BY w.item_id")


# Every candidate with its probabilities and embedding (no shortlist: grows with the candidates).
CANDIDATES_QUERY = f"""
SELECT l.item_id, l.item_uri, p.probabilities, p.embedding
FROM latest_predictions l JOIN predictions p ON p.prediction_id = l.prediction_id
WHERE {_IN_FILTER} AND {_NOT_EXCLUDED}
ORDER BY l.item_id
"""
