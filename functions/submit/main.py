"""HTTP Cloud Function ``submit``: the public API (POST /dataset/export and friends)."""

from __future__ import annotations

import functools

import flask
import functions_framework
from werkzeug.exceptions import HTTPException

from dataset_export import logs
from dataset_export.config import Settings
from dataset_export.http_api import (
    ExportApi,
    HttpRequest,
    body_connection,
    body_timeout,
    framework_error,
    read_body,
)
from dataset_export.wiring import build_export_api

logs.configure()


@functools.cache
def _api() -> tuple[ExportApi, Settings]:
    settings = Settings.from_env()
    return build_export_api(settings), settings


@functions_framework.http
def submit(request: flask.Request) -> flask.Response:
    """Decode the Flask request, let the API answer, encode the response."""
    api, _ = _api()  # the API sets its own log scope (trace, queryUUID) per request
    # Read one byte past the limit: enough to know it is too large, never the whole body; and
    # only for so long, so a client that stalls cannot hold a worker thread.
    body = read_body(request.stream.read, api.max_body_bytes + 1, body_connection(request.environ))
    if body is None:
        answer = body_timeout()
    else:
        answer = api.handle(
            HttpRequest(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                body=body,
                query=request.args.to_dict(),
            )
        )
    return flask.Response(answer.encoded(), status=answer.status, headers=answer.headers)


@functions_framework.errorhandler(HTTPException)
def _framework_error(exc: HTTPException) -> flask.Response:
    """Keep errors JSON even when routing refuses a path before ``submit`` runs."""
    status = exc.code or 500
    answer = framework_error(status, f"no route for this path ({status})")
    return flask.Response(answer.encoded(), status=answer.status, headers=answer.headers)
