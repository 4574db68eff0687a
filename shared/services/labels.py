"""ingest labels: parse a labeling export, validate each row, record the valid labels once, and
ask for retraining once enough new labels are pending.

:class:`LabelService` is the bookkeeping (what the embedded loop and the simulation call);
:class:`ExportIntake` adds what the blob trigger needs around it: the error report next to the
export, quarantine, replay and statistics. An export never poisons the trigger: a transient storage
error is retried a few times, and any failure that remains (or any other error) quarantines the
export with a report naming the error, so the host has nothing to retry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from shared.core.exports import REPORT_SUFFIX, handed_out_name, is_export_name, parse_export
from shared.core.item_uris import ItemUriPolicy, item_uri_problem
from shared.core.label_studio import clip
from shared.core.naming import extension_of, item_id_from_path, labeling_name
from shared.core.records import Label
from shared.errors import ConfigurationError, ExportFormatError, Problem
from shared.ports import ObjectStore, PredictionStore, RetrainRequest, RetrainRequests

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class IngestResult:
    export_id: str
    export_sha256: str
    recorded: int
    already_known: int
    problems: tuple[Problem, ...]
    pending: int
    retrain_requested: bool
    format: str = "csv"
    watermark: int | None = None  # the label count a retrain request sent by this ingest covers


def retrain_due(*, pending: int, labels: int, trained_on: int, last_watermark: int | None,
                threshold: int) -> bool:
    """Whether to ask for retraining now. Enough labels must be pending; and either nothing was
    asked yet, the last request was served (the serving model trained on at least its watermark),
    or ``threshold`` more labels arrived since it was sent (e.g. its candidate was rejected)."""
    if pending < threshold:
        return False
    if last_watermark is None or trained_on >= last_watermark:
        return True
    return labels - last_watermark >= threshold


EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def labeled_at(value: str | None, now: datetime) -> tuple[datetime | None, str | None]:
    """(the row's labeling time, None), ``now`` when the export gives none, or (None, why the time
    given cannot be used): unreadable, out of range, before 2000 or more than a day ahead."""
    if not value:
        return now, None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        ts = ts.astimezone(UTC)
    except (ValueError, OverflowError):
        return None, f"unreadable labeling time {clip(value)!r}"
    if not EARLIEST <= ts <= now + timedelta(days=1):
        return None, f"labeling time {clip(value)!r} is before 2000 or in the future"
    return ts, None


class LabelService:
    def __init__(
        self,
        store: PredictionStore,
        *,
        model_name: str,
        class_names: Callable[[], tuple[str, ...] | None],
        retrain_threshold: int,
        requests: RetrainRequests | None = None,
        labeling_container: str = "labeling-input",
        export_hosts: Sequence[str] = (),
        item_uris: ItemUriPolicy | None = None,
    ) -> None:
        """``requests``: where retrain requests go; by default an in-process queue (embedded loop).
        An export row maps to an item only if its URL names, exactly, a file the selector handed out
        (``<labeling_container>/<batch>/<item><ext>``, https only on ``export_hosts``) for an item
        that reached labelers (its selection handed off and its item URI passing ``item_uris``, the
        selector's own check: an item it refused was never shown to anyone)."""
        if requests is None:
            from shared.adapters.queues import InProcessRetrainRequests

            requests = InProcessRetrainRequests()
        self._store = store
        self._model_name = model_name
        self._class_names = class_names
        self._threshold = retrain_threshold
        self.requests = requests
        self._container = labeling_container
        self._hosts = tuple(export_hosts)
        self._item_uris = item_uris

    def reached_labelers(self, item_ids: Sequence[str]) -> dict[str, set[str]]:
        """item id -> the labeling file names it was handed out under (items never shown: absent)."""
        out: dict[str, set[str]] = {}
        for item, pairs in self._store.handed_out(item_ids).items():
            names = {labeling_name(batch, item, extension_of(uri)) for batch, uri in pairs
                     if self._item_uris is None or item_uri_problem(uri, self._item_uris) is None}
            if names:
                out[item] = names
        return out

    @property
    def threshold(self) -> int:
        return self._threshold

    def ingest(self, export_id: str, data: bytes) -> IngestResult:
        """Record the valid rows of an export (format from ``export_id``'s extension, else its
        content); raise :class:`ExportFormatError` if it cannot be read at all."""
        sha = hashlib.sha256(data).hexdigest()
        parsed = parse_export(data, export_id)
        classes = self._class_names()
        if not classes:
            raise ConfigurationError("no class list to check labels against: register a serving model "
                                     "or set AL_CLASS_NAMES")
        known = set(classes)
        url_field, label_field = parsed.url_field, parsed.label_field
        problems = list(parsed.problems)
        now = datetime.now(UTC)
        by_item: dict[str, list[tuple[int, str, str, datetime]]] = {}
        for row in parsed.rows:  # every row judged alone: a bad value refuses that row only
            name, why = handed_out_name(row.url, container=self._container, hosts=self._hosts)
            at, bad_time = labeled_at(row.labeled_at, now)
            if name is None:
                problems.append(Problem(row.row, url_field, f"{why}: {clip(row.url)!r}"))
            elif row.label not in known:
                problems.append(Problem(row.row, label_field, f"{clip(row.label)!r} is not one of the model's classes"))
            elif at is None:
                problems.append(Problem(row.row, "labeled_at", str(bad_time)))
            else:
                by_item.setdefault(item_id_from_path(name), []).append((row.row, name, row.label, at))
        handed = self.reached_labelers(list(by_item))
        labels = []
        for item_id, rows in by_item.items():
            shown = handed.get(item_id, set())
            good = [r for r in rows if r[1] in shown]
            for n, name, _, _ in rows:
                if name not in shown:
                    problems.append(Problem(n, url_field, f"{clip(name)!r} is not a file the loop handed out for "
                                            "labeling (or its item never reached labelers)"))
            if len({label for _, _, label, _ in good}) > 1:
                for n, _, label, _ in good:
                    problems.append(Problem(n, label_field, f"item {clip(item_id)!r} has different labels in this "
                                            f"export ({clip(label)!r})"))
                continue
            if good:
                n, _, label, at = max(good, key=lambda r: r[3])
                labels.append(Label(item_id, label, export_id, sha, at))
        recorded = self._store.add_labels(labels)
        problems.sort(key=lambda p: (p.where is None, p.where or 0))
        if problems:
            log.warning("export %s: %d rows refused (first: %s)", export_id, len(problems), problems[0])
        pending, watermark = self._maybe_request(export_id, sha)
        return IngestResult(export_id, sha, recorded, len(labels) - recorded, tuple(problems),
                            pending, watermark is not None, parsed.format, watermark)

    def record(self, answers: Sequence[Label], source: str, sha: str) -> tuple[int, int, int | None]:
        """Record answers taken from elsewhere (Label Studio), then ask for retraining if due:
        (recorded, pending, watermark of the request sent now or None)."""
        recorded = self._store.add_labels(answers)
        pending, watermark = self._maybe_request(source, sha)
        return recorded, pending, watermark

    @property
    def class_names(self) -> tuple[str, ...]:
        classes = self._class_names()
        if not classes:
            raise ConfigurationError("no class list to check labels against: register a serving model "
                                     "or set AL_CLASS_NAMES")
        return classes

    def _maybe_request(self, export_id: str, sha: str) -> tuple[int, int | None]:
        """(pending, watermark of the request sent now or None)."""
        labels = self._store.count_labels()
        serving = self._store.serving_version(self._model_name)
        trained_on = serving.trained_on_labels if serving else 0
        pending = labels - trained_on
        due = retrain_due(pending=pending, labels=labels, trained_on=trained_on,
                          last_watermark=self.requests.last_watermark(self._model_name), threshold=self._threshold)
        if not due:
            return pending, None
        req = RetrainRequest(self._model_name, labels, pending, export_id, sha, datetime.now(UTC).isoformat())
        if self.requests.request(req):
            log.info("retrain requested for %s: %d labels pending (watermark %d)", self._model_name, pending, labels)
            return pending, labels
        return pending, None

    def pending(self) -> int:
        """Labels recorded since the serving model was trained."""
        serving = self._store.serving_version(self._model_name)
        return self._store.count_labels() - (serving.trained_on_labels if serving else 0)

    def stats(self) -> dict[str, object]:
        per_class = Counter(lb.label for lb in self._store.list_labels())
        return {"model_name": self._model_name, "labels": sum(per_class.values()),
                "labels_per_class": dict(sorted(per_class.items())), "pending": self.pending(),
                "retrain_threshold": self._threshold,
                "last_retrain_watermark": self.requests.last_watermark(self._model_name)}


# --- the trigger's side: reports, quarantine, replay --------------------------------------------
@dataclass(frozen=True, slots=True)
class ExportOutcome:
    status: str  # "recorded" | "quarantined" | "skipped" | "refused" (a name that is no safe path)
    container: str
    name: str
    result: IngestResult | None = None
    report: str | None = None  # "<container>/<name>" of the report written, if any
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        r = self.result
        return {"status": self.status, "export": f"{self.container}/{self.name}", "report": self.report,
                "reason": self.reason,
                **({"format": r.format, "sha256": r.export_sha256, "recorded": r.recorded,
                    "already_known": r.already_known, "problems": len(r.problems), "pending": r.pending,
                    "retrain_requested": r.retrain_requested} if r else {})}


def blob_name_problem(name: str) -> str | None:
    """Why a blob name is not a safe relative path for an export, or None."""
    if not name or len(name) > 1024:
        return "empty, or longer than 1,024 characters"
    if name.startswith("/") or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "an absolute path, a backslash or a control character in the name"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "empty, . or .. path segments in the name"
    return None


def report_name(name: str) -> str:
    return name + REPORT_SUFFIX


def is_transient(exc: BaseException) -> bool:
    """A storage or store error worth retrying: no connection, a timeout, a 5xx, 408 or 429 (from Blob
    Storage through azure-core, or from ADX through the Kusto client)."""
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    try:
        from azure.core import exceptions as az
        from azure.kusto.data import exceptions as kusto
    except ImportError:  # the embedded loop may run without the Azure SDK
        return False
    if isinstance(exc, kusto.KustoNetworkError | kusto.KustoThrottlingError):  # ADX (the Azure store)
        return True
    if isinstance(exc, kusto.KustoServiceError):
        status = getattr(exc.http_response, "status_code", None) or getattr(exc.http_response, "status", None)
        return status is None or status >= 500 or status in (408, 429)
    if isinstance(exc, az.ServiceRequestError | az.ServiceResponseError):  # incl. their timeouts
        return True
    if isinstance(exc, az.HttpResponseError):
        status = exc.status_code or 0
        return status >= 500 or status in (408, 429)
    return False


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an export could not be processed, for its report: the error, and whether it was a
    transient storage error (retried ``retries`` times) or a permanent one."""

    error: BaseException
    transient: bool
    retries: int

    @property
    def reason(self) -> str:
        text = f"{type(self.error).__name__}: {self.error}"
        times = f"{self.retries} time{'' if self.retries == 1 else 's'}"
        if self.transient:
            return f"transient storage error, retried {times}: {text}"
        after = f" (after retrying a transient error {times})" if self.retries else ""
        return f"permanent error{after}: {text}"

    def as_dict(self) -> dict[str, object]:
        return {"type": type(self.error).__name__, "message": str(self.error)[:2000],
                "kind": "transient" if self.transient else "permanent", "retries": self.retries}


def build_report(name: str, sha: str, status: str, problems: tuple[Problem, ...], *,
                 result: IngestResult | None = None, reason: str = "", failure: Failure | None = None) -> bytes:
    """The error report: one entry per refused row (row, field, reason), and the error that stopped
    the export (type, message, transient or permanent), as JSON."""
    doc = {"export": name, "sha256": sha, "status": status, "reason": reason,
           "written_at": datetime.now(UTC).isoformat(),
           "format": result.format if result else None,
           "recorded": result.recorded if result else 0,
           "already_known": result.already_known if result else 0,
           "error": failure.as_dict() if failure else None,
           "problems": [{"row": p.where, "field": p.field, "reason": p.reason} for p in problems]}
    return json.dumps(doc, indent=1).encode("utf-8")


class ExportIntake:
    """What the blob trigger and the admin endpoints call."""

    def __init__(self, labels: LabelService, objects: ObjectStore, *, exports_container: str,
                 quarantine_container: str, max_bytes: int = 256 * 1024 * 1024, attempts: int = 3,
                 backoff_seconds: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> None:
        """``attempts``: tries per step when a storage error is transient, waiting ``backoff_seconds``
        and doubling (at most 8 s) in between through ``sleep`` (tests pass one that does not sleep)."""
        self.labels = labels
        self._objects = objects
        self._exports = exports_container
        self._quarantine = quarantine_container
        self._max_bytes = max_bytes
        self._attempts = max(1, attempts)
        self._backoff = backoff_seconds
        self._sleep = sleep

    def _retrying(self, step: Callable[[], T], what: str) -> tuple[T | None, Failure | None]:
        """Run ``step``, retrying transient errors; (its result, None) or (None, why it failed)."""
        tries = 0

        def once() -> T:
            nonlocal tries
            tries += 1
            return step()

        def warn(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("%s: transient error on try %d of %d, retrying: %r", what, tries, self._attempts, error)

        retrying = Retrying(stop=stop_after_attempt(self._attempts), retry=retry_if_exception(is_transient),
                            wait=wait_exponential(multiplier=self._backoff, max=8), sleep=self._sleep,
                            before_sleep=warn, reraise=True)
        try:
            return retrying(once), None
        except Exception as exc:
            return None, Failure(exc, is_transient(exc), tries - 1)

    def process(self, container: str, name: str, data: bytes) -> ExportOutcome:
        """Ingest one export blob; the call returns normally whatever the export holds. An export that
        cannot be read, or whose processing fails (after retries, for a transient storage error), is
        moved to quarantine with a report naming the error. Only a failure to quarantine it raises
        (the host's retry is then the last resort)."""
        why = blob_name_problem(name)
        if why is not None:  # judged before anything is read or recorded
            return self._refuse_name(container, name, why)
        if not is_export_name(name):
            return ExportOutcome("skipped", container, name, reason="not an export (not .csv, .json or .jsonl, or "
                                 "one of the loop's reports): left untouched")
        return self._handle(container, name, data, quarantined=False)

    def _refuse_name(self, container: str, name: str, why: str) -> ExportOutcome:
        """A blob whose name cannot be trusted as a path: nothing recorded, nothing copied or deleted
        (its name cannot name a copy); a report under a name of our own says what arrived."""
        digest = hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:16]
        report = f"invalid-names/{digest}{REPORT_SUFFIX}"
        body = {"export": clip(name), "container": container, "status": "refused", "reason": why,
                "written_at": datetime.now(UTC).isoformat()}
        _, failed = self._retrying(lambda: self._objects.put(self._quarantine, report, json.dumps(body).encode(),
                                                             overwrite=True), f"report on {container}/{digest}")
        log.warning("export blob %r in %s refused: %s", clip(name), container, why)
        return ExportOutcome("refused", container, clip(name),
                             report=None if failed else f"{self._quarantine}/{report}", reason=why)

    def replay(self, name: str, *, source: str = "quarantine") -> ExportOutcome:
        """Reprocess a named export, e.g. a quarantined one after it was fixed in place. A quarantined
        export that now parses goes back to the exports container (re-recording nothing)."""
        if source not in ("quarantine", "exports"):
            raise ValueError("source must be 'quarantine' or 'exports'")
        why = blob_name_problem(name)
        if why is not None:
            raise ValueError(f"{clip(name)!r}: {why}")
        if not is_export_name(name):
            raise ValueError(f"{clip(name)!r} names a report or a manifest, not an export")
        container = self._quarantine if source == "quarantine" else self._exports
        data = self._objects.get(container, name)  # NotFoundError -> 404
        return self._handle(container, name, data, quarantined=source == "quarantine")

    def _handle(self, container: str, name: str, data: bytes, *, quarantined: bool) -> ExportOutcome:
        sha = hashlib.sha256(data).hexdigest()
        if len(data) > self._max_bytes:
            return self._quarantine_export(container, name, data, sha, ExportFormatError(
                "export is too large", [Problem(
                    None, "file", f"{len(data)} bytes, more than AL_MAX_EXPORT_BYTES={self._max_bytes}")]))
        outcome, failure = self._retrying(lambda: self._record(container, name, data, sha, quarantined=quarantined),
                                          f"export {container}/{name}")
        if outcome is not None:
            return outcome
        assert failure is not None
        if isinstance(failure.error, ExportFormatError):
            return self._quarantine_export(container, name, data, sha, failure.error)
        log.error("export %s/%s could not be processed: %s", container, name, failure.reason,
                  exc_info=failure.error)
        return self._quarantine_export(container, name, data, sha, failure)

    def _record(self, container: str, name: str, data: bytes, sha: str, *, quarantined: bool) -> ExportOutcome:
        """Record the export's labels and write (or clear) its report; idempotent, so it can be retried."""
        result = self.labels.ingest(name, data)
        if quarantined:  # fixed: back to the exports container, out of quarantine
            self._objects.put(self._exports, name, data, overwrite=True)
            self._objects.delete(self._quarantine, report_name(name))
            self._objects.delete(self._quarantine, name)
            container = self._exports
        report = None
        if result.problems:
            self._objects.put(container, report_name(name),
                              build_report(name, sha, "recorded", result.problems, result=result), overwrite=True)
            report = f"{container}/{report_name(name)}"
        else:
            self._objects.delete(container, report_name(name))  # a stale report of an earlier version
        return ExportOutcome("recorded", container, name, result, report)

    def _quarantine_export(self, container: str, name: str, data: bytes, sha: str,
                           why: ExportFormatError | Failure) -> ExportOutcome:
        """Copy to quarantine with the report, then delete the original (a crash in between leaves
        a copy that the retried trigger quarantines again, never a lost export). Transient errors
        are retried; if quarantine still fails, that error is raised (chained)."""
        if isinstance(why, ExportFormatError):
            reason, problems = str(why), why.problems
            failure = Failure(why, transient=False, retries=0)
        else:
            reason, problems, failure = why.reason, (), why
        log.warning("export %s/%s quarantined: %s", container, name, reason)
        body = build_report(name, sha, "quarantined", problems, reason=reason, failure=failure)

        def move() -> None:
            if container != self._quarantine:
                self._objects.put(self._quarantine, name, data, overwrite=True)
            self._objects.put(self._quarantine, report_name(name), body, overwrite=True)
            if container != self._quarantine:
                self._objects.delete(container, name)
                self._objects.delete(container, report_name(name))

        _, failed = self._retrying(lambda: move(), f"quarantine of {container}/{name}")
        if failed is not None:
            raise RuntimeError(f"export {container}/{name} could not be quarantined ({failed.reason}); "
                               f"it failed with: {reason}") from failed.error
        return ExportOutcome("quarantined", self._quarantine, name,
                             report=f"{self._quarantine}/{report_name(name)}", reason=reason)

    def quarantined(self) -> list[str]:
        return [n for n in self._objects.list(self._quarantine) if is_export_name(n)]

    def stats(self) -> dict[str, object]:
        return {**self.labels.stats(), "quarantined_exports": self.quarantined()}
