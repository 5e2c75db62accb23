"""End to end through the stack `make up` builds: the `make run` demo, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dataset_export.localstack.stack import StackInfo

pytestmark = pytest.mark.e2e


def test_demo_runs_the_seed_export_end_to_end(stack: StackInfo) -> None:
    """The demo submits the seed's export; the webhook arrives verified and the file is shown."""
    result = subprocess.run(
        [sys.executable, "-m", "dataset_export.demo", "--stack-env", str(stack.env_file)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "-> HTTP 201" in out
    assert "succeeded" in out
    assert out.count("verified:") == 3
    assert "MISMATCH" not in out
    assert "street_address,avg_asking_rent" in out
    assert '"state": "delivered"' in out
    assert "source .local/stack.env" in out
