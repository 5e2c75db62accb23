"""The process use case: run one export into one gzip object, exactly once, nothing lost.

An export whose rows can be split (``core.parts.single_part_reason``) and that counts more
rows than one part holds is planned as parts instead: the plan (one record per part) is
written, one message per part is published on the parts topic, and ``service.parts`` runs and
composes them. A redelivered request whose plan was written but not every message published
publishes them again (duplicates of a part message are harmless); once all are out the request
has nothing left to do.

Pub/Sub delivers at least once, so every step tolerates repeats: the claim (a lease, decided
here by ``core.lifecycle.decide_claim`` and written with a precondition on the version read, so
that of two workers deciding at once one wins and the other reads and decides again) lets one
worker run at a time; each attempt writes an object of its own under ``tmp/``, which, checked,
gets the export's name (from the queryUUID) by a create-only compose, so the export's object is
never replaced and a damaged upload never becomes it (``name_export``); a finished export is
never run again; and the ready message is published until the record says it was.

What a dataset version's exports share: its clean columns, those no value of which CSV writes
as more than its plain text (no quotes, no NaN), which DuckDB then writes unchecked (19% less
of its work for the full table, the same bytes; bench/README.md). The first export of a version
renders every field checked and then (after its ready message, or once its parts are handed
out) scans the version and keeps the answer in the store under the version's identity and the
engine's rules (``learn_clean_columns``); later exports, and every part of a plan under the same
rules (the plan records the set and its rules), use it.

Failures: a ``PermanentError`` (the query refused by the engine, a dataset that does not fit)
fails the export at once with its reason, and the message is acknowledged. Anything else fails
only this attempt: the record keeps the attempt's error (``lastError``, shown by the status API
with the attempt count), the lease is freed so the next delivery can start at once, and the
exception goes up so Pub/Sub redelivers; after ``MAX_RUN_ATTEMPTS`` attempts the export fails
with the last error as its reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..core.catalog import Catalog
from ..core.errors import (
    ExportError,
    InvalidRequest,
    LeaseLost,
    ObjectAlreadyExists,
    PermanentError,
    PreconditionFailed,
    TransientError,
    public_detail,
)
from ..core.lifecycle import (
    DEFAULT_LEASE,
    ClaimDecision,
    ClaimVerdict,
    claimed,
    decide_claim,
    last_error_suffix,
)
from ..core.parts import (
    DEFAULT_MAX_PARTS,
    DEFAULT_PART_ROWS,
    check_rows,
    single_object_name,
    tmp_prefix,
)
from ..core.query import Query
from ..core.records import ExportRecord, ExportStatus, iso_z, part_record
from ..events import PART_KIND, READY_KIND, PubSubMessage
from .parts import PartRunner, matches, other_content
from .ports import (
    DatasetFile,
    Datasets,
    ExportEngine,
    ExportResult,
    ExportStorage,
    LifecycleStore,
    ObjectInfo,
    PartsQueue,
    Publisher,
)

log = logging.getLogger(__name__)

MAX_RUN_ATTEMPTS = 5
# A claim that loses a race reads and decides again this often before Pub/Sub redelivers.
_CLAIM_RETRIES = 5
# Rows are not re-capped here: the limit was checked at submit time under that day's setting.
_NO_CAP = 2**62
# The longest run after which the first export of a dataset version still scans it: the scan
# (at most ~45 s on two cores, engine.duckdb_engine.CLEAN_SCAN_MAX_ROWS) must fit the
# function's time, 540 s by default. A function given much less time may be stopped during a
# scan: the scan is lost (the next export tries again), the export is not.
LEARN_WITHIN = dt.timedelta(minutes=4)
# Deletes of an export's temporary objects sent at once: one by one, the 1,059 objects of a
# 1,024-part export took 4.1-4.7 s against a local endpoint (bench/README.md, "Parts").
_DELETE_CONCURRENCY = 16


@dataclass(frozen=True)
class Claim:
    """A claim's decision and the export as it stands after it (None: no such export)."""

    decision: ClaimDecision
    record: ExportRecord | None


def object_name(query_uuid: str, fmt: str) -> str:
    """The export's object: derived from its id, so a retry can never make a twin."""
    return f"exports/{query_uuid}.{fmt}.gz"


