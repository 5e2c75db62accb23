"""Unit tests for the webhook URL policy (pure: a dictionary stands in for DNS)."""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_export.core.errors import HostNotFound, InvalidWebhookURL
from dataset_export.core.urlpolicy import (
    MAX_URL_LENGTH,
    WebhookTarget,
    address_allowed,
    address_problem,
    check_webhook_url,
)

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

DNS: dict[str, list[str]] = {
    "example.com": [PUBLIC_V4],
    "yourapp.com": ["203.0.114.10"],
    "dual.example": [PUBLIC_V4, PUBLIC_V6, PUBLIC_V4],
    "xn--bcher-kva.example": ["151.101.1.69"],
    "rebind.example": [PUBLIC_V4, "127.0.0.1"],
    "evil.example": ["169.254.169.254"],
    "private.example": ["10.0.0.5"],
    "private6.example": [PUBLIC_V4, "fd00::1"],
    "mapped.example": ["::ffff:10.0.0.5"],
    "mapped-public.example": ["::ffff:8.8.8.8"],
    "nat64.example": ["64:ff9b::a9fe:a9fe"],
    "cgnat.example": ["100.64.1.1"],
    "scoped.example": ["fe80::1%eth0"],
    "zero.example": ["0.0.0.0"],
    "mdns.example": ["224.0.0.251"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "xn--priv-epa.example": ["192.168.0.10"],  # privé.example
    "empty.example": [],
    "garbage.example": ["not-an-ip"],
    "loopback.example": ["127.0.0.1", "::1"],
}


class FakeResolver:
    """A resolver backed by a dictionary that records every lookup it is asked for."""

    def __init__(self, table: Mapping[str, Sequence[str]] = DNS) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        try:
            return self.table[host]
        except KeyError:
            raise HostNotFound(host) from None


def no_dns(host: str, port: int) -> Sequence[str]:
    """A resolver that fails the test when it is consulted at all."""
    raise AssertionError(f"resolver must not be called (asked for {host}:{port})")


def rejection(url: str, *, allow_loopback: bool = False) -> InvalidWebhookURL:
    """Check ``url`` with the fake DNS and return the rejection it must raise."""
    with pytest.raises(InvalidWebhookURL) as caught:
        check_webhook_url(url, FakeResolver(), allow_loopback=allow_loopback)
    return caught.value


P = pytest.param

# Each case: the URL and fragments the error message must contain (the reason, named).
HOSTILE = [
    # --- scheme ------------------------------------------------------------------------
    P("http://example.com/hook", ("must use https", "got 'http'"), id="http"),
    P("HTTP://EXAMPLE.COM/hook", ("must use https", "got 'http'"), id="http-upper"),
    P("ftp://example.com/file", ("must use https", "got 'ftp'"), id="ftp"),
    P("file:///etc/passwd", ("must use https", "got 'file'"), id="file"),
    P("gopher://example.com:70/_SET%20x", ("must use https", "got 'gopher'"), id="gopher"),
    P("javascript:alert(1)", ("must use https", "got 'javascript'"), id="javascript"),
    P("data:text/plain,hello", ("must use https", "got 'data'"), id="data"),
    P("ws://example.com/socket", ("must use https", "got 'ws'"), id="ws"),
    P("wss://example.com/socket", ("must use https", "got 'wss'"), id="wss"),
    P("dict://127.0.0.1:11211/stat", ("must use https", "got 'dict'"), id="dict"),
    P("example.com/hook", ("absolute URL",), id="no-scheme"),
    P("//example.com/hook", ("absolute URL",), id="scheme-relative"),
    P("/webhook", ("absolute URL",), id="path-only"),
    P("https:example.com/hook", ("must start with 'https://'",), id="no-slashes"),
    P("https:/example.com/hook", ("must start with 'https://'",), id="one-slash"),
    P("", ("must not be empty",), id="empty"),
    P("   ", ("must not be empty",), id="blank"),
    P("https://", ("must include a host",), id="no-host"),
    P("https:///hook", ("must include a host",), id="empty-host-path"),
    P("https:////evil.example/", ("must include a host",), id="four-slashes"),
    P("https://:443/hook", ("must include a host",), id="port-only"),
    P("https://?x=1", ("must include a host",), id="query-only"),
    # --- credentials, fragments, characters --------------------------------------------
    P("https://user:pass@example.com/hook", ("credentials",), id="userinfo"),
    P("https://user@example.com/hook", ("credentials",), id="user-only"),
    P("https://@example.com/hook", ("credentials",), id="empty-userinfo"),
    P("https://example.com@127.0.0.1/hook", ("credentials",), id="at-confusion"),
    P("https://example.com:443@10.0.0.1/", ("credentials",), id="at-port-confusion"),
    P("https://example.com/hook#frag", ("fragment",), id="fragment"),
    P("https://example.com#", ("fragment",), id="empty-fragment"),
    P("https://evil.com\\@good.com/", ("backslash",), id="backslash-at"),
    P("https:\\\\evil.com/hook", ("backslash",), id="backslash-slashes"),
    P("https://example.com\\.evil.com/", ("backslash",), id="backslash-host"),
    P("https://example.com/ho ok", ("whitespace or control", "U+0020"), id="space"),
    P("https://exa\tmple.com/", ("whitespace or control", "U+0009"), id="tab"),
    P("https://example.com/\nX-Injected: 1", ("U+000A",), id="newline-injection"),
    P("https://example.com\r\n/hook", ("U+000D",), id="crlf"),
    P("https://exam\x00ple.com/", ("U+0000",), id="nul"),
    P("https://example.com\x7f/", ("U+007F",), id="del"),
    P("https://ex\u200bample.com/", ("U+200B",), id="zero-width-space"),
    P("https://example.com\u3000/hook", ("U+3000",), id="ideographic-space"),
    P("https://example.com/\u00a0hook", ("U+00A0",), id="nbsp"),
    P("https://example.com/\u202ekoob", ("U+202E",), id="bidi-override"),
    P("https://example.com/" + "a" * MAX_URL_LENGTH, ("at most 2048 characters",), id="too-long"),
    # --- ports -------------------------------------------------------------------------
    P("https://example.com:0/hook", ("port 0", "1 to 65535"), id="port-zero"),
    P("https://example.com:65536/hook", ("port 65536", "1 to 65535"), id="port-too-big"),
    P("https://example.com:99999999999/", ("1 to 65535",), id="port-huge"),
    P("https://example.com:https/hook", ("must be a number",), id="port-name"),
    P("https://example.com:-1/hook", ("must be a number",), id="port-negative"),
    P("https://example.com:/hook", ("must be a number",), id="port-empty"),
    P("https://example.com:\uff14\uff14\uff13/", ("must be a number",), id="port-fullwidth"),
    P("https://example.com: 443/", ("U+0020",), id="port-space"),
    P("https://example.com:443:443/", ("enclosed in brackets",), id="two-ports"),
    # --- IPv4 loopback in every inet_aton spelling ---------------------------------------
    P("https://127.0.0.1/hook", ("'127.0.0.1' is a loopback address",), id="v4-loopback"),
    P("https://127.0.0.1:8443/x", ("loopback",), id="v4-loopback-port"),
    P("https://127.255.255.254/", ("loopback",), id="v4-loopback-top"),
    P("https://127.1/", ("is 127.0.0.1, a loopback address",), id="v4-short-2"),
    P("https://127.0.1/", ("is 127.0.0.1, a loopback address",), id="v4-short-3"),
    P("https://2130706433/", ("is 127.0.0.1, a loopback address",), id="v4-decimal"),
    P("https://0x7f000001/", ("is 127.0.0.1, a loopback address",), id="v4-hex"),
    P("https://0X7F000001/", ("is 127.0.0.1, a loopback address",), id="v4-hex-upper"),
    P("https://0x00000000007f000001/", ("is 127.0.0.1",), id="v4-hex-padded"),
    P("https://017700000001/", ("is 127.0.0.1, a loopback address",), id="v4-octal-whole"),
    P("https://0177.0.0.1/", ("is 127.0.0.1, a loopback address",), id="v4-octal"),
    P("https://0000000177.0.0.1/", ("is 127.0.0.1",), id="v4-octal-padded"),
    P("https://0177.1/", ("is 127.0.0.1, a loopback address",), id="v4-octal-short"),
    P("https://0x7f.1/", ("is 127.0.0.1, a loopback address",), id="v4-mixed-hex-short"),
    P("https://0x7f.0.0.0x1/", ("is 127.0.0.1",), id="v4-mixed-parts"),
    P("https://127.0.0.1./hook", ("is 127.0.0.1, a loopback address",), id="v4-trailing-dot"),
    P(
        "https://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/",
        ("is 127.0.0.1",),
        id="v4-fullwidth",
    ),
    P("https://127\u30020\u30020\u30021/", ("is 127.0.0.1",), id="v4-ideographic-dots"),
    P("https://\u2460\u2461\u2466.0.0.1/", ("is 127.0.0.1",), id="v4-circled-digits"),
    # --- IPv4 special ranges -------------------------------------------------------------
    P("https://0/", ("is 0.0.0.0, the unspecified address",), id="v4-zero"),
    P("https://0.0.0.0/", ("the unspecified address",), id="v4-unspecified"),
    P("https://0x0/", ("the unspecified address",), id="v4-unspecified-hex"),
    P("https://0.1.2.3/", ("reserved 'this network'",), id="v4-this-network"),
    P("https://10.0.0.5/", ("'10.0.0.5' is a private address",), id="v4-10"),
    P("https://10.1/", ("is 10.0.0.1, a private address",), id="v4-10-short"),
    P("https://167772161/", ("is 10.0.0.1, a private address",), id="v4-10-decimal"),
    P("https://172.16.0.1/", ("a private address",), id="v4-172-16"),
    P("https://172.31.255.255/", ("a private address",), id="v4-172-31"),
    P("https://192.168.1.1/", ("a private address",), id="v4-192-168"),
    P("https://0xc0.0xa8.0x01.0x01/", ("is 192.168.1.1, a private address",), id="v4-192-hex"),
    P("https://0300.0250.1.1/", ("is 192.168.1.1, a private address",), id="v4-192-octal"),
    P("https://169.254.169.254/computeMetadata/v1/", ("a link-local address",), id="metadata-ip"),
    P("https://0xa9fea9fe/", ("is 169.254.169.254, a link-local address",), id="metadata-hex"),
    P("https://2852039166/", ("is 169.254.169.254, a link-local",), id="metadata-decimal"),
    P("https://0251.0376.0251.0376/", ("is 169.254.169.254",), id="metadata-octal"),
    P("https://169.254.43518/", ("is 169.254.169.254",), id="metadata-two-part"),
    P("https://100.64.0.1/", ("a carrier-grade NAT address",), id="v4-cgnat"),
    P("https://100.127.255.254/", ("a carrier-grade NAT address",), id="v4-cgnat-top"),
    P("https://192.0.0.8/", ("IETF protocol assignment",), id="v4-192-0-0"),
    P("https://192.0.0.9/", ("IETF protocol assignment",), id="v4-192-0-0-9"),
    P("https://192.0.2.1/", ("a documentation address",), id="v4-test-net-1"),
    P("https://198.51.100.7/", ("a documentation address",), id="v4-test-net-2"),
    P("https://203.0.113.9/", ("a documentation address",), id="v4-test-net-3"),
    P("https://198.18.0.1/", ("a benchmarking address",), id="v4-benchmark"),
    P("https://198.19.255.1/", ("a benchmarking address",), id="v4-benchmark-top"),
    P("https://192.88.99.1/", ("6to4 relay",), id="v4-6to4-relay"),
    P("https://224.0.0.1/", ("a multicast address",), id="v4-multicast"),
    P("https://239.255.255.250/", ("a multicast address",), id="v4-ssdp"),
    P("https://240.0.0.1/", ("a reserved address",), id="v4-class-e"),
    P("https://255.255.255.255/", ("the broadcast address",), id="v4-broadcast"),
    P("https://4294967295/", ("is 255.255.255.255, the broadcast",), id="v4-broadcast-dec"),
    # --- malformed IPv4 (would be read differently by different parsers) -------------------
    P("https://256.0.0.1/", ("not a valid one",), id="v4-octet-256"),
    P("https://1.2.3.4.5/", ("not a valid one",), id="v4-five-parts"),
    P("https://08.0.0.1/", ("not a valid one",), id="v4-bad-octal"),
    P("https://4294967296/", ("not a valid one",), id="v4-overflow"),
    P("https://0x100000000/", ("not a valid one",), id="v4-hex-overflow"),
    P("https://example.123/", ("not a valid one",), id="numeric-tld"),
    # --- IPv6 literals ---------------------------------------------------------------------
    P("https://[::1]/hook", ("'[::1]' is a loopback address",), id="v6-loopback"),
    P("https://[0:0:0:0:0:0:0:1]/", ("is ::1, a loopback address",), id="v6-loopback-long"),
    P("https://[::]/", ("the unspecified address",), id="v6-unspecified"),
    P("https://[::ffff:127.0.0.1]/", ("IPv4-mapped", "127.0.0.1, a loopback"), id="v6-mapped"),
    P("https://[::ffff:7f00:1]/", ("IPv4-mapped", "a loopback address"), id="v6-mapped-hex"),
    P("https://[::FFFF:A9FE:A9FE]/", ("IPv4-mapped", "a link-local"), id="v6-mapped-meta"),
    P("https://[::ffff:8.8.8.8]/", ("IPv4-mapped",), id="v6-mapped-public"),
    P("https://[::ffff:0:7f00:1]/", ("IPv4-translated", "loopback"), id="v6-translated"),
    P("https://[::127.0.0.1]/", ("IPv4-compatible", "a loopback"), id="v6-compatible"),
    P("https://[::10.0.0.1]/", ("IPv4-compatible", "a private"), id="v6-compatible-10"),
    P("https://[64:ff9b::10.0.0.1]/", ("NAT64", "a private address"), id="v6-nat64"),
    P("https://[64:ff9b::a9fe:a9fe]/", ("NAT64", "a link-local"), id="v6-nat64-metadata"),
    P("https://[64:ff9b:1::a00:1]/", ("NAT64",), id="v6-nat64-local-use"),
    P("https://[2002:7f00:1::]/", ("6to4", "127.0.0.1, a loopback"), id="v6-6to4-loopback"),
    P("https://[2002:c0a8:101::1]/", ("6to4", "a private address"), id="v6-6to4-private"),
    P("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", ("Teredo",), id="v6-teredo"),
    P("https://[fe80::1]/", ("a link-local address",), id="v6-link-local"),
    P("https://[fe80::1%25eth0]/", ("zone id",), id="v6-zone-encoded"),
    P("https://[fe80::1%eth0]/", ("zone id",), id="v6-zone-raw"),
    P("https://[fc00::1]/", ("a unique local address",), id="v6-ula-fc"),
    P("https://[fd12:3456:789a::1]/", ("a unique local address",), id="v6-ula-fd"),
    P("https://[fec0::1]/", ("a site-local address",), id="v6-site-local"),
    P("https://[ff02::1]/", ("a multicast address",), id="v6-multicast"),
    P("https://[ff05::1:3]/", ("a multicast address",), id="v6-multicast-site"),
    P("https://[2001:db8::1]/", ("a documentation address",), id="v6-doc"),
    P("https://[3fff::1]/", ("a documentation address",), id="v6-doc-new"),
    P("https://[2001:2::1]/", ("a benchmarking address",), id="v6-benchmark"),
    P("https://[2001:10::1]/", ("IETF protocol assignment",), id="v6-orchid"),
    P("https://[100::1]/", ("discard-only",), id="v6-discard"),
    P("https://[4000::1]/", ("a reserved address",), id="v6-outside-2000-3"),
    P("https://::1/", ("enclosed in brackets",), id="v6-unbracketed"),
    P("https://[127.0.0.1]/", ("not a valid IPv6 address",), id="v6-bracketed-v4"),
    P("https://[::1/", ("unclosed '['",), id="v6-unclosed"),
    P("https://[::1]evil.com/", ("unexpected text",), id="v6-trailing-text"),
    P("https://[v1.fe]/", ("not a valid IPv6 address",), id="v6-ipvfuture"),
    # --- names refused without resolving -------------------------------------------------
    P("https://localhost/hook", ("'localhost' is a loopback name",), id="localhost"),
    P("https://LOCALHOST:8443/hook", ("loopback name",), id="localhost-upper"),
    P("https://localhost./hook", ("loopback name",), id="localhost-trailing-dot"),
    P("https://api.localhost/hook", ("loopback name",), id="sub-localhost"),
    P(
        "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",
        ("loopback name",),
        id="localhost-fw",
    ),
    P("https://metadata.google.internal/computeMetadata/v1/", ("metadata server",), id="metadata"),
    P("https://metadata.google.internal./", ("metadata server",), id="metadata-dot"),
    P("https://METADATA.GOOGLE.INTERNAL/", ("metadata server",), id="metadata-upper"),
    P("https://metadata/computeMetadata/v1/", ("fully qualified",), id="metadata-short"),
    P("https://intranet/hook", ("fully qualified",), id="single-label"),
    P("https://db.corp.internal/hook", (".internal",), id="internal"),
    P("https://printer.local/hook", (".local",), id="mdns-local"),
    P("https://svc.ns.svc.cluster.local/", (".local",), id="k8s-cluster-local"),
    P("https://box.localdomain/hook", (".localdomain",), id="localdomain"),
    P("https://localhost.localdomain/", (".localdomain",), id="localhost-localdomain"),
    P("https://router.home.arpa/", (".home.arpa",), id="home-arpa"),
    P("https://1.0.0.127.in-addr.arpa/", (".arpa",), id="in-addr-arpa"),
    P("https://exa%6dple.com/", ("percent-encoded",), id="host-percent"),
    P("https://%31%32%37.0.0.1/", ("percent-encoded",), id="v4-percent"),
    P("https://evil.com;.example.com/", ("not a valid domain name",), id="host-semicolon"),
    P("https://evil.com\uff20example.com/", ("not a valid domain name",), id="fullwidth-at"),
    P("https://127.0.0.1\uff1a80/", ("not a valid",), id="fullwidth-colon"),
    P("https://a..example.com/", ("not a valid domain name",), id="empty-label"),
    P("https://-bad.example.com/", ("not a valid domain name",), id="leading-hyphen"),
    P("https://" + "a" * 64 + ".example/", ("not a valid domain name",), id="label-too-long"),
    P("https://" + "a." * 127 + "example/", ("not a valid domain name",), id="name-too-long"),
    # --- names whose answers break the policy --------------------------------------------
    P("https://foo.invalid/hook", ("'foo.invalid' does not resolve",), id="nxdomain"),
    P("https://empty.example/hook", ("does not resolve",), id="no-answers"),
    P("https://garbage.example/hook", ("not an IP address",), id="bad-answer"),
    P("https://rebind.example/hook", ("resolves to 127.0.0.1, a loopback",), id="rebind-mixed"),
    P("https://evil.example/", ("resolves to 169.254.169.254, a link-local",), id="to-metadata"),
    P("https://private.example/", ("resolves to 10.0.0.5, a private",), id="to-private"),
    P("https://private6.example/", ("resolves to fd00::1, a unique local",), id="to-ula"),
    P("https://mapped.example/", ("IPv4-mapped", "a private address"), id="to-mapped"),
    P("https://mapped-public.example/", ("IPv4-mapped",), id="to-mapped-public"),
    P("https://nat64.example/", ("NAT64", "a link-local"), id="to-nat64"),
    P("https://cgnat.example/", ("a carrier-grade NAT address",), id="to-cgnat"),
    P("https://scoped.example/", ("zone id",), id="to-scoped"),
    P("https://zero.example/", ("resolves to 0.0.0.0, the unspecified",), id="to-zero"),
    P("https://mdns.example/", ("a multicast address",), id="to-multicast"),
    P("https://127.0.0.1.nip.io/hook", ("resolves to 127.0.0.1",), id="wildcard-dns"),
    P("https://priv\u00e9.example/hook", ("resolves to 192.168.0.10",), id="idna-to-private"),
]


def test_corpus_is_large_enough() -> None:
    """The hostile corpus keeps at least sixty cases, each with a unique id."""
    ids = [case.id for case in HOSTILE]
    assert len(ids) >= 60
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("url", "fragments"), HOSTILE)
def test_hostile_url_rejected_with_reason(url: str, fragments: tuple[str, ...]) -> None:
    """Every hostile URL is refused with a 400 on webhookURL whose message names the reason."""
    error = rejection(url)
    assert error.status == 400
    assert error.code == "invalid_webhook_url"
    assert error.field == "webhookURL"
    assert error.message.startswith("webhookURL ")
    for fragment in fragments:
        assert fragment in error.message, f"{fragment!r} not in {error.message!r}"


