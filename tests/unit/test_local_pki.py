"""The local stack's own CA and the demo receiver's certificate."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest

from dataset_export.config import Settings
from dataset_export.core.errors import ConfigError
from dataset_export_tools.localstack.pki import ensure_loopback_pki

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> None:
    """A TLS handshake between two in-memory endpoints; raises what the client raises."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=host)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side, out, peer_in in (
            ("client", client_side, c_out, s_in),
            ("server", server_side, s_out, c_in),
        ):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_the_certificate_verifies_for_loopback_names_against_the_local_ca(tmp_path: Path) -> None:
    """A client trusting only the local CA accepts the receiver as 127.0.0.1 and localhost."""
    pki = ensure_loopback_pki(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.cert_file, pki.key_file)
    client = ssl.create_default_context(cafile=str(pki.ca_file))
    handshake(server, client, "127.0.0.1")
    handshake(server, client, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client, "hooks.example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, ssl.create_default_context(), "127.0.0.1")


def test_private_keys_are_private_and_the_pki_is_reused(tmp_path: Path) -> None:
    """Keys are 0600; a second call keeps the same certificate."""
    first = ensure_loopback_pki(tmp_path, now=NOW)
    assert stat.S_IMODE(first.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca-key.pem").stat().st_mode) == 0o600
    cert = first.cert_file.read_bytes()
    again = ensure_loopback_pki(tmp_path, now=NOW + dt.timedelta(days=30))
    assert again == first
    assert again.cert_file.read_bytes() == cert


def test_a_certificate_about_to_expire_is_made_again(tmp_path: Path) -> None:
    """Within a week of expiry the CA and certificate are replaced."""
    first = ensure_loopback_pki(tmp_path, now=NOW)
    cert = first.cert_file.read_bytes()
    renewed = ensure_loopback_pki(tmp_path, now=NOW + dt.timedelta(days=360))
    assert renewed.cert_file.read_bytes() != cert


def test_an_extra_webhook_ca_is_refused_outside_the_local_stack() -> None:
    """Production trusts only public CAs: EXPORT_WEBHOOK_CA_FILE fails its cold start."""
    env = {
        "GOOGLE_CLOUD_PROJECT": "p",
        "EXPORT_ENV": "production",
        "EXPORT_BUCKET": "b",
        "EXPORT_WEBHOOK_CA_FILE": "/tmp/ca.pem",
    }
    with pytest.raises(ConfigError, match="EXPORT_WEBHOOK_CA_FILE is for the local stack only"):
        Settings.from_env(env)
    local = Settings.from_env({**env, "EXPORT_ENV": "local"})
    assert local.webhook_ca_file == "/tmp/ca.pem"
