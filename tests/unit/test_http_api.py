"""Unit tests of the HTTP API on in-memory fakes: statuses, bodies and the submit rules."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.records import ExportStatus
from dataset_export.http_api import (
    HttpRequest,
    body_connection,
    body_timeout,
    openapi_document,
    read_body,
)
from dataset_export.service.keys import create_api_key, revoke_api_key

from .conftest import KEK, SEED_BODY, World


def test_seed_example_is_accepted_recorded_and_queued(world: World) -> None:
    """The seed's request gets 201, one record with the dataset as sent, one message."""
    response = world.call("POST", "/dataset/export", SEED_BODY)
    assert response.status == 201, response.body
    query_uuid = response.body["queryUUID"]
    assert response.headers["Location"] == f"/dataset/export/{query_uuid}"
    assert world.queue.published == [query_uuid]
    record = world.store.exports[query_uuid]
    assert record.status is ExportStatus.QUEUED
    assert json.loads(record.dataset.text) == SEED_BODY["dataset"]
    assert record.webhook_url == SEED_BODY["webhookURL"]
    assert record.key_hash != world.key
    assert world.key not in repr(record)


def test_payload_is_kept_exactly_as_written(world: World) -> None:
    """Key order and number spelling survive (1500.0 stays 1500.0, big ints stay exact)."""
    raw = (
        b'{"name":"n","format":"jsonl","webhookURL":"https://yourapp.com/h","dataset":'
        b'{"limit":5,"filters":[{"filter":{"gte":1500.0},"column":"asking_rent"},'
        b'{"column":"sqft","filter":{"lt":12345678901234567890}}],'
        b'"scopes":[{"column":"city"},{"alias":"n","aggregate":"count","column":"bed"}]}}'
    )
    response = world.call("POST", "/dataset/export", raw)
    assert response.status == 400  # 12345678901234567890 exceeds 64-bit: refused, not rounded
    ok = raw.replace(b"12345678901234567890", b"9007199254740993")
    response = world.call("POST", "/dataset/export", ok)
    assert response.status == 201, response.body
    stored = world.store.exports[response.body["queryUUID"]].dataset.text
    assert stored == (
        '{"limit":5,"filters":[{"filter":{"gte":1500.0},"column":"asking_rent"},'
        '{"column":"sqft","filter":{"lt":9007199254740993}}],'
        '"scopes":[{"column":"city"},{"alias":"n","aggregate":"count","column":"bed"}]}'
    )


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (None, "forbidden"),
        ("", "forbidden"),
        ("nope", "forbidden"),
        ("dwe_aaaaaaaaaa_" + "A" * 43, "forbidden"),
    ],
)
def test_missing_or_unknown_key_is_403(world: World, key: str | None, code: str) -> None:
    """No key or a wrong key is 403 with a JSON error."""
    response = world.call("POST", "/dataset/export", SEED_BODY, key=key)
    assert response.status == 403
    assert response.body["error"]["code"] == code
    assert "API key" in response.body["error"]["message"]


def test_revoked_key_is_403(world: World) -> None:
    """A revoked key stops working at once."""
    key_id = next(iter(world.store.keys.values())).key_id
    assert revoke_api_key(world.store, key_id)
    response = world.call("POST", "/dataset/export", SEED_BODY)
    assert response.status == 403
    assert "revoked" in response.body["error"]["message"]