def test_non_string_rejected() -> None:
    """A webhookURL that is not a string is refused, not crashed on."""
    with pytest.raises(InvalidWebhookURL, match="must be a string"):
        check_webhook_url(cast(str, 12345), no_dns)


def test_messages_for_documented_examples() -> None:
    """The messages quoted in the design read exactly as documented."""
    assert rejection("http://example.com/").message == "webhookURL must use https (got 'http')"
    assert (
        rejection("https://10.0.0.5/").message == "webhookURL host '10.0.0.5' is a private address"
    )
    assert rejection("https://evil.example/").message == (
        "webhookURL host 'evil.example' resolves to 169.254.169.254, a link-local address"
    )
    assert rejection("https://u:p@example.com/").message.startswith(
        "webhookURL must not contain credentials"
    )
    assert rejection("https://foo.invalid/").message.startswith(
        "webhookURL host 'foo.invalid' does not resolve"
    )


def test_long_values_are_shortened_in_messages() -> None:
    """An absurd port is not echoed at full length into the error message."""
    error = rejection("https://example.com:" + "9" * 500 + "/")
    assert len(error.message) < 200


@pytest.mark.parametrize(
    "url",
    [
        P("https://127.0.0.1/", id="ip-literal"),
        P("https://[::1]/", id="v6-literal"),
        P("https://localhost/", id="localhost"),
        P("https://metadata.google.internal/", id="metadata"),
        P("https://intranet/", id="single-label"),
        P("http://example.com/", id="bad-scheme"),
        P("https://user@example.com/", id="credentials"),
    ],
)
def test_refused_without_resolving(url: str) -> None:
    """Literals, blocked names and malformed URLs are judged without asking DNS."""
    with pytest.raises(InvalidWebhookURL):
        check_webhook_url(url, no_dns)


