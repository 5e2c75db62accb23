"""Download links that keep working for 30 days although a signed GCS URL lives at most 7.

The webhook's ``gcsBlob.url`` points at the submit function:
``{public}/dataset/export/{queryUUID}/download?token=...``. The token is our own: the export id
and an expiry, authenticated with HMAC-SHA256 under a server key. A valid token earns a redirect
to a freshly signed, short-lived GCS URL; an expired one gets 410, a tampered one 403.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
from urllib.parse import quote

from .errors import Forbidden, LinkExpired

LINK_LIFETIME = dt.timedelta(days=30)
_VERSION = "1"
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", re.ASCII)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode("ascii"), hashlib.sha256).digest())


def make_token(query_uuid: str, expires: dt.datetime, key: bytes) -> str:
    """A token for ``query_uuid`` valid until ``expires``."""
    claims = json.dumps(
        {"v": _VERSION, "q": query_uuid, "e": int(expires.timestamp())}, separators=(",", ":")
    )
    body = _b64(claims.encode("utf-8"))
    return f"{body}.{_mac(key, body)}"


def download_url(public_url: str, query_uuid: str, token: str) -> str:
    """The stable link the webhook carries."""
    return f"{public_url}/dataset/export/{quote(query_uuid)}/download?token={token}"


def verify_token(token: str, query_uuid: str, key: bytes, now: dt.datetime) -> dt.datetime:
    """Check a token for ``query_uuid``; return its expiry, or raise 403 / 410."""
    # Anything outside the token's alphabet (non-ASCII included) is refused before it is used.
    if not _TOKEN.fullmatch(token):
        raise Forbidden("download link is not valid (malformed token)", code="link_invalid")
    body, _, mac = token.partition(".")
    if not hmac.compare_digest(_mac(key, body), mac):
        raise Forbidden("download link is not valid (signature mismatch)", code="link_invalid")
    try:
        claims = json.loads(_unb64(body))
        expires = dt.datetime.fromtimestamp(int(claims["e"]), dt.UTC)
        subject = str(claims["q"])
    except (ValueError, KeyError, TypeError):
        raise Forbidden("download link is not valid", code="link_invalid") from None
    if subject != query_uuid:  # the export id is no secret: a plain comparison will do
        raise Forbidden("download link belongs to another export", code="link_invalid")
    if expires <= now:
        raise LinkExpired(
            f"download link expired on {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}; "
            "ask for a redelivery to get a new one"
        )
    return expires