def test_account_without_subscription_is_403(world: World) -> None:
    """Keys of accounts without Query Builder are refused and told why."""
    key, _ = create_api_key(world.store, "trial", kek=KEK, query_builder=False)
    response = world.call("POST", "/dataset/export", SEED_BODY, key=key)
    assert response.status == 403
    assert response.body["error"]["code"] == "subscription_required"
    assert "Query Builder" in response.body["error"]["message"]


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda b: b.pop("webhookURL"), "webhookURL", "required"),
        (lambda b: b.update(webhookUrl="https://x"), "webhookUrl", "did you mean 'webhookURL'"),
        (lambda b: b.update(format="xml"), "format", "'csv' or 'jsonl'"),
        (lambda b: b.update(name=""), "name", "must not be empty"),
        (lambda b: b.update(name="x" * 201), "name", "at most 200"),
        (lambda b: b.update(name=5), "name", "must be a string"),
        (lambda b: b.update(dataset=[]), "dataset", "must be an object"),
        (
            lambda b: b["dataset"]["scopes"][1].update(column="rentt"),
            "dataset.scopes[1].column",
            "unknown column 'rentt'",
        ),
        (lambda b: b.update(webhookURL="http://yourapp.com/h"), "webhookURL", "https"),
        (lambda b: b.update(webhookURL="https://127.0.0.1/h"), "webhookURL", "loopback"),
        (lambda b: b.update(webhookURL="https://rebind.example/h"), "webhookURL", "private"),
        (
            lambda b: b.update(webhookURL="https://nowhere.invalid/h"),
            "webhookURL",
            "does not resolve",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_field(
    world: World, mutate: object, field: str, words: str
) -> None:
    """Each invalid body is a 400 that says what was wrong and where; nothing is queued."""
    body = copy.deepcopy(SEED_BODY)
    mutate(body)  # type: ignore[operator]
    response = world.call("POST", "/dataset/export", body)
    assert response.status == 400, response.body
    assert response.body["error"]["field"] == field
    assert words in response.body["error"]["message"]
    assert world.queue.published == []
    assert world.store.exports == {}


def _seed_filters(body: dict[str, Any], filters: Any) -> None:
    body["dataset"]["filters"] = filters


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda b: b["dataset"]["filters"][0]["filter"].update(equals="\udfff"),
            "dataset.filters[0].filter.equals",
        ),
        (
            lambda b: _seed_filters(
                b, [{"column": "city", "filter": {"in": ["Seattle", "Tac\ud800oma"]}}]
            ),
            "dataset.filters[0].filter.in[1]",
        ),
        (
            lambda b: _seed_filters(
                b,
                {
                    "and": [
                        None,
                        {"or": [{"column": "zip_code", "filter": {"between": ["9", "\ude00"]}}]},
                    ]
                },
            ),
            "dataset.filters.and[1].or[0].filter.between[1]",
        ),
        (
            lambda b: b["dataset"]["scopes"][0].update(column="street\udfff"),
            "dataset.scopes[0].column",
        ),
        (lambda b: b["dataset"]["scopes"][1].update(alias="rent\ud83d"), "dataset.scopes[1].alias"),
        (
            lambda b: b["dataset"].update(
                orderBy=[{"column": "street_address", "direction": "\udc00"}]
            ),
            "dataset.orderBy[0].direction",
        ),
        (lambda b: b.update(webhookURL="https://yourapp.com/\udfff"), "webhookURL"),
        (lambda b: b.update(name="Seattle \ud800"), "name"),
        (lambda b: b.update(format="csv\udfff"), "format"),
        (lambda b: b["dataset"].update({"lim\udfffit": 5}), "dataset"),
    ],
)
def test_text_that_is_not_unicode_is_400_wherever_it_is(
    world: World, mutate: object, field: str
) -> None:
    """A lone surrogate escape in any string or field name of the body is a 400 at its path."""
    body = copy.deepcopy(SEED_BODY)
    mutate(body)  # type: ignore[operator]
    raw = json.dumps(body).encode()  # ASCII JSON: the lone surrogate travels as a \\uXXXX escape
    assert b"\\ud" in raw
    response = world.call("POST", "/dataset/export", raw)
    assert response.status == 400, response.body
    error = response.body["error"]
    assert error["field"] == field
    assert "not valid Unicode" in error["message"]
    assert "lone surrogate" in error["message"]
    assert field in error["message"]
    json.dumps(response.body, ensure_ascii=False).encode("utf-8")  # the answer itself is UTF-8
    assert world.queue.published == []
    assert world.store.exports == {}


def test_a_surrogate_pair_is_one_character_and_accepted(world: World) -> None:
    """An escaped surrogate pair (``\\ud83d\\ude00``) is a whole character: 201."""
    body = copy.deepcopy(SEED_BODY)
    body["name"] = "Seattle \U0001f600"
    body["dataset"]["filters"][0]["filter"]["equals"] = "Seattle \U0001f600"
    raw = json.dumps(body).encode()
    assert b"\\ud83d\\ude00" in raw
    assert world.call("POST", "/dataset/export", raw).status == 201


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "JSON object"),
        (b"\xff\xfe", "UTF-8"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"[" * 2000 + b"]" * 2000, ""),
    ],
)
def test_malformed_json_is_400(world: World, raw: bytes, words: str) -> None:
    """Bodies that are not a JSON object are 400 with a reason."""
    response = world.call("POST", "/dataset/export", raw)
    assert response.status == 400
    assert words in response.body["error"]["message"]