# --------------------------------------------------------------------------------------------
# Accepted URLs
# --------------------------------------------------------------------------------------------

ACCEPTED = [
    P("https://8.8.8.8/hook", "8.8.8.8", 443, ("8.8.8.8",), id="public-v4"),
    P("https://1.1.1.1:8443/x", "1.1.1.1", 8443, ("1.1.1.1",), id="public-v4-port"),
    P("https://[2606:4700::1111]/x", "2606:4700::1111", 443, ("2606:4700::1111",), id="v6"),
    P(
        "https://[2606:4700:0:0:0:0:0:1111]:9443/x",
        "2606:4700::1111",
        9443,
        ("2606:4700::1111",),
        id="v6-long-form",
    ),
    P("https://0x8.0x8.0x8.0x8/", "8.8.8.8", 443, ("8.8.8.8",), id="public-v4-hex-spelling"),
    P("https://134744072/", "8.8.8.8", 443, ("8.8.8.8",), id="public-v4-decimal-spelling"),
    P("https://example.com/hook", "example.com", 443, (PUBLIC_V4,), id="name"),
    P("https://example.com:8443/x", "example.com", 8443, (PUBLIC_V4,), id="odd-port"),
    P("https://example.com:1/x", "example.com", 1, (PUBLIC_V4,), id="port-1"),
    P("https://example.com:65535/x", "example.com", 65535, (PUBLIC_V4,), id="port-65535"),
    P("https://example.com:0443/x", "example.com", 443, (PUBLIC_V4,), id="port-leading-zero"),
    P(
        "https://example.com/hook?token=abc&x=1&y=%2F",
        "example.com",
        443,
        (PUBLIC_V4,),
        id="query-string",
    ),
    P("https://example.com?x=1", "example.com", 443, (PUBLIC_V4,), id="query-no-path"),
    P("https://example.com", "example.com", 443, (PUBLIC_V4,), id="no-path"),
    P("https://example.com/@user/hook", "example.com", 443, (PUBLIC_V4,), id="at-in-path"),
    P("HTTPS://Example.COM./hook", "example.com", 443, (PUBLIC_V4,), id="case-and-dot"),
    P(
        "https://yourapp.com/webhook/dataset-export",
        "yourapp.com",
        443,
        ("203.0.114.10",),
        id="design-example",
    ),
    P(
        "https://dual.example/hook",
        "dual.example",
        443,
        (PUBLIC_V4, PUBLIC_V6),
        id="dual-stack-deduplicated",
    ),
    P(
        "https://b\u00fccher.example/hook",
        "xn--bcher-kva.example",
        443,
        ("151.101.1.69",),
        id="idna",
    ),
    P(
        "https://B\u00dcCHER.example/hook",
        "xn--bcher-kva.example",
        443,
        ("151.101.1.69",),
        id="idna-upper",
    ),
    P(
        "https://xn--bcher-kva.example/hook",
        "xn--bcher-kva.example",
        443,
        ("151.101.1.69",),
        id="punycode",
    ),
]


