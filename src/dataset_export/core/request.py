"""The body of ``POST /dataset/export``: decoded, shape-checked, and the query validated.

Every string in the body, field names included, must be Unicode text: a lone surrogate escape
(``"\\udfff"``) anywhere is refused once, here, naming its field. The envelope is a pydantic
model; the ``dataset`` object goes through ``query.parse_dataset`` (which names the exact field
on error) and is also kept exactly as submitted (``core.dataset``), for the webhook's
``payload`` echo.
"""

from __future__ import annotations

import difflib
import unicodedata
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .catalog import Catalog
from .dataset import SubmittedDataset
from .errors import InvalidRequest
from .formats import ExportFormat
from .jsontext import find_lone_surrogate, parse_preserving, parse_standard
from .query import Query, parse_dataset

MAX_NAME_LENGTH = 200
_FIELDS = ("dataset", "webhookURL", "name", "format")


class ExportRequestBody(BaseModel):
    """The JSON envelope of an export request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: dict[str, Any]
    webhookURL: str  # the public API spells it so
    name: str
    format: ExportFormat

    @field_validator("format", mode="before")
    @classmethod
    def _format_any_case(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in tuple(ExportFormat):
            return ExportFormat(value.lower())
        raise ValueError("format must be 'csv' or 'jsonl'")

    @field_validator("name")
    @classmethod
    def _readable_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be empty")
        if len(value) > MAX_NAME_LENGTH:
            raise ValueError(f"name must be at most {MAX_NAME_LENGTH} characters")
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            raise ValueError("name must not contain control characters")
        return value

    @field_validator("webhookURL")
    @classmethod
    def _url_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("webhookURL must not be empty")
        return value


@dataclass(frozen=True)
class ExportSubmission:
    """A checked export request; the webhook URL still needs the URL policy."""

    query: Query
    dataset: SubmittedDataset
    webhook_url: str
    name: str
    format: ExportFormat


def _describe(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _as_invalid_request(error: ValidationError, body: dict[str, Any]) -> InvalidRequest:
    errors = error.errors()
    # An unknown key usually explains a "missing" one (``webhookUrl`` for ``webhookURL``).
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(p) for p in first["loc"]]
    field = loc[0] if loc else None
    kind = first["type"]
    if kind == "missing" and field:
        return InvalidRequest(f"'{field}' is required", field=field)
    if kind == "extra_forbidden" and field:
        close = difflib.get_close_matches(field, _FIELDS, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return InvalidRequest(
            f"unknown field '{field}'{hint}; allowed: {', '.join(_FIELDS)}", field=field
        )
    if field == "dataset" and kind == "dict_type":
        return InvalidRequest(
            f"dataset must be an object, got {_describe(body.get(field))}", field=field
        )
    if kind == "string_type" and field:
        return InvalidRequest(
            f"{field} must be a string, got {_describe(body.get(field))}", field=field
        )
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return InvalidRequest(message, field=field)


def decode_json_object(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode a request body to (plain, number-preserving) objects; raise ``InvalidRequest``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("request body must be UTF-8 encoded JSON") from None
    try:
        plain = parse_standard(text)
        preserved = parse_preserving(text)
    except RecursionError:
        raise InvalidRequest("request body nests too deeply") from None
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(plain, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {_describe(plain)}")
    _reject_lone_surrogates(plain)
    return plain, preserved


def _reject_lone_surrogates(document: dict[str, Any]) -> None:
    """Refuse a body holding a string that is not Unicode text, naming where it is."""
    found = find_lone_surrogate(document)
    if found is None:
        return
    what = f"a field name in {found.path or 'the request body'}" if found.in_key else found.path
    raise InvalidRequest(
        f"{what} is not valid Unicode: it holds the lone surrogate \\u{found.code_point:04x}; "
        "send whole characters (as UTF-8, or as a \\uXXXX\\uXXXX surrogate pair)",
        field=found.path or None,
    )


def parse_export_request(body: bytes, catalog: Catalog, *, max_rows: int) -> ExportSubmission:
    """Validate an export request body, or raise ``InvalidRequest`` naming field and problem."""
    plain, preserved = decode_json_object(body)
    try:
        envelope = ExportRequestBody.model_validate(plain)
    except ValidationError as exc:
        raise _as_invalid_request(exc, plain) from None
    query = parse_dataset(envelope.dataset, catalog, max_rows=max_rows)
    return ExportSubmission(
        query=query,
        dataset=SubmittedDataset.from_payload(preserved["dataset"]),
        webhook_url=envelope.webhookURL.strip(),
        name=envelope.name,
        format=envelope.format,
    )
