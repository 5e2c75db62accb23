"""The 30-day download link: mint it, and trade a valid one for a fresh signed GCS URL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import NotFound
from ..core.links import LINK_LIFETIME, download_url, make_token, verify_token
from ..core.records import ExportRecord, ExportStatus
from .ports import ExportReader, UrlSigner

# Long enough to start a large download; short enough that a leaked URL soon goes stale.
SIGNED_URL_LIFETIME = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class DownloadLink:
    """The stable link and when it stops working."""

    url: str
    expires: dt.datetime


def mint_link(record: ExportRecord, link_key: bytes, public_url: str) -> DownloadLink | None:
    """The link of a finished export (valid 30 days after completion), else None."""
    if record.status is not ExportStatus.SUCCEEDED or record.completed_on is None:
        return None
    expires = record.completed_on + LINK_LIFETIME
    token = make_token(record.query_uuid, expires, link_key)
    return DownloadLink(download_url(public_url, record.query_uuid, token), expires)


@dataclass
class Downloads:
    """Mints stable links and redeems them."""

    store: ExportReader
    signer: UrlSigner
    link_key: bytes
    public_url: str
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def link_for(self, record: ExportRecord) -> DownloadLink | None:
        """The link of a finished export (valid 30 days after completion), else None."""
        return mint_link(record, self.link_key, self.public_url)

    def redeem(self, query_uuid: str, token: str) -> str:
        """A fresh signed URL for a valid token; 403 tampered, 410 expired, 404 no file."""
        verify_token(token, query_uuid, self.link_key, self.clock())
        record = self.store.get_export(query_uuid)
        if record is None or record.status is not ExportStatus.SUCCEEDED or not record.object_name:
            raise NotFound(f"export {query_uuid} has no file to download")
        return self.signer.sign(record.object_name, SIGNED_URL_LIFETIME)