def test_wrong_content_type_is_415(world: World) -> None:
    """A body not declared as JSON is 415."""
    response = world.call(
        "POST", "/dataset/export", SEED_BODY, headers={"Content-Type": "text/plain"}
    )
    assert response.status == 415
    assert "application/json" in response.body["error"]["message"]
    ok = world.call(
        "POST",
        "/dataset/export",
        SEED_BODY,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status == 201


def test_large_body_is_413(world: World) -> None:
    """Bodies above the limit are refused before parsing."""
    body = copy.deepcopy(SEED_BODY)
    body["name"] = "x" * 5000
    response = world.call("POST", "/dataset/export", body)
    assert response.status == 413
    assert "4096 bytes" in response.body["error"]["message"]


def test_queue_outage_is_503_and_leaves_nothing(world: World) -> None:
    """If the publish fails the client gets 503 and no record remains."""
    world.queue.unavailable = True
    response = world.call("POST", "/dataset/export", SEED_BODY, headers={"Idempotency-Key": "k1"})
    assert response.status == 503
    assert world.store.exports == {}
    assert world.store.idempotency == {}
    world.queue.unavailable = False
    retry = world.call("POST", "/dataset/export", SEED_BODY, headers={"Idempotency-Key": "k1"})
    assert retry.status == 201
    assert world.queue.published == [retry.body["queryUUID"]]


def test_idempotency_key_replays_and_queues_nothing_new(world: World) -> None:
    """The same key and body give the same queryUUID; one message in all."""
    first = world.call(
        "POST", "/dataset/export", SEED_BODY, headers={"Idempotency-Key": "order-42"}
    )
    second = world.call(
        "POST", "/dataset/export", SEED_BODY, headers={"Idempotency-Key": "order-42"}
    )
    assert first.status == second.status == 201
    assert first.body == second.body
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert world.queue.published == [first.body["queryUUID"]]
    other = world.call(
        "POST", "/dataset/export", SEED_BODY, headers={"Idempotency-Key": "order-43"}
    )
    assert other.body != first.body


def test_idempotency_key_with_other_body_is_422(world: World) -> None:
    """Reusing a key for a different body is refused."""
    world.call("POST", "/dataset/export", SEED_BODY, headers={"Idempotency-Key": "k"})
    changed = copy.deepcopy(SEED_BODY)
    changed["name"] = "other"
    response = world.call("POST", "/dataset/export", changed, headers={"Idempotency-Key": "k"})
    assert response.status == 422
    assert response.body["error"]["field"] == "Idempotency-Key"


def test_idempotency_keys_are_per_api_key(world: World) -> None:
    """Two customers may use the same Idempotency-Key independently."""
    other_key, _ = create_api_key(world.store, "globex", kek=KEK)
    a = world.call("POST", "/dataset/export", SEED_BODY, headers={"Idempotency-Key": "same"})
    b = world.call(
        "POST", "/dataset/export", SEED_BODY, key=other_key, headers={"Idempotency-Key": "same"}
    )
    assert a.status == b.status == 201
    assert a.body != b.body


def test_rate_limit_is_429_with_retry_after(world: World) -> None:
    """More than the allowance is 429 with Retry-After; once that has passed it is fine again."""
    statuses = [world.call("POST", "/dataset/export", SEED_BODY).status for _ in range(6)]
    assert statuses == [201] * 5 + [429]
    limited = world.call("POST", "/dataset/export", SEED_BODY)
    assert limited.body["error"]["code"] == "rate_limited"
    retry_after = int(limited.headers["Retry-After"])
    assert retry_after == 61  # the five of 10:00:00.x leave the window at 10:01:01
    world.clock.now += dt.timedelta(seconds=retry_after - 1)
    assert world.call("POST", "/dataset/export", SEED_BODY).status == 429
    world.clock.now += dt.timedelta(seconds=1)
    assert world.call("POST", "/dataset/export", SEED_BODY).status == 201


def test_status_is_visible_only_to_the_owning_key(world: World) -> None:
    """The owner reads the status document; any other key gets 404."""
    query_uuid = world.call("POST", "/dataset/export", SEED_BODY).body["queryUUID"]
    mine = world.call("GET", f"/dataset/export/{query_uuid}")
    assert mine.status == 200
    assert mine.body == {
        "queryUUID": query_uuid,
        "name": SEED_BODY["name"],
        "format": "csv",
        "status": "queued",
        "requestedOn": "2026-11-27T10:00:00.000Z",
    }
    other_key, _ = create_api_key(world.store, "globex", kek=KEK)
    assert world.call("GET", f"/dataset/export/{query_uuid}", key=other_key).status == 404
    assert world.call("GET", "/dataset/export/not-a-uuid").status == 404
    assert world.call("GET", f"/dataset/export/{query_uuid}", key=None).status == 403


def test_unknown_routes_and_methods(world: World) -> None:
    """Unknown paths are 404 and wrong methods 405 with Allow, all JSON."""
    assert world.call("GET", "/nope").status == 404
    response = world.call("GET", "/dataset/export")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert world.call("DELETE", "/dataset/export/x").status == 405


def test_openapi_is_served_and_lists_the_catalog(world: World) -> None:
    """``GET /openapi.json`` serves the 3.1 document whose column enum is the catalog."""
    response = world.call("GET", "/openapi.json", key=None)
    assert response.status == 200
    assert response.body["openapi"].startswith("3.1")
    columns = openapi_document()["components"]["schemas"]["ColumnName"]["enum"]
    assert columns == RENTAL_LISTINGS.names()


def test_download_link_redirects_then_expires(world: World) -> None:
    """A valid link redirects to a signed URL; after 30 days it is 410; tampered is 403."""
    import datetime as dt

    from dataset_export.service.downloads import Downloads

    class Signer:
        def sign(self, name: str, lifetime: dt.timedelta) -> str:
            return f"https://storage.example/{name}?X-Goog-Expires={int(lifetime.total_seconds())}"

    query_uuid = world.call("POST", "/dataset/export", SEED_BODY).body["queryUUID"]
    world.store.exports[query_uuid] = dataclasses.replace(
        world.store.exports[query_uuid],
        status=ExportStatus.SUCCEEDED,
        completed_on=world.clock.now,
        object_name=f"exports/{query_uuid}.csv.gz",
    )
    world.api.downloads = Downloads(
        world.store, Signer(), b"l" * 32, "https://api.example", world.clock
    )
    url = world.call("GET", f"/dataset/export/{query_uuid}").body["download"]["url"]
    path, _, token = url.removeprefix("https://api.example").partition("?token=")

    def fetch(tok: str) -> object:
        return world.api.handle(HttpRequest("GET", path, {}, b"", {"token": tok}))

    ok = fetch(token)
    assert ok.status == 302  # type: ignore[attr-defined]
    assert ok.headers["Location"].endswith("X-Goog-Expires=900")  # type: ignore[attr-defined]
    assert fetch(token[:-1] + ("A" if token[-1] != "A" else "B")).status == 403  # type: ignore[attr-defined]
    world.clock.now += dt.timedelta(days=30, seconds=1)
    gone = fetch(token)
    assert gone.status == 410  # type: ignore[attr-defined]
    assert gone.body["error"]["code"] == "link_expired"  # type: ignore[attr-defined]


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected (server, client) pair of sockets."""
    server, client = socket.socketpair()
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def test_body_that_stalls_is_cut_off_at_the_deadline(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """A body that stops arriving ends the blocked read at the deadline: None, not a hang."""
    server, client = connection
    client.sendall(b'{"dataset":')
    reader = server.makefile("rb")
    t0 = time.monotonic()
    assert read_body(reader.read, 65537, server, timeout=0.5) is None
    assert 0.4 < time.monotonic() - t0 < 3


def test_body_that_trickles_is_cut_off_at_the_deadline(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """The deadline bounds the whole body, not each read: a byte every 50 ms does not extend it."""
    server, client = connection
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.05):
            try:
                client.send(b" ")
            except OSError:
                return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        reader = server.makefile("rb")
        t0 = time.monotonic()
        assert read_body(reader.read, 65537, server, timeout=0.5) is None
        assert time.monotonic() - t0 < 3
    finally:
        stop.set()
        sender.join()


def test_body_that_arrives_in_time_is_read_whole(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """A prompt body is returned as sent (up to the limit), and the connection stays readable."""
    server, client = connection
    client.sendall(b"x" * 100)
    client.shutdown(socket.SHUT_WR)
    reader = server.makefile("rb")
    assert read_body(reader.read, 50, server, timeout=0.5) == b"x" * 50
    time.sleep(0.7)  # past the deadline: the timer was cancelled and shut nothing
    assert reader.read(100) == b"x" * 50


def test_body_connection_only_for_requests_with_a_body() -> None:
    """The deadline applies to requests that declare a body; a GET has none to wait for."""
    server, client = socket.socketpair()
    with server, client:
        assert body_connection({"CONTENT_LENGTH": "60000", "gunicorn.socket": server}) is server
        assert body_connection({"HTTP_TRANSFER_ENCODING": "chunked", "gunicorn.socket": server})
        assert body_connection({"CONTENT_LENGTH": "0", "gunicorn.socket": server}) is None
        assert body_connection({"gunicorn.socket": server}) is None
        assert body_connection({"CONTENT_LENGTH": "5"}) is None


def test_body_timeout_is_a_json_408() -> None:
    """The 408 carries the same JSON error shape as every other refusal."""
    answer = body_timeout(10)
    assert answer.status == 408
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.body["error"]["code"] == "request_timeout"
    assert "within 10 s" in answer.body["error"]["message"]
