"""Shared fixtures: small prediction tables with the awkward cases the selection contract names."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Tests run single-threaded BLAS: results must not depend on thread scheduling, and CI has 2 cores.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from shared.core.records import PredictionBatch  # noqa: E402

T0 = np.datetime64("2026-03-01T00:00:00", "us")


def make_batch(
    proba: np.ndarray,
    item_ids: list[str],
    *,
    versions: list[str] | None = None,
    scored_at: np.ndarray | None = None,
    prefix: str = "p",
    model: str = "m",
) -> PredictionBatch:
    n = len(item_ids)
    return PredictionBatch(
        prediction_ids=tuple(f"{prefix}{i:05d}" for i in range(n)),
        item_ids=tuple(item_ids),
        item_uris=tuple(f"file:///items/{i}.png" for i in item_ids),
        model_name=(model,) * n,
        model_version=tuple(versions or ["v1"] * n),
        predicted_labels=("c0",) * n,
        scored_at=scored_at if scored_at is not None else np.full(n, T0),
        probabilities=np.asarray(proba, dtype=np.float32),
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def azurite():
    """A real Azurite on loopback for the whole test session (stopped at the end)."""
    from tests.support.azurite import running_azurite

    with running_azurite() as az:
        yield az


@pytest.fixture(scope="module")
def adx(azurite):
    """The Azure Data Explorer stand-in (the Kusto REST API the real clients speak, the shipped KQL run
    by duckdb-kql) on loopback, fresh for each test module."""
    from tests.support.adx_standin import AdxStandIn

    with AdxStandIn(azurite) as standin:
        yield standin


# --- selector_timer ---
@pytest.fixture(scope="session")
def kusto():
    """Microsoft's Kusto language service (one Node process for the session) against infra/adx."""
    from tests.support.kusto import KustoAnalyzer

    with KustoAnalyzer() as analyzer:
        yield analyzer


# --- label_studio ---
@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """The real Label Studio 1.23.2 (from .venv-label-studio) on loopback, one server for the whole
    session (SQLite in a session tmp dir), stopped at the end. A migrated template database is kept in
    the system temp dir, so only the first cold start on a machine pays for the migrations (~35 s)."""
    from tests.support.label_studio import TEMPLATE_DIR, LabelStudioServer

    with LabelStudioServer(tmp_path_factory.mktemp("label-studio"), template_dir=TEMPLATE_DIR) as server:
        yield server
