"""The parts of an export planned as parts: run each one, and compose them when the last is done.

The request's worker plans the export (``ExportRunner``): one record per part, one message per
part on the parts topic. Here each message runs one part, exactly once in effect, with the
export's own guarantees per part:

* **Claim**: a part is claimed like an export (``core.lifecycle.decide_claim`` on the part's
  record, written with a precondition on the version read), so duplicates of a part message are
  ``busy`` (redelivered until the part is done) or ``done``, and write no second part.
* **Run**: the part's rows (file rows ``[start, stop)``) go as one gzip member into a temporary
  object of that attempt's own (``tmp/<queryUUID>/part-00007-a2``) through a create-only
  resumable upload: a part killed mid-upload leaves nothing visible and its next delivery runs
  it again, and a worker that outlived its lease can neither replace nor delete the object the
  part's record names. The rows found must be the rows the plan counted; other rows mean the
  dataset changed under the export.
* **Compose**: the part that finds every part done leases the export (a precondition on the
  export's record: exactly one wins, no contended transaction; a duplicate that finds the lease
  held is redelivered, so the export never waits on a message already acknowledged). It
  composes the parts in order in rounds of at most 32 sources (``core.compose``) into
  ``tmp/<queryUUID>/composed``, renewing its lease each round, checks that composite's size
  and crc32c against the ones combined from the parts' own (``core.checksums``, no re-read),
  and only then gives it the export's name with a create-only compose of one source: the final
  object appears once, complete, or not at all. It deletes the temporary objects, records the
  result and publishes the ready message, and its own part message is acknowledged only then.
  A part object found missing at compose time is queued and run again.
* **Failure**: a part that fails for good fails the export with its reason (no webhook) and
  deletes every temporary object; a part message that arrives after the export finished, either
  way, deletes what is left under the export's temporary prefix.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..core.checksums import combined_crc32c
from ..core.compose import ComposeStep, compose_steps
from ..core.errors import (
    LeaseLost,
    ObjectAlreadyExists,
    ObjectMissing,
    PermanentError,
    PreconditionFailed,
    TransientError,
)
from ..core.formats import ExportFormat
from ..core.lifecycle import ClaimVerdict, claimed_part, decide_claim, last_error_suffix
from ..core.parts import (
    check_rows,
    composed_object_name,
    header_object_name,
    part_object_name,
    tmp_prefix,
)
from ..core.records import ExportRecord, ExportStatus, PartRecord, part_spec
from .ports import ExportResult, ObjectInfo

if TYPE_CHECKING:
    from .process import ExportRunner

log = logging.getLogger(__name__)

# Compose calls of one round sent at once.
_COMPOSE_CONCURRENCY = 8


class PartRunner:
    """Runs the part messages of exports planned as parts, on its runner's adapters."""

    def __init__(self, runner: ExportRunner) -> None:
        self._runner = runner

    # --- one part ------------------------------------------------------------------------------

    def handle(self, query_uuid: str, index: int) -> None:
        """Run part ``index`` if it is this delivery's to run, and compose if it was the last.

        Returns when the message should be acknowledged; raises ``TransientError`` otherwise.
        """
        r = self._runner
        extra = {"queryUUID": query_uuid, "part": index}
        record = r.store.get_export(query_uuid)
        if record is None:
            log.warning("part message for an unknown export; dropping", extra=extra)
            return
        if record.status in (ExportStatus.FAILED, ExportStatus.SUCCEEDED):
            if record.status is ExportStatus.SUCCEEDED and record.ready_published_on is None:
                r.announce(query_uuid)
            r.clean_up(query_uuid)  # whatever a late attempt left after the export ended
            return
        total = record.parts_total or 0
        if index >= total or r.store.read_part(query_uuid, index) is None:
            log.warning("part message for a part the export does not have; dropping", extra=extra)
            return
        part = self._claim(query_uuid, index)
        if part is None:  # done already: the export may still wait for its compose
            self.compose_if_last(query_uuid)
            return
        if part.attempts > r.max_attempts:
            r.fail(
                query_uuid,
                "too_many_attempts",
                f"part {index + 1} of {total} did not finish in {r.max_attempts} attempts"
                f"{last_error_suffix(part.last_error)}; please submit the export again",
            )
            return
        try:
            rows, info = self._run(record, part)
        except PermanentError as exc:
            r.fail(query_uuid, exc.code, f"part {index + 1} of {total}: {exc}")
            return
        except LeaseLost:
            raise
        except Exception as exc:
            self._attempt_failed(part, exc)
            raise
        try:
            r.store.complete_part(query_uuid, index, r.worker, rows, info, r.clock())
        except LeaseLost:
            # Another attempt owns the part now: this attempt's object is nobody's.
            r.storage.delete(info.name, if_generation=info.generation)
            raise
        log.info(
            "part %d of %d done: %d rows, %d bytes",
            index + 1,
            total,
            rows,
            info.size,
            extra=extra | {"numberRows": rows, "sizeBytes": info.size},
        )
        after = r.store.get_export(query_uuid)
        if after is not None and after.status is ExportStatus.FAILED:
            # The export failed while this part ran: its clean-up may have missed this object.
            r.clean_up(query_uuid)
            return
        self.compose_if_last(query_uuid)

    def _claim(self, query_uuid: str, index: int) -> PartRecord | None:
        """The part as claimed by this worker; None when it is done; ``TransientError`` when
        another worker holds it (the message then outlives a worker that dies)."""
        r = self._runner
        now = r.clock()
        for _ in range(r.claim_retries):
            read = r.store.read_part(query_uuid, index)
            if read is None:
                raise TransientError(f"part {index + 1} of export {query_uuid} disappeared")
            decision = decide_claim(read.part.status, read.part.lease_expires_on, now)
            log.info(
                "part claim %s: %s",
                decision.verdict.value,
                decision.reason,
                extra={"queryUUID": query_uuid, "part": index},
            )
            if decision.verdict is ClaimVerdict.DONE:
                return None
            if decision.verdict is ClaimVerdict.BUSY:
                raise TransientError(f"part {index + 1} of export {query_uuid} is being run")
            part = claimed_part(read.part, r.worker, now, r.lease)
            try:
                r.store.write_part_claim(part, if_version=read.version)
            except PreconditionFailed:
                continue
            return part
        raise LeaseLost(f"could not claim part {index + 1} of export {query_uuid}")

    def _run(self, record: ExportRecord, part: PartRecord) -> tuple[int, ObjectInfo]:
        r = self._runner
        query = r.query_of(record)
        source = r.datasets.open(record.dataset_version).source
        # The plan's clean columns, if found under the rules this engine checks by.
        same_rules = record.clean_rules == r.engine.clean_rules()
        clean = record.clean_columns if same_rules else frozenset()
        name = part_object_name(record.query_uuid, part.index, part.attempts)
        upload = r.storage.open_upload(
            name, metadata={"queryUUID": record.query_uuid, "part": str(part.index)}
        )

        def progress(rows: int) -> None:
            now = r.clock()
            r.store.record_part_progress(
                record.query_uuid, part.index, r.worker, rows, now + r.lease
            )

        try:
            rows = r.engine.export(
                source,
                query,
                record.format,
                upload,
                part=part_spec(part),
                header=False,
                on_progress=progress,
                clean=clean,
            )
            check_rows(part.expected_rows, rows)
            info = upload.commit()
        except ObjectAlreadyExists as exc:  # this attempt's name was taken: a worker's twin
            raise TransientError(f"part {part.index + 1}'s object is already there") from exc
        except BaseException:
            upload.abort()
            raise
        return rows, info

    def _attempt_failed(self, part: PartRecord, exc: Exception) -> None:
        r = self._runner
        error = r.attempt_error(part.attempts or 1, exc, what=f"part {part.index + 1}: ")
        extra = {"queryUUID": part.query_uuid, "part": part.index, "attempt": part.attempts}
        log.warning(
            "part attempt failed, Pub/Sub will redeliver: %s", error["message"], extra=extra
        )
        try:
            r.store.release_part(part.query_uuid, part.index, r.worker, error)
        except Exception as release_error:  # the store may be what failed: the lease expires
            log.warning(
                "could not record the failed part attempt: %s",
                type(release_error).__name__,
                extra=extra,
            )

    # --- compose ---------------------------------------------------------------------------------

    def is_done(self, query_uuid: str, index: int) -> bool:
        """Whether part ``index`` of the export finished (its object recorded)."""
        read = self._runner.store.read_part(query_uuid, index)
        return read is not None and read.part.status is ExportStatus.SUCCEEDED

    def compose_if_last(self, query_uuid: str) -> None:
        """Compose the export if every part is done; ``TransientError`` while another worker
        composes it (so this message, too, is delivered again until the export is finished)."""
        r = self._runner
        parts = r.store.list_parts(query_uuid)
        if not parts or any(p.status is not ExportStatus.SUCCEEDED for p in parts):
            return
        now = r.clock()
        for _ in range(r.claim_retries):
            read = r.store.read_for_claim(query_uuid)
            if read is None:
                return
            record = read.record
            if record.status is not ExportStatus.RUNNING:
                if record.status is ExportStatus.SUCCEEDED and record.ready_published_on is None:
                    r.announce(query_uuid)
                return
            if record.lease_expires_on is not None and record.lease_expires_on > now:
                raise TransientError(f"export {query_uuid} is being composed by another worker")
            try:
                r.store.claim_compose(query_uuid, r.worker, now + r.lease, if_version=read.version)
            except PreconditionFailed:
                continue
            break
        else:
            raise LeaseLost(f"could not lease export {query_uuid} to compose it")
        parts = parts[: record.parts_total or 0]
        try:
            self._compose(record, parts)
        except ObjectMissing as exc:
            self._run_missing_parts_again(record, parts, exc)
            return
        except PermanentError as exc:
            r.fail(query_uuid, exc.code, f"composing the parts failed: {exc}")
            return
        except LeaseLost:
            raise
        except Exception as exc:
            r.attempt_failed(record, exc)
            raise
        r.announce(query_uuid)

    def _compose(self, record: ExportRecord, parts: Sequence[PartRecord]) -> None:
        r = self._runner
        query_uuid = record.query_uuid
        started = time.monotonic()
        rows = sum(p.rows_written for p in parts)
        check_rows(record.planned_rows, rows)
        known: dict[str, tuple[str | None, int]] = {}  # object -> (crc32c, size)
        if record.format == ExportFormat.CSV:
            header = self._header(record)
            known[header.name] = (header.crc32c, header.size)
        for part in parts:
            if part.object_name is None or part.size_bytes is None:
                raise TransientError(f"part {part.index + 1} is done but has no object recorded")
            known[part.object_name] = (part.crc32c, part.size_bytes)
        sources = list(known)
        expected = _expected(known, sources)
        final = r.final_object(query_uuid, record.format)
        final_info = r.storage.stat(final)
        if final_info is None:
            final_info = self._compose_checked(query_uuid, sources, final, known, rows)
        elif not matches(final_info, expected):
            raise other_content(final)
        # else an earlier composer named the file and died before recording it: keep it.
        compose_ms = int((time.monotonic() - started) * 1000)
        r.clean_up(query_uuid)
        completed = r.clock()
        started_on = record.started_on or completed
        result = ExportResult(
            object_name=final,
            rows=rows,
            size_bytes=final_info.size,
            crc32c=final_info.crc32c,
            md5=None,  # a composite object has none
            started_on=started_on,
            completed_on=completed,
            engine=record.engine,
        )
        r.store.complete_export(query_uuid, r.worker, result)
        r.finish_engine(query_uuid)
        log.info(
            "export succeeded: %d rows, %d bytes, %d parts composed in %d ms",
            rows,
            final_info.size,
            len(parts),
            compose_ms,
            extra={
                "queryUUID": query_uuid,
                "numberRows": rows,
                "sizeBytes": final_info.size,
                "parts": len(parts),
                "composeMs": compose_ms,
                "durationMs": int((completed - started_on) / dt.timedelta(milliseconds=1)),
            },
        )

    def _compose_checked(
        self,
        query_uuid: str,
        sources: Sequence[str],
        final: str,
        known: dict[str, tuple[str | None, int]],
        rows: int,
    ) -> ObjectInfo:
        """Compose ``sources`` into the temporary composite, check it against the parts, and
        give it the export's name (create-only): the final object is complete or absent."""
        r = self._runner
        expected_crc, expected_size = _expected(known, sources)
        composed = composed_object_name(query_uuid)
        info = r.storage.stat(composed)
        if info is None or not matches(info, (expected_crc, expected_size)):
            info = self._compose_rounds(query_uuid, sources, composed, known, rows)
        if not matches(info, (expected_crc, expected_size)):
            r.storage.delete(composed, if_generation=info.generation)
            raise TransientError(
                f"the composed export does not match its parts ({info.size} bytes, crc32c "
                f"{info.crc32c}; the parts make {expected_size} bytes, crc32c {expected_crc}); "
                "composing again"
            )
        r.store.record_progress(query_uuid, r.worker, rows, r.clock() + r.lease)
        return r.name_export(query_uuid, composed, final, (expected_crc, expected_size))

    def _compose_rounds(
        self,
        query_uuid: str,
        sources: Sequence[str],
        composed: str,
        known: dict[str, tuple[str | None, int]],
        rows: int,
    ) -> ObjectInfo:
        """Compose ``sources`` into ``composed`` round by round; its info."""
        r = self._runner
        info: ObjectInfo | None = None
        for step_round in compose_steps(sources, composed, tmp_prefix(query_uuid)):
            # Each round renews the lease (LeaseLost if the export failed meanwhile).
            r.store.record_progress(query_uuid, r.worker, rows, r.clock() + r.lease)
            with ThreadPoolExecutor(min(_COMPOSE_CONCURRENCY, len(step_round))) as pool:
                made = list(
                    pool.map(lambda step: self._compose_step(query_uuid, step, known), step_round)
                )
            for step, step_info in zip(step_round, made, strict=True):
                known[step.destination] = (step_info.crc32c, step_info.size)
            info = made[-1]
        assert info is not None  # compose_steps has at least one round
        return info

    def _compose_step(
        self, query_uuid: str, step: ComposeStep, known: dict[str, tuple[str | None, int]]
    ) -> ObjectInfo:
        """One compose call; an intermediate an earlier composer left is kept when it is the
        same composite, else deleted (it is temporary) and made again."""
        storage = self._runner.storage
        metadata = {"queryUUID": query_uuid}
        try:
            return storage.compose(step.sources, step.destination, metadata=metadata)
        except ObjectAlreadyExists:
            found = storage.stat(step.destination)
            if found is not None and matches(found, _expected(known, step.sources)):
                return found
            if found is not None:
                storage.delete(step.destination, if_generation=found.generation)
            return storage.compose(step.sources, step.destination, metadata=metadata)

    def _header(self, record: ExportRecord) -> ObjectInfo:
        """The CSV header's own gzip member, written once."""
        r = self._runner
        name = header_object_name(record.query_uuid)
        info = r.storage.stat(name)
        if info is not None:
            return info
        upload = r.storage.open_upload(name, metadata={"queryUUID": record.query_uuid})
        try:
            upload.write(r.engine.header(r.query_of(record), record.format))
            return upload.commit()
        except ObjectAlreadyExists:
            found = r.storage.stat(name)
            if found is None:
                raise TransientError(
                    f"object {name} reported as existing but cannot be read"
                ) from None
            return found
        except BaseException:
            upload.abort()
            raise

    def _run_missing_parts_again(
        self, record: ExportRecord, parts: Sequence[PartRecord], exc: ObjectMissing
    ) -> None:
        """A part's object is gone (deleted by hand, or by the bucket's lifecycle rule): queue
        those parts again and give the compose up; their completion composes again."""
        r = self._runner
        query_uuid = record.query_uuid
        missing = [p for p in parts if p.object_name and r.storage.stat(p.object_name) is None]
        for part in missing:
            read = r.store.read_part(query_uuid, part.index)
            if read is None:
                continue
            queued = dataclasses.replace(
                read.part,
                status=ExportStatus.QUEUED,
                lease_owner=None,
                lease_expires_on=None,
                rows_written=0,
            )
            r.store.write_part_claim(queued, if_version=read.version)
        indices = [p.index for p in missing]
        log.warning(
            "part objects missing at compose time (%s); running parts %s again",
            exc,
            [i + 1 for i in indices],
            extra={"queryUUID": query_uuid},
        )
        if r.parts_queue is None:
            raise TransientError("part objects are missing and there is no parts topic")
        r.parts_queue.publish_parts(query_uuid, indices)
        r.attempt_failed(record, TransientError(f"part objects were missing ({exc})"))


def _expected(
    known: dict[str, tuple[str | None, int]], sources: Sequence[str]
) -> tuple[str | None, int]:
    """The crc32c (None when a source's is unknown) and size of ``sources`` concatenated."""
    pieces = [known[s] for s in sources]
    size = sum(length for _, length in pieces)
    if any(crc is None for crc, _ in pieces):
        return None, size
    return combined_crc32c([(crc, length) for crc, length in pieces if crc is not None]), size


def matches(info: ObjectInfo, expected: tuple[str | None, int]) -> bool:
    """Whether ``info`` has the ``expected`` (crc32c, size); a crc32c of None: the size only."""
    crc, size = expected
    return info.size == size and (crc is None or info.crc32c == crc)


def other_content(final: str) -> PermanentError:
    """The export's object exists but is not the one this run made."""
    return PermanentError(
        f"the export's object {final} already exists with other content (an earlier attempt "
        "wrote it from other data): submit the export again"
    )