@pytest.mark.parametrize(("url", "host", "port", "addresses"), ACCEPTED)
def test_accepted_url(url: str, host: str, port: int, addresses: tuple[str, ...]) -> None:
    """Public targets pass with a normalised host, the right port and every address."""
    target = check_webhook_url(url, FakeResolver())
    assert target == WebhookTarget(
        url=url, scheme="https", host=host, port=port, addresses=addresses
    )
    assert all(address_allowed(a) for a in target.addresses)


def test_url_is_stripped_of_surrounding_whitespace_only() -> None:
    """Surrounding whitespace is removed from the URL kept on the target, nothing else."""
    target = check_webhook_url("  https://example.com/a%20b?q=1\n", FakeResolver())
    assert target.url == "https://example.com/a%20b?q=1"


def test_url_of_maximum_length_accepted() -> None:
    """A URL of exactly the maximum length is still accepted."""
    url = "https://example.com/"
    url += "a" * (MAX_URL_LENGTH - len(url))
    assert check_webhook_url(url, FakeResolver()).url == url


def test_resolver_gets_ascii_host_and_port() -> None:
    """The resolver is asked for the IDNA host and the effective port."""
    resolver = FakeResolver()
    check_webhook_url("https://b\u00fccher.example:8443/hook", resolver)
    check_webhook_url("https://Example.com./x", resolver)
    assert resolver.calls == [("xn--bcher-kva.example", 8443), ("example.com", 443)]


