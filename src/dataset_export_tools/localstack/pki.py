"""A locally made certificate authority and a server certificate, for HTTPS on loopback.

The demo receiver serves HTTPS with a certificate from this CA, and the local notify function
trusts the CA (``EXPORT_WEBHOOK_CA_FILE``), so ``make run`` delivers its webhook over verified
TLS exactly as production does, without a certificate from the internet. The CA's key never
leaves the folder it was made in; nothing here is used on Google Cloud.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"
# Remade this long before it expires, so a running demo never meets an expired certificate.
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class LocalPki:
    """PEM files: the CA certificate to trust, and the server's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def issue_pki(
    folder: Path,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = 365,
    now: dt.datetime | None = None,
) -> LocalPki:
    """Make a new CA and a server certificate for the given names and addresses in ``folder``."""
    now = now or dt.datetime.now(dt.UTC)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Dataset Webhook Export local CA"))
        .issuer_name(_name("Dataset Webhook Export local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(next(iter(dns_names), None) or next(iter(ip_addresses), "server")))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = LocalPki(folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE)
    _write_private(folder / CA_KEY_FILE, _key_pem(ca_key))
    _write_private(pki.key_file, _key_pem(key))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return pki


def ensure_loopback_pki(folder: Path, now: dt.datetime | None = None) -> LocalPki:
    """The CA and a certificate for 127.0.0.1 and localhost in ``folder``, made when missing
    or about to expire."""
    now = now or dt.datetime.now(dt.UTC)
    pki = LocalPki(folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE)
    if all(p.is_file() for p in (pki.ca_file, pki.cert_file, pki.key_file)):
        cert = x509.load_pem_x509_certificate(pki.cert_file.read_bytes())
        if cert.not_valid_after_utc - now > _RENEW_BEFORE:
            return pki
    return issue_pki(folder, dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now)