@dataclass
class ExportRunner:
    """Runs export requests as they arrive from Pub/Sub."""

    store: LifecycleStore
    storage: ExportStorage
    ready: Publisher
    engine: ExportEngine
    datasets: Datasets
    catalog: Catalog
    #: The parts topic; None: every export runs as one part.
    parts_queue: PartsQueue | None = None
    part_rows: int = DEFAULT_PART_ROWS
    max_parts: int = DEFAULT_MAX_PARTS
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    lease: dt.timedelta = DEFAULT_LEASE
    worker: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:12]}")
    max_attempts: int = MAX_RUN_ATTEMPTS
    claim_retries: int = _CLAIM_RETRIES
    no_cap: int = _NO_CAP

    def __post_init__(self) -> None:
        self.parts = PartRunner(self)

    def handle_message(self, message: PubSubMessage, *, dead_letter: bool) -> None:
        """One pushed message: a request is run, a part message runs its part; a dead-lettered
        request or part ends the export failed (``give_up``), unless the part is done (then it
        composes, as its last delivery would have); a dead-lettered ready message is
        only logged, because delivery has its own retry schedule and attempt log (notify) and
        the file stays downloadable.

        Returns when the message should be acknowledged; raises ``TransientError`` otherwise.
        """
        if not dead_letter:
            if message.kind == PART_KIND or message.part is not None:
                if message.part is None:
                    log.error("part message without a part index; dropping")
                    return
                self.parts.handle(message.query_uuid, message.part)
            else:
                self.handle(message.query_uuid)
        elif message.kind == READY_KIND:
            log.error(
                "ready message dead-lettered; the export stays downloadable",
                extra={"queryUUID": message.query_uuid},
            )
        elif message.part is not None and self.parts.is_done(message.query_uuid, message.part):
            # The part's work is done: its message ran out of attempts while another worker
            # held the compose (each delivery asked to come back). Failing the export would
            # throw a finished file away; compose it, or come back while the composer runs.
            self.parts.compose_if_last(message.query_uuid)
        else:
            self.give_up(message.query_uuid, message.dead_letter_attempts, part=message.part)

    def handle(self, query_uuid: str) -> None:
        """Run the export if it is this delivery's to run.

        Returns normally when the message should be acknowledged; raises ``TransientError``
        when Pub/Sub should deliver it again (including "another worker is running it", so the
        message outlives a worker that dies mid-export).
        """
        claim = self.claim(query_uuid)
        decision, record = claim.decision, claim.record
        if record is None:
            log.warning(
                "export request for an unknown export; dropping", extra={"queryUUID": query_uuid}
            )
            return
        log.info(
            "claim %s: %s", decision.verdict.value, decision.reason, extra={"queryUUID": query_uuid}
        )
        if decision.verdict is ClaimVerdict.DONE:
            if record.status is ExportStatus.SUCCEEDED and record.ready_published_on is None:
                self.announce(query_uuid)
            elif record.status is ExportStatus.FAILED and record.parts_total:
                self.clean_up(query_uuid)
            return
        if decision.verdict is ClaimVerdict.BUSY:
            raise TransientError(f"export {query_uuid} is being run by another worker")
        if (record.run_attempts or 0) > self.max_attempts:
            self.fail(
                query_uuid,
                "too_many_attempts",
                f"the export did not finish in {self.max_attempts} attempts"
                f"{last_error_suffix(record.last_error)}; please submit it again",
            )
            return
        started = self.clock()
        try:
            finished, unscanned = self._run(record)
        except PermanentError as exc:
            self.fail(query_uuid, exc.code, str(exc))
            return
        except LeaseLost:
            raise  # another worker runs the export now: the record is not this one's to touch
        except Exception as exc:
            self.attempt_failed(record, exc)
            raise
        if finished:
            self.announce(query_uuid)
        if unscanned is None:
            return
        if self.clock() - started > LEARN_WITHIN:  # the scan could run out the function's time
            log.info(
                "the dataset's clean columns are left for a shorter export to learn",
                extra={"queryUUID": query_uuid},
            )
            return
        self.learn_clean_columns(unscanned, query_uuid)  # after the ready message, if any

    def claim(self, query_uuid: str) -> Claim:
        """Decide whether this worker may run the export and, if so, take it under its lease."""
        now = self.clock()
        for _ in range(_CLAIM_RETRIES):
            read = self.store.read_for_claim(query_uuid)
            if read is None:
                return Claim(ClaimDecision(ClaimVerdict.DONE, "export record is gone"), None)
            decision = decide_claim(
                read.record.status,
                read.record.lease_expires_on,
                now,
                handed_to_parts=read.record.parts_published_on is not None,
            )
            if decision.verdict is not ClaimVerdict.RUN:
                return Claim(decision, read.record)
            record = claimed(read.record, self.worker, now, self.lease)
            try:
                self.store.write_claim(record, if_version=read.version)
            except PreconditionFailed:
                continue  # someone wrote in between: read what they wrote and decide again
            return Claim(decision, record)
        raise LeaseLost(f"could not claim export {query_uuid}: too many concurrent updates")

    def _run(self, record: ExportRecord) -> tuple[bool, DatasetFile | None]:
        """Run the export in one part, or hand it to its parts; True when it finished here,
        and the dataset when its clean columns are not known yet."""
        query_uuid = record.query_uuid
        query = self.query_of(record)
        if record.parts_total:  # planned by an earlier attempt that did not publish every part
            self._hand_to_parts(record, record.parts_total)
            return False, None
        dataset = self.datasets.open()
        known = self.known_clean_columns(dataset, query_uuid)
        clean = known or frozenset()
        unscanned = dataset if known is None else None
        plan = self.engine.plan(
            dataset.source,
            query,
            query_uuid=query_uuid,
            target_rows=self.part_rows,
            max_parts=self.max_parts if self.parts_queue is not None else 1,
        )
        if len(plan.parts) > 1:
            self.store.write_plan(
                query_uuid,
                self.worker,
                [part_record(query_uuid, spec) for spec in plan.parts],
                planned_rows=plan.rows,
                engine=plan.engine,
                dataset_version=dataset.version,
                clean_columns=clean,
                clean_rules=self.engine.clean_rules() if clean else None,
            )
            log.info(
                "export planned as %d parts (%s rows) on %s",
                len(plan.parts),
                "unknown" if plan.rows is None else plan.rows,
                plan.engine,
                extra={"queryUUID": query_uuid, "parts": len(plan.parts), "engine": plan.engine},
            )
            self._hand_to_parts(record, len(plan.parts))
            return False, unscanned
        log.info(
            "export runs as one part on %s: %s",
            plan.engine,
            plan.single_part_reason or "one part",
            extra={"queryUUID": query_uuid, "engine": plan.engine},
        )
        final = object_name(query_uuid, record.format)
        name = single_object_name(query_uuid, record.run_attempts or 1)
        started = self.clock()
        upload = self.storage.open_upload(name, metadata={"queryUUID": query_uuid})

        def progress(rows: int) -> None:
            # Every few seconds: show progress and renew the lease in one write.
            now = self.clock()
            self.store.record_progress(query_uuid, self.worker, rows, now + self.lease)

        try:
            rows = self.engine.export(
                dataset.source,
                query,
                record.format,
                upload,
                part=plan.parts[0],
                on_progress=progress,
                clean=clean,
            )
            check_rows(plan.rows, rows)
            written = upload.commit()
        except ObjectAlreadyExists as exc:  # this attempt's name was taken: a worker's twin
            raise TransientError(f"the export's temporary object {name} is already there") from exc
        except BaseException:
            upload.abort()
            raise
        info = self.name_export(query_uuid, name, final, (written.crc32c, written.size))
        self.clean_up(query_uuid)
        result = ExportResult(
            object_name=final,
            rows=rows,
            size_bytes=info.size,
            crc32c=info.crc32c,
            md5=None,  # named by a compose: a composite has none
            started_on=started,
            completed_on=self.clock(),
            engine=plan.engine,
        )
        self.store.complete_export(query_uuid, self.worker, result)
        self.finish_engine(query_uuid)
        log.info(
            "export succeeded: %d rows, %d bytes",
            rows,
            info.size,
            extra={
                "queryUUID": query_uuid,
                "numberRows": rows,
                "sizeBytes": info.size,
                "durationMs": int((result.completed_on - started) / dt.timedelta(milliseconds=1)),
            },
        )
        return True, unscanned

    def clean_key(self, dataset: DatasetFile) -> str | None:
        """Where what is learnt of the dataset is kept: its identity under the engine's rules
        (an answer found under other rules is another key); None when it has no identity."""
        if dataset.identity is None:
            return None
        return f"{dataset.identity}|{self.engine.clean_rules()}"

    def known_clean_columns(self, dataset: DatasetFile, query_uuid: str) -> frozenset[str] | None:
        """The dataset's columns known to be clean (``ExportEngine.clean_columns``), which the
        export writes unchecked; None when not learnt yet (``learn_clean_columns``). A dataset
        without an identity has none: nothing learnt of it could be kept. Only speed depends
        on it, so a store that cannot answer is logged and every value is checked."""
        key = self.clean_key(dataset)
        if key is None:
            return frozenset()
        try:
            return self.store.clean_columns(key)
        except Exception as exc:
            log.warning(
                "could not read the dataset's clean columns; every value is checked: %s",
                public_detail(str(exc)) or type(exc).__name__,
                extra={"queryUUID": query_uuid},
            )
            return frozenset()

    def learn_clean_columns(self, dataset: DatasetFile, query_uuid: str) -> None:
        """Find the dataset's clean columns and keep them for its later exports.

        One read of its text and number columns (~0.4 CPU-s per 1M rows of the demo dataset),
        after the export that met the dataset first (after its ready message, or once a plan
        handed it to its parts), so no customer waits for it; two or three later CSV exports
        save what it costs (bench/README.md). Only speed depends on it: a file the engine
        refuses is kept as having none, any other failure is logged and the next export tries
        again.
        """
        key = self.clean_key(dataset)
        assert key is not None  # known_clean_columns knows the rest
        started = self.clock()
        try:
            try:
                columns = self.engine.clean_columns(dataset.source)
            except PermanentError as exc:
                log.warning(
                    "the dataset's columns are all checked: the scan was refused (%s)",
                    public_detail(str(exc)) or type(exc).__name__,
                    extra={"queryUUID": query_uuid},
                )
                columns = frozenset()
            self.store.keep_clean_columns(key, columns, self.clock())
        except Exception as exc:
            log.warning(
                "could not learn the dataset's clean columns: %s",
                public_detail(str(exc)) or type(exc).__name__,
                extra={"queryUUID": query_uuid},
                exc_info=not isinstance(exc, ExportError),
            )
            return
        log.info(
            "learnt the dataset's clean columns: %s",
            ", ".join(sorted(columns)) or "none",
            extra={
                "queryUUID": query_uuid,
                "cleanColumns": sorted(columns),
                "durationMs": int((self.clock() - started) / dt.timedelta(milliseconds=1)),
            },
        )

    def _hand_to_parts(self, record: ExportRecord, total: int) -> None:
        """Publish one message per part, then hand the export over to its parts."""
        assert self.parts_queue is not None  # a plan of several parts needs the parts topic
        self.parts_queue.publish_parts(record.query_uuid, range(total))
        self.store.mark_parts_published(record.query_uuid, self.worker, self.clock())

    def finish_engine(self, query_uuid: str) -> None:
        """Let the engine drop what it made for the export; a failure is only logged (the
        BigQuery result table also expires with its dataset's default expiration)."""
        try:
            self.engine.finish(query_uuid)
        except Exception as exc:
            log.warning(
                "could not drop the engine's temporary state: %s",
                public_detail(str(exc)) or type(exc).__name__,
                extra={"queryUUID": query_uuid},
            )

    def query_of(self, record: ExportRecord) -> Query:
        """The export's query under today's catalog; ``PermanentError`` when it no longer fits."""
        try:
            return record.dataset.query(self.catalog, max_rows=self.no_cap)
        except (InvalidRequest, ValueError) as exc:
            raise PermanentError(f"the query no longer fits the dataset: {exc}") from exc

    @staticmethod
    def final_object(query_uuid: str, fmt: str) -> str:
        """The export's object (``object_name``)."""
        return object_name(query_uuid, fmt)

    def attempt_error(self, attempt: int, exc: Exception, *, what: str = "") -> dict[str, str]:
        """The ``lastError`` of a failed attempt: its code, which attempt (of ``what``, e.g.
        "part 4: "), why, what happens next, and when."""
        code = "transient_error" if isinstance(exc, TransientError) else "internal_error"
        message = what + self._attempt_message(attempt, exc)
        return {"code": code, "message": message, "at": iso_z(self.clock()) or ""}

    def _attempt_message(self, attempt: int, exc: Exception) -> str:
        reason = public_detail(str(exc))
        if not isinstance(exc, ExportError):
            reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        left = (
            "it is retried automatically"
            if attempt < self.max_attempts
            else "this was the last attempt"
        )
        return f"attempt {attempt} of {self.max_attempts} failed ({reason}); {left}"

    def attempt_failed(self, record: ExportRecord, exc: Exception) -> None:
        """Record why this attempt failed and free the lease, so the status says it and the
        next delivery need not wait for the lease to expire."""
        attempt = record.run_attempts or 1
        error = self.attempt_error(attempt, exc)
        extra = {"queryUUID": record.query_uuid, "errorCode": error["code"], "attempt": attempt}
        log.warning(
            "export attempt failed, Pub/Sub will redeliver: %s", error["message"], extra=extra
        )
        try:
            self.store.release_export(record.query_uuid, self.worker, error)
        except Exception as release_error:  # the store may be what failed: the lease expires
            log.warning(
                "could not record the failed attempt: %s",
                type(release_error).__name__,
                extra={"queryUUID": record.query_uuid},
            )

    def fail(self, query_uuid: str, code: str, message: str) -> None:
        """End the export failed with its reason, and delete its temporary objects."""
        if self.store.fail_export(query_uuid, code, message, self.clock()):
            log.error(
                "export failed: %s", message, extra={"queryUUID": query_uuid, "errorCode": code}
            )
        self.clean_up(query_uuid)
        self.finish_engine(query_uuid)

    def name_export(
        self, query_uuid: str, source: str, final: str, expected: tuple[str | None, int]
    ) -> ObjectInfo:
        """Give the checked temporary object ``source`` (crc32c and size ``expected``) the
        export's name ``final`` by a create-only compose: the export's object appears once,
        complete, or not at all. An earlier attempt's object of the same bytes is kept."""
        try:
            return self.storage.compose([source], final, metadata={"queryUUID": query_uuid})
        except ObjectAlreadyExists:
            found = self.storage.stat(final)
            if found is None or not matches(found, expected):
                raise other_content(final) from None
            return found

    def clean_up(self, query_uuid: str) -> None:
        """Delete the export's temporary objects (parts, header, intermediate composites).

        A failure is raised (transient), so the message that asked for it comes again; the
        bucket's lifecycle rule on ``tmp/`` is the backstop.
        """
        leftovers = self.storage.list(tmp_prefix(query_uuid))
        if len(leftovers) > 1:
            with ThreadPoolExecutor(min(_DELETE_CONCURRENCY, len(leftovers))) as pool:
                list(pool.map(self._delete, leftovers))  # list(): the first error is raised
        elif leftovers:
            self._delete(leftovers[0])
        if leftovers:
            log.info(
                "deleted %d temporary objects",
                len(leftovers),
                extra={"queryUUID": query_uuid},
            )

    def _delete(self, info: ObjectInfo) -> None:
        self.storage.delete(info.name, if_generation=info.generation)

    def announce(self, query_uuid: str) -> None:
        """Tell notify the export is ready, and remember that it was told."""
        self.ready.publish(query_uuid)
        self.store.mark_ready_published(query_uuid, self.clock())

    def give_up(self, query_uuid: str, attempts: int | None, *, part: int | None = None) -> None:
        """A dead-lettered request or part: record the failure so the status API says why."""
        tried = f" after {attempts} delivery attempts" if attempts else ""
        record = self.store.get_export(query_uuid)
        last = last_error_suffix(record.last_error) if record is not None else ""
        what = "the export" if part is None else f"part {part + 1} of the export"
        self.fail(
            query_uuid,
            "dead_lettered",
            f"{what} could not be processed{tried}{last}; it was moved to the dead-letter topic",
        )