def test_ip_literal_not_resolved() -> None:
    """A public IP literal is accepted without consulting the resolver."""
    assert check_webhook_url("https://8.8.8.8/", no_dns).addresses == ("8.8.8.8",)


def test_resolver_errors_other_than_not_found_propagate() -> None:
    """A resolver failure that is not HostNotFound (e.g. a timeout) is not turned into a 400."""

    def flaky(host: str, port: int) -> Sequence[str]:
        raise TimeoutError("dns timeout")

    with pytest.raises(TimeoutError):
        check_webhook_url("https://example.com/", flaky)


# --------------------------------------------------------------------------------------------
# Local mode
# --------------------------------------------------------------------------------------------

LOCAL_ALLOWED = [
    P("http://localhost:8080/hook", "http", "localhost", 8080, ("127.0.0.1", "::1"), id="lh"),
    P("http://localhost/hook", "http", "localhost", 80, ("127.0.0.1", "::1"), id="lh-80"),
    P("https://localhost/hook", "https", "localhost", 443, ("127.0.0.1", "::1"), id="lh-tls"),
    P("http://LocalHost.:9/x", "http", "localhost", 9, ("127.0.0.1", "::1"), id="lh-dot"),
    P("http://api.localhost/x", "http", "api.localhost", 80, ("127.0.0.1", "::1"), id="sub"),
    P("http://127.0.0.1:9000/hook", "http", "127.0.0.1", 9000, ("127.0.0.1",), id="v4"),
    P("http://127.1/hook", "http", "127.0.0.1", 80, ("127.0.0.1",), id="v4-short"),
    P("https://127.0.0.53/hook", "https", "127.0.0.53", 443, ("127.0.0.53",), id="v4-tls"),
    P("http://[::1]:8000/x", "http", "::1", 8000, ("::1",), id="v6"),
    P("https://example.com/x", "https", "example.com", 443, (PUBLIC_V4,), id="public-still-ok"),
    P(
        "https://loopback.example/x",
        "https",
        "loopback.example",
        443,
        ("127.0.0.1", "::1"),
        id="name-to-loopback",
    ),
]


