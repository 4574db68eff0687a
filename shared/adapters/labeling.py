"""Azure ML Data Labeling: ask the labeling project to export its labels, so nobody clicks Export.

``POST .../workspaces/{ws}/labelingJobs/{id}/exportLabels`` (ARM, a long-running operation) with an
``ExportSummary`` body (``{"format": "CSV"}`` or ``"Coco"``). Azure ML writes the export into the
workspace's default blob store; the label stage's blob trigger (Event Grid) picks it up from there.
Exports hold every label so far: the label stage records only what changed, so a repeated export
records nothing twice.

azure-core does the HTTP: ``ARMPipelineClient`` (bearer token for the ARM scope from the managed
identity, ARM retry policy with ``Retry-After``) and ``LROPoller`` + ``ARMPolling`` (Azure-AsyncOperation
/ Location polling). Build once per process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.pipeline.policies import HeadersPolicy, RequestIdPolicy, RetryPolicy, UserAgentPolicy
from azure.core.polling import LROPoller
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy
from azure.mgmt.core.polling.arm_polling import ARMPolling

log = logging.getLogger(__name__)

API_VERSION = "2024-01-01-preview"  # the newest ARM API version with labelingJobs


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What Azure ML reports of a finished export."""

    labeling_job: str
    format: str
    exported_rows: int | None
    container: str | None
    path: str | None


class AzureMLLabelingExports:
    """:class:`shared.ports.LabelingExports` on the Azure ML REST API."""

    def __init__(self, *, credential: TokenCredential, subscription_id: str, resource_group: str, workspace: str,
                 labeling_job: str, arm_url: str = "https://management.azure.com", export_format: str = "CSV",
                 poll_interval: float = 5.0, retry_total: int = 3) -> None:
        self._base = arm_url.rstrip("/")
        self._client: ARMPipelineClient[Any, Any] = ARMPipelineClient(
            base_url=self._base,
            policies=[RequestIdPolicy(), HeadersPolicy(), UserAgentPolicy("azure-active-learning"),
                      RetryPolicy(retry_total=retry_total, retry_backoff_factor=0.5),
                      ARMChallengeAuthenticationPolicy(credential, f"{self._base}/.default"), ARMHttpLoggingPolicy()],
        )
        self._path = (f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
                      f"Microsoft.MachineLearningServices/workspaces/{workspace}/labelingJobs/{labeling_job}")
        self._job = labeling_job
        self._format = export_format
        self._interval = poll_interval

    def export_labels(self, *, timeout: float = 600.0) -> ExportSummary:
        """Start an export and wait for it to finish; raise ``HttpResponseError`` if Azure ML refuses."""
        request = HttpRequest("POST", f"{self._base}{self._path}/exportLabels", params={"api-version": API_VERSION},
                              json={"format": self._format})
        # As generated Azure SDK clients do: the pipeline's own response object is what ARMPolling reads.
        # A token goes only over TLS, except to a loopback test server configured as AL_AML_ARM_URL.
        options: dict[str, Any] = {
            "enforce_https": not self._base.startswith(("http://127.0.0.1", "http://localhost"))}
        initial = self._client._pipeline.run(request, stream=False, **options)
        initial.http_response.raise_for_status()
        poller: LROPoller[dict[str, Any]] = LROPoller(
            self._client, initial, _json,
            ARMPolling(self._interval, lro_options={"final-state-via": "location"}, **options),
        )
        body = poller.result(timeout=timeout) or {}
        summary = ExportSummary(self._job, str(body.get("format") or self._format),
                                body.get("exportedRowCount"), body.get("containerName"), body.get("snapshotPath"))
        log.info("labeling export of %s done: %s rows into %s/%s", self._job, summary.exported_rows,
                 summary.container, summary.path)
        return summary


def _json(pipeline_response: Any) -> dict[str, Any]:
    response = getattr(pipeline_response, "http_response", pipeline_response)
    try:
        data = response.json()
    except Exception:  # an empty final body: the operation reported nothing more
        return {}
    return data if isinstance(data, dict) else {}
