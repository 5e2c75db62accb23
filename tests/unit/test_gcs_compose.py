"""Compose, delete and list over a fake HTTP transport under the real storage client.

fake-gcs-server v1.54 ignores ifGenerationMatch on compose and delete, returns an MD5 for
composites and answers 500 where Cloud Storage answers 404 for a missing source, so the
preconditions and the error mapping are checked here, against what Cloud Storage answers; the
emulator test (tests/integration/test_gcs_compose_emulator.py) covers the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from dataset_export.adapters.gcs_storage import GcsExportStorage
from dataset_export.core.errors import (
    ObjectAlreadyExists,
    ObjectMissing,
    PermanentError,
    TransientError,
)
from dataset_export.service.ports import ObjectInfo

ENDPOINT = "https://storage.example"
FINAL = "exports/q.csv.gz"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


class FakeResponse:
    def __init__(self, status: int, body: dict[str, Any] | None, method: str, url: str) -> None:
        self.status_code = status
        self.content = json.dumps(body).encode() if body is not None else b""
        self.text = self.content.decode()
        self.headers = {"content-type": "application/json"}
        self.request = SimpleNamespace(method=method, url=url)

    def json(self) -> Any:
        return json.loads(self.content)


BUCKET_PATH = "/storage/v1/b/exports"
BUCKET = {"kind": "storage#bucket", "name": "exports", "id": "exports", "location": "US"}


@dataclass
class FakeSession:
    """The client's HTTP session: records each request, answers with ``replies``' next answer.

    The storage client (3.17) also reads the bucket's metadata once, from a thread of its own,
    for its tracing attributes; that GET is answered apart and not recorded.
    """

    replies: list[tuple[int, dict[str, Any] | None]]
    requests: list[Request] = field(default_factory=list)

    def request(
        self,
        method: str,
        url: str,
        data: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **_: Any,
    ) -> FakeResponse:
        parts = urlsplit(url)
        if method == "GET" and parts.path == BUCKET_PATH:
            return FakeResponse(200, BUCKET, method, url)
        body = json.loads(data) if data else None
        self.requests.append(Request(method, parts.path, parse_qs(parts.query), body))
        status, answer = self.replies.pop(0)
        return FakeResponse(status, answer, method, url)


def resource(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "storage#object",
        "name": name,
        "bucket": "exports",
        "size": "81",
        "crc32c": "jI/LLQ==",
        "generation": "1796150829358892",
        **extra,
    }


def error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": status, "message": message}}


def exports(
    replies: list[tuple[int, dict[str, Any] | None]], *, retry: Retry | None = None
) -> tuple[GcsExportStorage, FakeSession]:
    session = FakeSession(replies)
    client = storage.Client(
        project="p",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        _http=session,
        client_options={"api_endpoint": ENDPOINT},
    )
    return GcsExportStorage(client, "exports", retry=retry), session


def compose_into(
    storage_: GcsExportStorage, sources: list[str] | None = None
) -> Callable[[], ObjectInfo]:
    names = sources or ["tmp/q/header", "tmp/q/part-00000", "tmp/q/part-00001"]
    return lambda: storage_.compose(names, FINAL, metadata={"queryUUID": "q"})


def test_compose_is_create_only_and_sends_the_sources_in_order() -> None:
    """One POST with ifGenerationMatch=0, the sources in order and the export's headers."""
    storage_, session = exports([(200, resource(FINAL, md5Hash="hGevkeooWy4WkIo2Suj8hw=="))])
    sources = [f"tmp/q/part-{i:05d}" for i in (3, 1, 2, 0)]
    info = storage_.compose(sources, FINAL, metadata={"queryUUID": "q"})
    (request,) = session.requests
    assert request.method == "POST"
    assert request.path == "/storage/v1/b/exports/o/exports%2Fq.csv.gz/compose"
    assert request.query["ifGenerationMatch"] == ["0"]
    assert [s["name"] for s in request.body["sourceObjects"]] == sources
    destination = request.body["destination"]
    assert destination["contentType"] == "application/gzip"
    assert destination["contentDisposition"] == 'attachment; filename="q.csv.gz"'
    assert destination["metadata"] == {"queryUUID": "q"}
    assert "contentEncoding" not in destination
    assert info == ObjectInfo(
        name=FINAL, size=81, crc32c="jI/LLQ==", md5=None, generation=1796150829358892
    )


def test_composing_over_an_existing_object_raises_object_already_exists() -> None:
    """A 412 (the destination is there: an earlier compose landed) is ObjectAlreadyExists."""
    storage_, session = exports([error(412, "At least one of the pre-conditions did not hold.")])
    with pytest.raises(ObjectAlreadyExists, match=FINAL):
        compose_into(storage_)()
    assert len(session.requests) == 1


