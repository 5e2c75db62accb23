"""End to end on a stack of its own: the demo's 1M-row dataset with EXPORT_PART_ROWS=200000.

Issue 11's acceptance: a full-table export runs as at least 4 parts, pushed by the Pub/Sub
emulator to the process function like any request, and yields one gzip object whose rows are
the dataset's, with nothing left under the temporary prefix and the webhook delivered.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from google.cloud import storage

from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.parts import tmp_prefix
from dataset_export_tools.localstack.stack import StackInfo
from dataset_export_tools.localstack.state import Ports, StackConfig
from tests.e2e.stacks import running, wait

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# The session stack's block plus 40: clear of it, of the BigQuery differential test's
# emulator (+18, +19) and of the local-stack tests' own block.
PORTS = Ports.starting_at(int(os.environ.get("DWE_TEST_PORT_BASE", "28081")) + 40)


@pytest.fixture(scope="module")
def parts_stack() -> Iterator[StackInfo]:
    """The whole stack on the demo's 1M rows, parts of 200,000 rows."""
    config = StackConfig(
        state_dir=REPO / ".local" / "test-stack-parts",
        repo_root=REPO,
        ports=PORTS,
        project="dwe-parts",
        dataset_rows=1_000_000,
        part_settings={"EXPORT_PART_ROWS": "200000"},
    )
    with running(config) as info:
        yield info


def test_a_full_table_export_of_the_demo_dataset_runs_as_parts(
    parts_stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At least 4 parts, one gzip object with every row of the dataset, no temporaries left."""
    env = parts_stack.env
    columns = [c.name for c in RENTAL_LISTINGS.columns]
    body = {
        "dataset": {"scopes": [{"column": c} for c in columns]},
        "webhookURL": env["EXPORT_WEBHOOK_URL"],
        "name": "Full table in parts",
        "format": "csv",
    }
    with httpx.Client(
        base_url=env["EXPORT_API_URL"], headers={"x-api-key": env["EXPORT_API_KEY"]}, timeout=30
    ) as client:
        response = client.post("/dataset/export", json=body)
        assert response.status_code == 201, response.text
        query_uuid = response.json()["queryUUID"]
        doc = wait(client, query_uuid)
        assert doc["status"] == "succeeded", doc
        assert doc["parts"]["total"] >= 4
        assert doc["parts"] == {"total": doc["parts"]["total"], "done": doc["parts"]["total"]}
        assert doc["engine"] == "duckdb"
        assert doc["delivery"]["state"] == "delivered", doc["delivery"]
        assert "md5" not in doc["checksum"]
        data = client.get(doc["download"]["url"], follow_redirects=True).content
    assert len(data) == doc["sizeBytes"]
    table = pq.read_table(env["EXPORT_DATASET_PATH"], columns=["property_id"])
    rows = list(csv.reader(io.StringIO(gzip.decompress(data).decode("utf-8"), newline="")))
    assert rows[0] == columns
    assert doc["numberRows"] == table.num_rows == len(rows) - 1
    assert sorted(r[0] for r in rows[1:]) == sorted(table["property_id"].to_pylist())
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])
    bucket = storage.Client(project=env["GOOGLE_CLOUD_PROJECT"]).bucket(env["EXPORT_BUCKET"])
    assert list(bucket.list_blobs(prefix=tmp_prefix(query_uuid))) == []
