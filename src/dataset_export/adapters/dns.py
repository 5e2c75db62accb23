"""The system resolver, with a deadline, as the URL policy's ``Resolver``."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from ..core.errors import HostNotFound, TransientError

RESOLVE_TIMEOUT_S = 5.0
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dns")


def _lookup(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def resolve(host: str, port: int) -> Sequence[str]:
    """Every address ``host`` resolves to; ``HostNotFound`` or ``TransientError`` otherwise."""
    future = _pool.submit(_lookup, host, port)
    try:
        return future.result(timeout=RESOLVE_TIMEOUT_S)
    except FutureTimeout:
        raise TransientError(f"resolving {host!r} timed out") from None
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN,):
            raise TransientError(f"resolving {host!r} failed for now: {exc}") from exc
        raise HostNotFound(host) from exc