@pytest.mark.parametrize(("url", "scheme", "host", "port", "addresses"), LOCAL_ALLOWED)
def test_local_mode_allows_loopback(
    url: str, scheme: str, host: str, port: int, addresses: tuple[str, ...]
) -> None:
    """Local mode accepts loopback targets over http or https."""
    target = check_webhook_url(url, FakeResolver(), allow_loopback=True)
    assert (target.scheme, target.host, target.port, target.addresses) == (
        scheme,
        host,
        port,
        addresses,
    )
    assert all(address_allowed(a, allow_loopback=True) for a in target.addresses)


@pytest.mark.parametrize(
    "url",
    [
        P("http://localhost:8080/hook", id="localhost"),
        P("http://127.0.0.1:9000/hook", id="v4"),
        P("http://[::1]:8000/x", id="v6"),
        P("https://loopback.example/x", id="name-to-loopback"),
    ],
)
def test_local_mode_urls_rejected_in_production(url: str) -> None:
    """The loopback URLs that local mode allows are refused by the production policy."""
    error = rejection(url)
    assert "https" in error.message or "loopback" in error.message


LOCAL_REJECTED = [
    P("http://example.com/hook", ("must use https", "only for loopback"), id="http-public"),
    P("http://rebind.example/hook", ("must use https",), id="http-name"),
    P("http://8.8.8.8/hook", ("must use https",), id="http-public-ip"),
    P("http://10.0.0.5/hook", ("a private address",), id="http-private"),
    P("https://10.0.0.5/hook", ("a private address",), id="https-private"),
    P("https://169.254.169.254/", ("a link-local address",), id="metadata-ip"),
    P("https://metadata.google.internal/", ("metadata server",), id="metadata-name"),
    P("http://0.0.0.0:8080/", ("the unspecified address",), id="unspecified"),
    P("http://[::]:8080/", ("the unspecified address",), id="v6-unspecified"),
    P("http://[::ffff:127.0.0.1]/", ("IPv4-mapped",), id="mapped-loopback"),
    P("http://[::127.0.0.1]/", ("IPv4-compatible",), id="compatible-loopback"),
    P("https://private.example/", ("a private address",), id="name-to-private"),
    P("ftp://localhost/x", ("got 'ftp'",), id="ftp-localhost"),
    P("ws://localhost/x", ("got 'ws'",), id="ws-localhost"),
    P("http://user:pw@localhost/", ("credentials",), id="credentials"),
    P("http://localhost/#x", ("fragment",), id="fragment"),
    P("http://localhost:0/", ("1 to 65535",), id="port-zero"),
]


