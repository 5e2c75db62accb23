"""Unit tests of exportctl's failures: each is one line on stderr naming the problem, exit 1."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataset_export_tools.cli import main
from dataset_export_tools.demo import SEED_DATASET_FILE
from dataset_export_tools.localstack.envfile import write_env_file

WEBHOOK = "https://example.com/hook"


@pytest.fixture(autouse=True)
def _no_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run from a folder without .local/stack.env, with a key and an API that is not there."""
    monkeypatch.chdir(tmp_path)
    for name in ("EXPORT_API_URL", "EXPORT_API_KEY", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EXPORT_API_KEY", "dwe_test_key")
    monkeypatch.setenv("EXPORT_API_URL", f"http://127.0.0.1:{_closed_port()}")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run exportctl, check it failed with exactly one line on stderr, return that line."""
    assert main(list(argv)) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("exportctl: ")
    assert "Traceback" not in captured.err
    return lines[0]


def test_missing_dataset_file_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    """A dataset file that does not exist is named, and nothing is sent."""
    line = _fails(capsys, "submit", "--dataset", "query.json", "--webhook", WEBHOOK, "--name", "n")
    assert line == "exportctl: dataset file query.json does not exist"


def test_bad_json_names_the_file_and_the_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Malformed JSON is reported with the file, the line and the column."""
    (tmp_path / "bad.json").write_text('{\n  "scopes": [,]\n}\n')
    line = _fails(capsys, "submit", "--dataset", "bad.json", "--webhook", WEBHOOK, "--name", "n")
    assert "dataset file bad.json is not valid JSON" in line
    assert "line 2, column 14" in line
    (tmp_path / "list.json").write_text("[1, 2]")
    line = _fails(capsys, "submit", "--dataset", "list.json", "--webhook", WEBHOOK, "--name", "n")
    assert "must hold a JSON object" in line


def test_unreachable_api_names_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    """An API that does not answer is one line with the URL it tried."""
    line = _fails(
        capsys, "submit", "--dataset", str(SEED_DATASET_FILE), "--webhook", WEBHOOK, "--name", "n"
    )
    assert "cannot reach http://127.0.0.1:" in line
    assert "/dataset/export" in line
    assert "Connection refused" in line


def test_unreachable_api_from_stack_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Settings come from an exported .local/stack.env when the environment has none."""
    monkeypatch.delenv("EXPORT_API_URL")
    (tmp_path / ".local").mkdir()
    url = f"http://127.0.0.1:{_closed_port()}"
    write_env_file(tmp_path / ".local" / "stack.env", {"EXPORT_API_URL": url})
    line = _fails(capsys, "status", "some-export")
    assert f"cannot reach {url}/dataset/export/some-export" in line


@pytest.fixture
def html_error_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An API address that answers 502 with a multi-line HTML page, as a broken proxy does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("EXPORT_API_URL", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def test_http_error_without_json_is_one_line(
    capsys: pytest.CaptureFixture[str], html_error_api: str
) -> None:
    """An error answer that is not the API's JSON still gives one line: status, request, body."""
    line = _fails(capsys, "status", "some-export")
    assert line == (
        f"exportctl: HTTP 502 from GET {html_error_api}/dataset/export/some-export: "
        "<html> <body> <h1>502 Bad Gateway</h1> </body> </html>"
    )


def test_bad_key_encryption_key_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key-encryption key that is not base64 is named, not a binascii traceback."""
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("EXPORT_KEY_ENCRYPTION_KEY", "not base64!")
    line = _fails(capsys, "keys", "create", "--account", "a")
    assert "EXPORT_KEY_ENCRYPTION_KEY is not base64" in line


def test_bad_firestore_database_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database ID Firestore would refuse is named before any key is made."""
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("EXPORT_FIRESTORE_DATABASE", "Staging_DB")
    line = _fails(capsys, "keys", "create", "--account", "a")
    assert line.startswith("exportctl: EXPORT_FIRESTORE_DATABASE must be (default) or")
    assert "got 'Staging_DB'" in line


def test_os_error_is_one_line_naming_the_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An OS error (here a folder that is not there) is one line naming the path."""
    line = _fails(
        capsys, "dataset", "generate", "--rows", "10", "--out", str(tmp_path / "no/such/x.parquet")
    )
    assert "no/such" in line
