"""The loop-health KQL (infra/monitoring) analyses cleanly against the tables it reads, covers what the
issue asks for, and the telemetry module turns the OpenTelemetry distro on only in Azure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared import telemetry
from tests.support.kusto import KustoAnalyzer

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "infra" / "monitoring"
APPINSIGHTS_TABLES = MONITORING / "appinsights-tables.kql"
ADX_QUERIES = sorted(MONITORING.glob("adx-*.kql"))
APPINSIGHTS_QUERIES = sorted(p for p in MONITORING.glob("appinsights-*.kql") if p != APPINSIGHTS_TABLES)


@pytest.fixture(scope="module")
def appinsights_kusto():
    with KustoAnalyzer((APPINSIGHTS_TABLES,)) as analyzer:
        yield analyzer


def test_the_health_queries_cover_what_the_issue_asks():
    names = {p.stem for p in [*ADX_QUERIES, *APPINSIGHTS_QUERIES]}
    assert {"adx-predictions-per-hour", "adx-selections-and-labels-per-day", "adx-retrain-outcomes",
            "adx-accuracy-per-version", "appinsights-landing-backlog"} <= names


@pytest.mark.parametrize("path", ADX_QUERIES, ids=lambda p: p.name)
def test_adx_health_queries_analyse_clean(kusto, path):
    text = path.read_text()
    assert kusto.analyze(text) == []
    assert kusto.analyze(text.replace("ModelVersion", "ModelVersio").replace("Status", "Statu")
                         .replace("SelectedAt", "SelectedAtt")), "the check must see a renamed column"


@pytest.mark.parametrize("path", APPINSIGHTS_QUERIES, ids=lambda p: p.name)
def test_application_insights_queries_analyse_clean(appinsights_kusto, path):
    text = path.read_text()
    assert appinsights_kusto.analyze(text) == []
    assert appinsights_kusto.analyze(text.replace("TimeGenerated", "Timestamp"))


def test_the_landing_backlog_query_parses_what_the_collector_logs():
    """The query matches the collector's log lines: if the messages change, the query must too."""
    query = (MONITORING / "appinsights-landing-backlog.kql").read_text()
    collector = (ROOT / "functions" / "scoring_collector" / "blueprint.py").read_text()
    ingest = (ROOT / "shared" / "services" / "collect.py").read_text()
    assert '"re-ingested %d landed batches, %d still failing"' in collector
    assert "ingestion of landed batch %s failed" in ingest
    assert 'parse Message with "re-ingested " Reingested:long " landed batches, " StillFailing:long' in query
    assert 'Message startswith "ingestion of landed batch"' in query


def test_the_observability_doc_lists_every_query():
    doc = (ROOT / "docs" / "observability.md").read_text()
    for path in [*ADX_QUERIES, *APPINSIGHTS_QUERIES]:
        assert f"infra/monitoring/{path.name}" in doc, path.name


# -- the OpenTelemetry distro ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _fresh_telemetry():
    telemetry._reset_for_tests()
    yield
    telemetry._reset_for_tests()


def test_telemetry_is_off_without_a_connection_string():
    calls: list[dict] = []
    assert telemetry.configure_telemetry({}, configure=lambda **kw: calls.append(kw)) is False
    assert telemetry.configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": " "},
                                         configure=lambda **kw: calls.append(kw)) is False
    assert calls == []


def test_telemetry_exports_with_the_user_assigned_identity_once_per_process():
    from azure.identity import ManagedIdentityCredential

    calls: list[dict] = []
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
           "APPLICATIONINSIGHTS_AUTHENTICATION_STRING":
               "ClientId=11111111-2222-3333-4444-555555555555;Authorization=AAD"}
    assert telemetry.configure_telemetry(env, configure=lambda **kw: calls.append(kw)) is True
    assert telemetry.configure_telemetry(env, configure=lambda **kw: calls.append(kw)) is True
    (options,) = calls
    assert options["connection_string"] == env["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert isinstance(options["credential"], ManagedIdentityCredential)


def test_telemetry_without_aad_passes_no_credential():
    options = telemetry.exporter_options({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"})
    assert options == {"connection_string": "InstrumentationKey=x"}


def test_the_distro_is_installed_and_a_runtime_dependency():
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: F401

    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"(?m)^azure-monitor-opentelemetry\b", requirements)
    app = (ROOT / "infra" / "modules" / "functionapp.bicep").read_text()
    assert "APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'" in app