@pytest.mark.parametrize(("url", "fragments"), LOCAL_REJECTED)
def test_local_mode_keeps_other_rules(url: str, fragments: tuple[str, ...]) -> None:
    """Local mode relaxes only loopback; every other production rule still applies."""
    error = rejection(url, allow_loopback=True)
    for fragment in fragments:
        assert fragment in error.message, f"{fragment!r} not in {error.message!r}"


def test_local_mode_http_name_not_resolved() -> None:
    """Plain http to a non-loopback name is refused in local mode before any lookup."""
    with pytest.raises(InvalidWebhookURL, match="must use https"):
        check_webhook_url("http://example.com/", no_dns, allow_loopback=True)


# --------------------------------------------------------------------------------------------
# Address helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "phrase"),
    [
        P("127.0.0.1", "a loopback address", id="v4-loopback"),
        P("10.255.255.255", "a private address", id="v4-private"),
        P("169.254.169.254", "a link-local address", id="v4-link-local"),
        P("100.100.100.200", "a carrier-grade NAT address", id="v4-cgnat"),
        P("224.0.0.251", "a multicast address", id="v4-multicast-is-global-quirk"),
        P("233.252.0.1", "a multicast address", id="v4-multicast-doc"),
        P("250.1.2.3", "a reserved address", id="v4-reserved"),
        P("0.0.0.0", "the unspecified address", id="v4-unspecified"),
        P("::", "the unspecified address", id="v6-unspecified"),
        P("::1", "a loopback address", id="v6-loopback"),
        P("::ffff:8.8.8.8", "an IPv4-mapped IPv6 address (embedding 8.8.8.8)", id="mapped"),
        P("fec0::1", "a site-local address", id="site-local-is-global-quirk"),
        P("64:ff9b::808:808", "a NAT64 IPv6 address (embedding 8.8.8.8)", id="nat64-public"),
        P("2002:808:808::1", "a 6to4 IPv6 address (embedding 8.8.8.8)", id="6to4-public"),
        P("4000::1", "a reserved address", id="v6-reserved-is-global-quirk"),
        P("5f00::1", "a reserved segment-routing address", id="srv6"),
        P("fe80::1%eth0", "an address with a zone id", id="zone"),
        P("2606:4700::1111%eth0", "an address with a zone id", id="zone-global"),
        P("not-an-ip", "not an IP address", id="garbage"),
        P("8.8.8.8", None, id="v4-public"),
        P("93.184.216.34", None, id="v4-public-2"),
        P("2606:4700::1111", None, id="v6-public"),
        P("2a00:1450:4001:80b::200e", None, id="v6-public-2"),
    ],
)
def test_address_problem(ip: str, phrase: str | None) -> None:
    """address_problem names the reason an address is refused, or None for public unicast."""
    assert address_problem(ip) == phrase
    if ip != "not-an-ip":
        assert address_problem(ipaddress.ip_address(ip)) == phrase


