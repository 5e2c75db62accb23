"""End to end on a stack of its own: the demo's 1M-row dataset with EXPORT_PART_ROWS=200000.

Issue 11's acceptance: a full-table export runs as at least 4 parts, pushed by the Pub/Sub
emulator to the process function like any request, and yields one gzip object whose rows are
the dataset's, with nothing left under the temporary prefix and the webhook delivered. And once
the stack has learnt the dataset version's clean columns, a plan's parts write them unchecked,
to the same records.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import time
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


def records(text: str) -> list[str]:
    """The CSV's records as written (a quoted field may hold a line break), header first."""
    found, pending = [], ""
    for line in text.split("\n")[:-1]:
        pending = f"{pending}\n{line}" if pending else line
        if pending.count('"') % 2 == 0:  # outside quotes: "" inside a field keeps the parity
            found.append(pending)
            pending = ""
    assert pending == ""
    return found


def test_a_later_export_writes_the_clean_columns_unchecked_and_the_same_records(
    parts_stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once an export has taught the stack the dataset version's clean columns (kept under
    the generation in the datasets bucket and the engine's rules), the next full-table plan
    records them for its parts, and its file holds exactly the records the engine writes over
    the same file with every value checked."""
    from dataset_export.adapters.firestore_store import FirestoreStore
    from dataset_export.core.query import parse_dataset
    from dataset_export.engine import DuckDbEngine
    from dataset_export.engine.duckdb_engine import clean_rules

    env = parts_stack.env
    for name in ("STORAGE_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST"):
        monkeypatch.setenv(name, env[name])
    uri = env["EXPORT_DATASET_GCS_URI"]
    bucket_name, _, object_name = uri.removeprefix("gs://").partition("/")
    datasets = storage.Client(project=env["GOOGLE_CLOUD_PROJECT"]).bucket(bucket_name)
    blob = datasets.get_blob(object_name)
    assert blob is not None
    key = f"{uri}#{blob.generation}|{clean_rules()}"
    store = FirestoreStore.for_project(
        env["GOOGLE_CLOUD_PROJECT"], env.get("EXPORT_FIRESTORE_DATABASE") or None
    )
    columns = [c.name for c in RENTAL_LISTINGS.columns]
    dataset = {"scopes": [{"column": c} for c in columns]}
    small = {"scopes": [{"column": "city"}], "filters": [{"column": "bed", "filter": {"in": [9]}}]}
    with httpx.Client(
        base_url=env["EXPORT_API_URL"], headers={"x-api-key": env["EXPORT_API_KEY"]}, timeout=30
    ) as client:

        def run(query: dict[str, object]) -> dict[str, object]:
            body = {"dataset": query, "webhookURL": env["EXPORT_WEBHOOK_URL"], "format": "csv"}
            response = client.post("/dataset/export", json={**body, "name": "clean columns"})
            assert response.status_code == 201, response.text
            doc = wait(client, response.json()["queryUUID"])
            assert doc["status"] == "succeeded", doc
            return doc

        run(small)  # the version's first export here, unless the test above ran first
        for _ in range(120):  # the scan runs after the export's ready message
            if store.clean_columns(key) is not None:
                break
            time.sleep(0.5)
        clean = store.clean_columns(key)
        assert clean is not None
        assert {"property_id", "street_address", "asking_rent"} <= clean
        doc = run(dataset)
        record = store.get_export(str(doc["queryUUID"]))
        assert record is not None
        assert (record.clean_columns, record.clean_rules) == (clean, clean_rules())
        assert record.parts_total is not None
        assert record.parts_total >= 4
        url = doc["download"]["url"]  # type: ignore[index]
        data = gzip.decompress(client.get(url, follow_redirects=True).content).decode("utf-8")
    out = io.BytesIO()
    query = parse_dataset(dataset, RENTAL_LISTINGS, max_rows=10**9)
    DuckDbEngine().export(env["EXPORT_DATASET_PATH"], query, "csv", out)
    checked = gzip.decompress(out.getvalue()).decode("utf-8")
    got, want = records(data), records(checked)
    assert got[0] == want[0] == ",".join(columns)
    assert sorted(got[1:]) == sorted(want[1:])
    assert any(r.startswith('"') or ',"' in r for r in got[1:])  # quoted fields are there too
