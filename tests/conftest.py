"""Session fixtures: one real local stack (official emulators + the three functions) for the
integration and end-to-end tests, started once on its own ports and stopped by PID at the end.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from dataset_export_tools.localstack.stack import Ports, StackConfig, StackInfo, down, up

REPO = Path(__file__).resolve().parents[1]
# Property tests check results, not speed: on a shared 2-core machine (CI, or beside a bench)
# one example can take longer than hypothesis's 200 ms default deadline.
settings.register_profile("dwe", deadline=None)
settings.load_profile("dwe")
# Ports apart from `make up`'s defaults, so tests can run while a developer's stack is up.
TEST_PORTS = Ports.starting_at(int(os.environ.get("DWE_TEST_PORT_BASE", "28081")))


class SessionLogs:
    """The stack's logs as this test session wrote them: `make up` appends to a part's log
    across runs, so what earlier sessions (or earlier code) wrote is left out."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        self._start = {p.name: p.stat().st_size for p in logs_dir.glob("*.log")}

    def paths(self) -> list[Path]:
        """Every part's log file, sorted by name."""
        return sorted(self.logs_dir.glob("*.log"))

    def text(self, name: str) -> str:
        """What this session appended to the log ``name`` (e.g. ``notify.log``)."""
        with (self.logs_dir / name).open("rb") as log:
            log.seek(self._start.get(name, 0))
            return log.read().decode("utf-8", errors="replace")


_session_logs: list[SessionLogs] = []


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, ``kill``) ends the session as Ctrl-C does, so the fixtures' teardown
    still stops every emulator and function the session started, by PID."""
    signal.signal(signal.SIGTERM, _interrupted)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    """The whole local stack, as `make up` builds it, on the test ports."""
    # Schemathesis fires hundreds of requests a minute; the rate limit has its own unit test.
    os.environ.setdefault("EXPORT_RATE_LIMIT_PER_MINUTE", "100000")
    config = StackConfig(
        state_dir=REPO / ".local" / "test-stack",
        repo_root=REPO,
        ports=TEST_PORTS,
        project="dwe-test",
        dataset_rows=20_000,
    )
    _session_logs.append(SessionLogs(config.logs_dir))
    info = up(config)
    try:
        yield info
    finally:
        down(config)


@pytest.fixture(scope="session")
def stack_logs(stack: StackInfo) -> SessionLogs:
    """The test stack's logs, limited to what this session wrote."""
    return _session_logs[-1]


@pytest.fixture(scope="session")
def stack_env(stack: StackInfo) -> Iterator[dict[str, str]]:
    """The stack's settings, also applied to this process so Google clients use the emulators."""
    saved = dict(os.environ)
    os.environ.update(
        {k: v for k, v in stack.env.items() if k.endswith("_HOST") or k == "GOOGLE_CLOUD_PROJECT"}
    )
    try:
        yield dict(stack.env)
    finally:
        os.environ.clear()
        os.environ.update(saved)