@pytest.mark.parametrize(
    ("ip", "production", "local"),
    [
        P("8.8.8.8", True, True, id="public"),
        P("2606:4700::1111", True, True, id="public-v6"),
        P("127.0.0.1", False, True, id="loopback"),
        P("127.8.9.10", False, True, id="loopback-range"),
        P("::1", False, True, id="loopback-v6"),
        P("::ffff:127.0.0.1", False, False, id="mapped-loopback"),
        P("::127.0.0.1", False, False, id="compatible-loopback"),
        P("10.0.0.1", False, False, id="private"),
        P("169.254.169.254", False, False, id="metadata"),
        P("0.0.0.0", False, False, id="unspecified"),
        P("garbage", False, False, id="garbage"),
    ],
)
def test_address_allowed(ip: str, production: bool, local: bool) -> None:
    """address_allowed lets loopback through only in local mode and never embedded forms."""
    assert address_allowed(ip) is production
    assert address_allowed(ip, allow_loopback=True) is local


# --------------------------------------------------------------------------------------------
# Properties: every spelling of a blocked IPv4 address is caught
# --------------------------------------------------------------------------------------------

BLOCKED_V4_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
]


@st.composite
def blocked_v4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    """A random address from one of the blocked IPv4 ranges."""
    network = ipaddress.IPv4Network(draw(st.sampled_from(BLOCKED_V4_NETWORKS)))
    offset = draw(st.integers(0, network.num_addresses - 1))
    return network[offset]


def spell_part(value: int, style: str, zeros: int) -> str:
    """Write one inet_aton part in decimal, octal or hex, with optional zero padding."""
    if style == "hex":
        return "0x" + "0" * zeros + format(value, "x")
    if style == "HEX":
        return "0X" + "0" * zeros + format(value, "X")
    if style == "oct":
        return "0" + "0" * zeros + format(value, "o")
    return str(value)


@st.composite
def inet_aton_spelling(draw: st.DrawFn, ip: ipaddress.IPv4Address) -> str:
    """One of the many inet_aton spellings of ``ip`` (1 to 4 parts, mixed radixes)."""
    packed = ip.packed
    parts_count = draw(st.integers(1, 4))
    values = list(packed[: parts_count - 1])
    values.append(int.from_bytes(packed[parts_count - 1 :], "big"))
    parts = [
        spell_part(
            value, draw(st.sampled_from(["dec", "oct", "hex", "HEX"])), draw(st.integers(0, 3))
        )
        for value in values
    ]
    return ".".join(parts) + draw(st.sampled_from(["", "."]))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_spelling_of_blocked_v4_rejected(data: st.DataObject) -> None:
    """Any inet_aton spelling of a blocked IPv4 address is refused and names the address."""
    ip = data.draw(blocked_v4())
    spelling = data.draw(inet_aton_spelling(ip))
    with pytest.raises(InvalidWebhookURL) as caught:
        check_webhook_url(f"https://{spelling}/hook", no_dns)
    assert str(ip) in caught.value.message


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_spelling_of_public_v4_normalised(data: st.DataObject) -> None:
    """Any inet_aton spelling of a public address is accepted with the canonical host."""
    ip = ipaddress.IPv4Address(data.draw(st.sampled_from(["8.8.8.8", "1.1.1.1", "93.184.216.34"])))
    spelling = data.draw(inet_aton_spelling(ip))
    target = check_webhook_url(f"https://{spelling}/hook", no_dns)
    assert (target.host, target.addresses) == (str(ip), (str(ip),))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc inet_aton is the oracle")
@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet="0123456789abcdefxX.", min_size=1, max_size=24))
def test_agrees_with_inet_aton(text: str) -> None:
    """Whatever glibc inet_aton reads as an address is judged as that same address."""
    try:
        packed = socket.inet_aton(text)
    except OSError:
        return
    ip = ipaddress.IPv4Address(packed)
    if address_problem(ip) is None:
        assert check_webhook_url(f"https://{text}/", no_dns).addresses == (str(ip),)
    else:
        with pytest.raises(InvalidWebhookURL, match=re.escape(str(ip))):
            check_webhook_url(f"https://{text}/", no_dns)
