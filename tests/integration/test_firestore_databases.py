"""Two deployments in one project, each on its own Firestore database, on the real emulator.

The emulator keeps named databases of one project apart as Firestore does (and accepts any
name, so the ID rule is config.py's to check). These tests show that accounts, API keys and
export records written to one database are invisible in another and in ``(default)``, that the
functions' builders (``wiring.py``) use the database of EXPORT_FIRESTORE_DATABASE, and that
``exportctl keys create`` writes where that variable says.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dataset_export.adapters.firestore_store import FirestoreStore
from dataset_export.config import Settings
from dataset_export.core.apikeys import key_hash
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.http_api import HttpRequest
from dataset_export.service.keys import create_api_key
from dataset_export.wiring import build_export_api, build_export_runner, build_notifier

pytestmark = pytest.mark.integration

EXPORTCTL = Path(sys.executable).with_name("exportctl")


def fresh_database(name: str) -> str:
    """A database ID no other test (or earlier run on this emulator) has written to."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def export_record(store: FirestoreStore, account: str, key_hash: str, key_id: str) -> str:
    """A queued export of ``account`` in ``store``; its queryUUID."""
    query_uuid = str(uuid.uuid4())
    store.create_export(
        ExportRecord(
            query_uuid=query_uuid, account_id=account, key_hash=key_hash, key_id=key_id,
            name=f"export of {account}", format="csv", webhook_url="https://example.com/hook",
            dataset=SubmittedDataset('{"scopes":[{"column":"city"}]}'), status=ExportStatus.QUEUED,
            requested_on=dt.datetime.now(dt.UTC),
        )
    )  # fmt: skip
    return query_uuid


def test_two_databases_in_one_project_are_disjoint(stack_env: dict[str, str]) -> None:
    """Accounts, keys and exports of one database are absent from the other and (default)."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    kek = Settings.from_env(stack_env).key_encryption_key
    first = FirestoreStore.for_project(project, fresh_database("first"))
    second = FirestoreStore.for_project(project, fresh_database("second"))
    default = FirestoreStore.for_project(project)

    account = f"acme-{uuid.uuid4().hex[:8]}"
    plaintext, key = create_api_key(first, account, kek=kek)
    query_uuid = export_record(first, account, key.key_hash, key.key_id)
    assert first.get_api_key(key_hash(plaintext)) is not None
    assert first.get_export(query_uuid) is not None
    for other in (second, default):
        assert other.get_account(account) is None
        assert other.get_api_key(key.key_hash) is None
        assert other.get_export(query_uuid) is None

    # The same account ID in the second database is another account.
    create_api_key(second, account, kek=kek, query_builder=False)
    in_first, in_second = first.get_account(account), second.get_account(account)
    assert in_first is not None
    assert in_first.query_builder
    assert in_second is not None
    assert not in_second.query_builder
    assert default.get_account(account) is None


def test_the_functions_use_the_database_they_are_configured_with(
    stack_env: dict[str, str],
) -> None:
    """The API, the export worker and the notifier built for a database read and write there."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    database = fresh_database("deployment")
    settings = Settings.from_env({**stack_env, "EXPORT_FIRESTORE_DATABASE": database})
    assert settings.firestore_database == database
    own = FirestoreStore.for_project(project, database)
    plaintext, key = create_api_key(own, "tenant", kek=settings.key_encryption_key)
    query_uuid = export_record(own, "tenant", key.key_hash, key.key_id)
    status = HttpRequest("GET", f"/dataset/export/{query_uuid}", {"x-api-key": plaintext})

    answer = build_export_api(settings).handle(status)
    assert answer.status == 200, answer.body
    assert answer.body["name"] == "export of tenant"
    # The stack's own functions use (default): there the key does not exist.
    assert build_export_api(Settings.from_env(stack_env)).handle(status).status == 403

    for store in (build_export_runner(settings).store, build_notifier(settings).store):
        found = store.get_export(query_uuid)
        assert found is not None
        assert found.account_id == "tenant"
    assert FirestoreStore.for_project(project).get_export(query_uuid) is None


def test_exportctl_creates_keys_in_the_database_it_is_given(stack_env: dict[str, str]) -> None:
    """``exportctl keys create`` with EXPORT_FIRESTORE_DATABASE puts the key in that database."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    database = fresh_database("operator")
    env = {
        **os.environ,
        "GOOGLE_CLOUD_PROJECT": project,
        "FIRESTORE_EMULATOR_HOST": stack_env["FIRESTORE_EMULATOR_HOST"],
        "EXPORT_KEY_ENCRYPTION_KEY": stack_env["EXPORT_KEY_ENCRYPTION_KEY"],
        "EXPORT_FIRESTORE_DATABASE": database,
    }
    made = subprocess.run(
        [str(EXPORTCTL), "keys", "create", "--account", "operator-made"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    hashed = key_hash(made.stdout.strip())
    record = FirestoreStore.for_project(project, database).get_api_key(hashed)
    assert record is not None
    assert record.account_id == "operator-made"
    assert FirestoreStore.for_project(project).get_api_key(hashed) is None
