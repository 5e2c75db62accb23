"""Map Google client exceptions onto the service's own error tree, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from google.api_core import exceptions as gexc

from ..core.errors import TransientError

# Anything Google raises that a later retry may cure.
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.Aborted,
    gexc.RetryError,
    gexc.Unknown,
    TimeoutError,
    ConnectionError,
)


@contextmanager
def google_errors(what: str) -> Iterator[None]:
    """Re-raise transient Google failures as ``TransientError`` naming the operation."""
    try:
        yield
    except _TRANSIENT as exc:
        raise TransientError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
