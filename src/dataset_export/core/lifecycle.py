"""Who may run an export now: the claim rules behind "one worker at a time, nothing lost".

A worker claims an export by moving it to ``running`` with a lease. A queued export is free; a
running one is free again only when its lease expired (the worker died or hangs) or its worker
released it after a failed attempt (the status then shows that attempt's error); a finished one
is never run again. The runner (``service.process``) decides with :func:`decide_claim` on what
it read and writes :func:`claimed` with a precondition on the version it read, so two workers
deciding at once cannot both win: the loser reads again and decides again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from .records import ExportRecord, ExportStatus, PartRecord

DEFAULT_LEASE: Final = dt.timedelta(minutes=2)
"""How long a worker holds a claim before another may take over: an export run (renewed by
every progress write, a few seconds apart) and a webhook attempt (``core.delivery``: its worst
case, DNS 5 s + the 15 s total timeout plus two writes, is well inside it)."""


class ClaimVerdict(StrEnum):
    """What a worker should do with an export request it received."""

    RUN = "run"  # claim it and run the export
    BUSY = "busy"  # another worker holds a live lease: this delivery is a duplicate
    DONE = "done"  # already succeeded or failed: nothing to run


@dataclass(frozen=True)
class ClaimDecision:
    """A verdict with the reason, for the log."""

    verdict: ClaimVerdict
    reason: str
    takeover: bool = False


def decide_claim(
    status: ExportStatus,
    lease_expires_on: dt.datetime | None,
    now: dt.datetime,
    *,
    handed_to_parts: bool = False,
) -> ClaimDecision:
    """Decide whether a worker may claim an export (or a part) in ``status`` at ``now``.

    ``handed_to_parts``: the export was planned as parts and every part message published, so
    the parts run it from now on and a request message has nothing left to do.
    """
    if status in (ExportStatus.SUBMITTING, ExportStatus.QUEUED):
        return ClaimDecision(ClaimVerdict.RUN, "export is queued")
    if status is ExportStatus.RUNNING and handed_to_parts:
        return ClaimDecision(ClaimVerdict.DONE, "export is running as parts")
    if status is ExportStatus.RUNNING:
        if lease_expires_on is None:
            return ClaimDecision(
                ClaimVerdict.RUN,
                "the previous attempt failed and freed it; retrying",
                takeover=True,
            )
        if lease_expires_on <= now:
            return ClaimDecision(
                ClaimVerdict.RUN, "previous worker's lease expired; taking over", takeover=True
            )
        return ClaimDecision(ClaimVerdict.BUSY, "another worker holds a live lease")
    return ClaimDecision(ClaimVerdict.DONE, f"export already {status.value}")


def claimed(
    record: ExportRecord, worker: str, now: dt.datetime, lease: dt.timedelta
) -> ExportRecord:
    """``record`` once ``worker`` claimed it at ``now``: running under its lease, one more try."""
    return dataclasses.replace(
        record,
        status=ExportStatus.RUNNING,
        lease_owner=worker,
        lease_expires_on=now + lease,
        run_attempts=(record.run_attempts or 0) + 1,
        rows_written=0,
        started_on=record.started_on or now,
    )


def claimed_part(
    part: PartRecord, worker: str, now: dt.datetime, lease: dt.timedelta
) -> PartRecord:
    """``part`` once ``worker`` claimed it at ``now``: running under its lease, one more try,
    its rows counted again from zero."""
    return dataclasses.replace(
        part,
        status=ExportStatus.RUNNING,
        lease_owner=worker,
        lease_expires_on=now + lease,
        attempts=part.attempts + 1,
        rows_written=0,
    )


def last_error_suffix(error: dict[str, str] | None) -> str:
    """`` (last error: ...)`` from a record's last failed attempt, or nothing."""
    message = (error or {}).get("message")
    return f" (last error: {message})" if message else ""