def test_a_missing_source_raises_object_missing_a_permanent_error() -> None:
    """A 404 (a source is gone) is ObjectMissing, permanent, naming the destination."""
    storage_, _ = exports([error(404, "Object tmp/q/part-00001 not found.")])
    with pytest.raises(ObjectMissing, match=r"composing exports/q\.csv\.gz") as caught:
        compose_into(storage_)()
    assert isinstance(caught.value, PermanentError)
    assert "storage.example" not in str(caught.value)  # the request URL is elided


def test_an_unavailable_service_is_transient() -> None:
    """A 503 once the retries are spent raises TransientError, so Pub/Sub redelivers."""
    storage_, _ = exports([error(503, "Backend Error")])
    with pytest.raises(TransientError, match=r"composing exports/q\.csv\.gz"):
        compose_into(storage_)()


def test_a_retried_compose_whose_first_attempt_landed_reports_already_exists() -> None:
    """The policy retries a 503; the retry's 412 says the first attempt made the object."""
    fast = Retry(initial=0.001, maximum=0.001, timeout=5)
    storage_, session = exports(
        [
            error(503, "Backend Error"),
            error(412, "At least one of the pre-conditions did not hold."),
        ],
        retry=fast,
    )
    with pytest.raises(ObjectAlreadyExists):
        compose_into(storage_)()
    assert [r.query["ifGenerationMatch"] for r in session.requests] == [["0"], ["0"]]


def test_too_many_sources_is_google_s_own_client_error() -> None:
    """A 400 (more than 32 sources) is raised as Google's BadRequest, not as transient."""
    storage_, _ = exports([error(400, "The number of source components provided (33) exceeds")])
    with pytest.raises(gexc.BadRequest):
        compose_into(storage_, [f"tmp/q/part-{i:05d}" for i in range(33)])()


@pytest.mark.parametrize(
    ("reply", "deleted"),
    [((204, None), True), (error(404, "Not Found"), False), (error(412, "Precondition"), False)],
)
def test_delete_of_one_generation(reply: tuple[int, dict[str, Any] | None], deleted: bool) -> None:
    """Delete sends ifGenerationMatch; 404 and 412 mean the object is not there any more."""
    storage_, session = exports([reply])
    assert storage_.delete("tmp/q/part-00000", if_generation=42) is deleted
    (request,) = session.requests
    assert request.method == "DELETE"
    assert request.path == "/storage/v1/b/exports/o/tmp%2Fq%2Fpart-00000"
    assert request.query["ifGenerationMatch"] == ["42"]


def test_delete_without_a_generation_sends_no_precondition() -> None:
    """Without a generation the delete is unconditional."""
    storage_, session = exports([(204, None)])
    assert storage_.delete("tmp/q/part-00000") is True
    assert "ifGenerationMatch" not in session.requests[0].query


def test_delete_of_an_unavailable_service_is_transient() -> None:
    """A 503 on delete raises TransientError."""
    storage_, _ = exports([error(503, "Backend Error")])
    with pytest.raises(TransientError, match="deleting tmp/q/part-00000"):
        storage_.delete("tmp/q/part-00000")


def test_list_reads_every_page_and_drops_a_composite_s_md5() -> None:
    """All pages under the prefix come back, with generations; a composite has no MD5."""
    first = {
        "items": [resource("tmp/q/compose-r1-00000", componentCount=32, md5Hash="bWQ1")],
        "nextPageToken": "page-2",
    }
    second = {"items": [resource("tmp/q/part-00000", md5Hash="bWQ2", generation="7")]}
    storage_, session = exports([(200, first), (200, second)])
    infos = storage_.list("tmp/q/")
    assert [(i.name, i.md5, i.generation) for i in infos] == [
        ("tmp/q/compose-r1-00000", None, 1796150829358892),
        ("tmp/q/part-00000", "bWQ2", 7),
    ]
    assert [r.query["prefix"] for r in session.requests] == [["tmp/q/"], ["tmp/q/"]]
    assert "pageToken" not in session.requests[0].query
    assert session.requests[1].query["pageToken"] == ["page-2"]


def test_stat_reports_the_generation_and_no_md5_for_a_composite() -> None:
    """stat returns the generation; a composite's MD5 is None, a plain object's is kept."""
    storage_, _ = exports(
        [
            (200, resource(FINAL, componentCount=3, md5Hash="bWQ1")),
            (200, resource("exports/r.csv.gz", md5Hash="bWQ2", generation="9")),
            error(404, "Not Found"),
        ]
    )
    assert storage_.stat(FINAL) == ObjectInfo(FINAL, 81, "jI/LLQ==", None, 1796150829358892)
    assert storage_.stat("exports/r.csv.gz") == ObjectInfo(
        "exports/r.csv.gz", 81, "jI/LLQ==", "bWQ2", 9
    )
    assert storage_.stat("exports/none.csv.gz") is None
