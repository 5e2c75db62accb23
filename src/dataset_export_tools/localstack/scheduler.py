"""The local stand-in for Cloud Scheduler: publishes a retry tick every few seconds.

On Google Cloud a Cloud Scheduler job publishes to ``export-retry-tick`` every minute and the
topic is pushed to the notify function's ``/tick``; here this process publishes to the same
topic on the Pub/Sub emulator, so webhook retries run through the same path. It also answers
``GET /`` so the stack can tell it is up.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TICK_KIND = "retry-tick"


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the stack's logs are for ticks and errors."""


def _tick_forever(project: str, topic: str, interval: float, stop: threading.Event) -> None:
    from google.cloud.pubsub_v1 import PublisherClient

    publisher = PublisherClient()
    path = publisher.topic_path(project, topic)
    while not stop.wait(interval):
        try:
            data = json.dumps({"kind": TICK_KIND, "at": time.time()}).encode()
            publisher.publish(path, data, kind=TICK_KIND).result(timeout=10)
        except Exception as exc:  # keep ticking: the emulator may restart under us
            print(f"tick failed: {type(exc).__name__}: {exc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Serve health checks and publish ticks until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--topic", default="export-retry-tick")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between ticks")
    args = parser.parse_args(argv)
    stop = threading.Event()
    ticker = threading.Thread(
        target=_tick_forever, args=(args.project, args.topic, args.interval, stop), daemon=True
    )
    ticker.start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Health)
    try:
        server.serve_forever()
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
