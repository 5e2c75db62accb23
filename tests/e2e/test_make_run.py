"""End to end through the stack `make up` builds: the `make run` demo, as a user runs it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_export_tools.localstack.stack import StackInfo

pytestmark = pytest.mark.e2e


def test_demo_runs_the_seed_export_end_to_end(stack: StackInfo) -> None:
    """The demo submits the seed's export; the webhook arrives verified and the file is shown."""
    result = subprocess.run(
        [sys.executable, "-m", "dataset_export_tools.demo", "--stack-env", str(stack.env_file)],
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


def test_demo_webhook_verifies_in_the_seed_express_handler(stack: StackInfo) -> None:
    """The webhook `make run` delivered passes the seed's Express handler and both headers."""
    key = stack.env["EXPORT_API_KEY"]
    hits = [
        json.loads(p.read_text("utf-8"))
        for p in sorted(Path(stack.env["EXPORT_WEBHOOK_DIR"]).glob("*.json"))
    ]
    demo = [h for h in hits if '"name":"Seattle Rental Data Export"' in h["body"]]
    assert demo, "run the demo test first: no webhook of the seed's export arrived"
    hit = demo[-1]
    wanted = (
        "content-type",
        "sha256-hmac-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    )
    case = {
        "id": "make-run",
        "apiKey": key,
        "bodyBase64": base64.b64encode(hit["body"].encode("utf-8")).decode(),
        "headers": {name: hit["headers"][name] for name in wanted},
    }
    node_dir = Path(__file__).resolve().parents[1] / "node"
    done = subprocess.run(
        ["node", str(node_dir / "verify.js"), "-"],
        input=json.dumps([case]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=node_dir,
    )
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["seed"] is True, result
    assert result["header"] is True, result
    assert result["standardWebhooks"] is True, result
