"""A demo webhook receiver: stores every POST as a JSON file and answers 200 "OK".

    python -m dataset_export_tools.localstack.receiver --port 18084 --out .local/webhooks \\
        [--tls-cert server.pem --tls-key server-key.pem]

With a certificate it serves HTTPS (the local stack gives it one from its own CA, see
``localstack.pki``), so the webhook travels over verified TLS as it does in production.

Each request becomes `<out>/<UTC time>-<random>.json` holding
`{"receivedAt", "path", "headers", "body"}`: header names lower-cased (HTTP header names are
case-insensitive, so tests can look them up one way), the body as UTF-8 text. Files are
written under a temporary name and renamed, so a reader polling the directory never sees half
a file. `GET /` answers 200 "ok" (readiness). A POST to `/status/<code>` is stored too but
answered with that status, so retry paths can be tried by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import ssl
import sys
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

MAX_BODY_BYTES = 10 * 1024 * 1024
_STATUS_PATH = re.compile(r"^/status/([1-5][0-9][0-9])/?(?:\?.*)?$")


class _Handler(BaseHTTPRequestHandler):
    out_dir: ClassVar[Path]
    server_version = "dwe-demo-receiver/1"
    # HTTP/1.1 keeps connections alive between a client's retries, like a real endpoint.
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(200, b"ok")

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        now = datetime.now(UTC)
        record = {
            "receivedAt": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "path": self.path,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body": body.decode("utf-8", errors="replace"),
        }
        name = f"{now.strftime('%Y%m%dT%H%M%S%f')}-{secrets.token_hex(4)}"
        tmp = self.out_dir / f".{name}.tmp"
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
        tmp.replace(self.out_dir / f"{name}.json")
        match = _STATUS_PATH.match(self.path)
        status = int(match.group(1)) if match else 200
        self._answer(status, b"OK" if status == 200 else f"status {status}".encode())

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._answer(400, b"bad Content-Length", close=True)
            return None
        if length > MAX_BODY_BYTES:
            self._answer(413, b"body too large", close=True)
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                self._answer(400, b"bad chunk", close=True)
                return None
            if size == 0:
                # Trailers end with an empty line.
                while self.rfile.readline(1024).strip():
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                self._answer(413, b"body too large", close=True)
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _answer(self, status: int, body: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Request line and status only: headers carry webhook signatures, which stay out of logs.
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class _Server(ThreadingHTTPServer):
    """Serves plain HTTP, or HTTPS when given a TLS context."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(address, handler)
        self.tls = tls

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs in the request's own thread, so a client that connects and says
        # nothing cannot stall the accept loop.
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(30)
        try:
            tls_socket = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            sys.stderr.write(f"{client_address[0]} TLS handshake failed: {exc}\n")
            return
        with tls_socket:
            super().finish_request(tls_socket, client_address)


def make_server(
    host: str,
    port: int,
    out_dir: Path,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ThreadingHTTPServer:
    """A receiver bound to host:port that writes into out_dir (created if missing); HTTPS with
    ``cert_file`` and ``key_file``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = type("Handler", (_Handler,), {"out_dir": out_dir})
    tls = None
    if cert_file is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert_file, key_file)
    return _Server((host, port), handler, tls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dataset_export_tools.localstack.receiver",
        description=__doc__.split("\n")[0],
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    server = make_server(
        args.host, args.port, args.out.resolve(), cert_file=args.tls_cert, key_file=args.tls_key
    )
    scheme = "https" if args.tls_cert else "http"
    sys.stderr.write(
        f"webhook receiver on {scheme}://{args.host}:{args.port}/ writing to {args.out}\n"
    )
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
