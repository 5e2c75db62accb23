"""The webhook URL policy: which URLs the service will ever POST to.

Pure code: no network, no environment reads. Name resolution is injected as a ``Resolver`` so
the HTTP layer can pass a real resolver and tests a dictionary.

Production policy (``allow_loopback=False``): ``https`` only, no credentials, no fragment, no
whitespace, control characters or backslashes, and every address the host is or resolves to
must be globally routable unicast. IPv4 literals are read the way ``inet_aton`` and browsers
read them (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``), Unicode hosts are folded
with NFKC and IDNA before that check, and IPv6 transition forms that embed or tunnel to an IPv4
address (mapped, compatible, NAT64, 6to4, Teredo) are refused outright.

Local mode (``allow_loopback=True``) additionally accepts loopback targets (127.0.0.0/8,
``::1``, ``localhost`` and ``*.localhost``), over ``http`` or ``https``. Everything else still
follows the production rules.

The sender re-checks every address with :func:`address_allowed` when it connects and connects
only to the addresses in :attr:`WebhookTarget.addresses` (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from dataset_export.core.errors import HostNotFound, InvalidWebhookURL

__all__ = [
    "MAX_URL_LENGTH",
    "Resolver",
    "WebhookTarget",
    "address_allowed",
    "address_problem",
    "check_webhook_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> IP address strings``; raises :class:`HostNotFound` for an unknown name."""

MAX_URL_LENGTH: Final = 2048
_MAX_HOST_LENGTH: Final = 253
_FIELD: Final = "webhookURL"
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}
_LOOPBACK_NAME_ADDRESSES: Final = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL that passed the policy, with the addresses the sender may connect to."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Address policy
# --------------------------------------------------------------------------------------------

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Checked in order; the first match names the reason. Anything not listed must still be
# ``is_global`` (Python's own table) to pass.
_IPV4_RULES: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = (
    (_V4("0.0.0.0/32"), "the unspecified address"),
    (_V4("0.0.0.0/8"), "a reserved 'this network' address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("100.64.0.0/10"), "a carrier-grade NAT address"),
    (_V4("192.0.0.0/24"), "a reserved IETF protocol assignment address"),
    (_V4("192.0.2.0/24"), "a documentation address"),
    (_V4("198.51.100.0/24"), "a documentation address"),
    (_V4("203.0.113.0/24"), "a documentation address"),
    (_V4("198.18.0.0/15"), "a benchmarking address"),
    (_V4("192.88.99.0/24"), "a reserved 6to4 relay address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)

_IPV6_RULES: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    (_V6("::/128"), "the unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("ff00::/8"), "a multicast address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address"),
    (_V6("fc00::/7"), "a unique local address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("3fff::/20"), "a documentation address"),
    (_V6("2001:2::/48"), "a benchmarking address"),
    (_V6("2001::/23"), "a reserved IETF protocol assignment address"),
    (_V6("100::/64"), "a reserved discard-only address"),
    (_V6("5f00::/16"), "a reserved segment-routing address"),
)

# The transition forms below embed an IPv4 address; they are refused whatever they embed.
_IPV4_COMPATIBLE: Final = _V6("::/96")
_IPV4_TRANSLATED: Final = _V6("::ffff:0:0:0/96")
_NAT64_WELL_KNOWN: Final = _V6("64:ff9b::/96")
_NAT64_LOCAL_USE: Final = _V6("64:ff9b:1::/48")
_TEREDO: Final = _V6("2001::/32")
_GLOBAL_UNICAST: Final = _V6("2000::/3")


def _embedded_v4_note(embedded: ipaddress.IPv4Address) -> str:
    """Describe the IPv4 address inside a transition form, with its own problem if it has one."""
    problem = _ipv4_problem(embedded)
    return f" (embedding {embedded}, {problem})" if problem else f" (embedding {embedded})"


def _ipv4_problem(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in _IPV4_RULES:
        if ip in network:
            return reason
    if not ip.is_global:  # backstop for anything the table above does not name
        return "a non-public address"
    return None


def _ipv6_problem(ip: ipaddress.IPv6Address) -> str | None:
    if ip.scope_id is not None:
        return "an address with a zone id"
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return "an IPv4-mapped IPv6 address" + _embedded_v4_note(mapped)
    if ip in _IPV4_TRANSLATED:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        return "an IPv4-translated IPv6 address" + _embedded_v4_note(embedded)
    for network, reason in _IPV6_RULES[:2]:  # '::' and '::1' sit inside ::/96
        if ip in network:
            return reason
    if ip in _IPV4_COMPATIBLE:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        return "an IPv4-compatible IPv6 address" + _embedded_v4_note(embedded)
    if ip in _NAT64_WELL_KNOWN:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        return "a NAT64 IPv6 address" + _embedded_v4_note(embedded)
    if ip in _NAT64_LOCAL_USE:  # RFC 8215; the IPv4 layout depends on the operator's prefix
        return "a NAT64 IPv6 address (local-use prefix 64:ff9b:1::/48)"
    sixtofour = ip.sixtofour
    if sixtofour is not None:
        return "a 6to4 IPv6 address" + _embedded_v4_note(sixtofour)
    if ip in _TEREDO:
        teredo = ip.teredo
        client = teredo[1] if teredo is not None else None
        note = _embedded_v4_note(client) if client is not None else ""
        return "a Teredo IPv6 address" + note
    for network, reason in _IPV6_RULES[2:]:
        if ip in network:
            return reason
    if ip not in _GLOBAL_UNICAST:
        return "a reserved address"
    if not ip.is_global:  # backstop for anything the tables above do not name
        return "a non-public address"
    return None


def address_problem(ip: IPAddress | str) -> str | None:
    """Why ``ip`` may not receive webhooks (a phrase like "a private address"), or ``None``.

    An address is allowed only when it is globally routable unicast: not private, loopback,
    link-local, CGNAT, multicast, reserved, documentation or benchmarking, and not an IPv6 form
    that embeds an IPv4 address (mapped, compatible, translated, NAT64, 6to4, Teredo).
    Loopback is reported here too; callers in local mode decide to allow it.
    """
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip)
        except ValueError:
            return "not an IP address"
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_problem(ip)
    return _ipv6_problem(ip)


def _is_loopback(ip: IPAddress) -> bool:
    """Plain loopback only: 127.0.0.0/8 or ``::1`` (never a mapped or embedded form)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _IPV4_RULES[2][0]
    return ip.scope_id is None and int(ip) == 1


def address_allowed(ip: IPAddress | str, *, allow_loopback: bool = False) -> bool:
    """Whether the sender may connect to ``ip`` (re-checked at connect time)."""
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip)
        except ValueError:
            return False
    if address_problem(ip) is None:
        return True
    return allow_loopback and _is_loopback(ip)


# --------------------------------------------------------------------------------------------
# URL parsing
# --------------------------------------------------------------------------------------------

_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.*)", re.DOTALL)
_PORT_RE: Final = re.compile(r"[0-9]+")
_LABEL_RE: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL_RE: Final = re.compile(r"[0-9]+|0x[0-9a-f]*")
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Zs", "Zl", "Zp"})
# Full stops that IDNA (UTS #46) treats as label separators; NFKC already folds U+FF0E.
_DOT_EQUIVALENTS: Final = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def _fail(message: str) -> InvalidWebhookURL:
    return InvalidWebhookURL(message, field=_FIELD)


def _shown(text: str, limit: int = 80) -> str:
    """A value quoted for an error message, shortened so messages stay readable."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` as ``inet_aton`` and the WHATWG URL parser do, or return ``None``.

    One to four dot-separated parts, each decimal, octal (leading ``0``) or hex (``0x``); the
    last part fills the remaining bytes. ``0x`` alone counts as zero (WHATWG), a superset of
    glibc, so nothing either parser reads as an address slips through as a name.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if part.startswith("0x"):
            digits, base = part[2:], 16
            if digits and not all(c in "0123456789abcdef" for c in digits):
                return None
            values.append(int(digits, base) if digits else 0)
        elif part and all(c in "0123456789" for c in part):
            base = 8 if len(part) > 1 and part.startswith("0") else 10
            if base == 8 and not all(c in "01234567" for c in part):
                return None
            values.append(int(part, base))
        else:
            return None
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 256 ** (4 - len(leading)):
        return None
    number = 0
    for value in leading:
        number = number * 256 + value
    number = number * 256 ** (4 - len(leading)) + last
    return ipaddress.IPv4Address(number)


def _split_authority(authority: str) -> tuple[str, str | None, bool]:
    """Split ``host[:port]`` / ``[v6][:port]`` into (host, port text or None, bracketed)."""
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            raise _fail(f"webhookURL host '{_shown(authority)}' has an unclosed '['")
        host, rest = authority[1:end], authority[end + 1 :]
        if not rest:
            return host, None, True
        if not rest.startswith(":"):
            raise _fail(f"webhookURL has unexpected text after the IPv6 address: '{_shown(rest)}'")
        return host, rest[1:], True
    if "]" in authority:
        raise _fail(f"webhookURL host '{_shown(authority)}' is not a valid host")
    if authority.count(":") > 1:
        raise _fail(
            f"webhookURL host '{_shown(authority)}' is not valid; "
            "IPv6 addresses must be enclosed in brackets, e.g. https://[2001:db8::1]/"
        )
    host, sep, port = authority.partition(":")
    return host, (port if sep else None), False


def _parse_port(text: str | None, scheme: str) -> int:
    if text is None:
        return _DEFAULT_PORTS[scheme]
    if not _PORT_RE.fullmatch(text):
        raise _fail(f"webhookURL port '{_shown(text)}' must be a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _fail(f"webhookURL port {_shown(text)} is out of range; use 1 to 65535")
    return port


def _ip_literal_problem(shown_host: str, ip: IPAddress, allow_loopback: bool) -> None:
    problem = address_problem(ip)
    if problem is None or (allow_loopback and _is_loopback(ip)):
        return
    canonical = str(ip)
    if shown_host.strip("[]").lower() == canonical:
        raise _fail(f"webhookURL host '{shown_host}' is {problem}")
    raise _fail(f"webhookURL host '{_shown(shown_host)}' is {canonical}, {problem}")


def _ascii_host(raw: str) -> tuple[str, ipaddress.IPv4Address | None]:
    """Normalise a non-bracketed host to lower-case ASCII; return it and its IPv4 if it is one."""
    shown = _shown(raw)
    if "%" in raw:
        raise _fail(f"webhookURL host '{shown}' must not contain percent-encoded characters")
    host = unicodedata.normalize("NFKC", raw).translate(_DOT_EQUIVALENTS).lower()
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise _fail("webhookURL must include a host name")
    ipv4 = _parse_ipv4(host)
    if ipv4 is not None:
        return host, ipv4
    if ":" in host or "[" in host or "]" in host:
        raise _fail(f"webhookURL host '{shown}' is not a valid host name")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise _fail(f"webhookURL host '{shown}' is not a valid domain name") from None
        ipv4 = _parse_ipv4(host)
        if ipv4 is not None:
            return host, ipv4
    labels = host.split(".")
    if len(host) > _MAX_HOST_LENGTH or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise _fail(f"webhookURL host '{shown}' is not a valid domain name")
    if _NUMERIC_LABEL_RE.fullmatch(labels[-1]):
        # Browsers and inet_aton read a host ending in a number as an IPv4 address; no real
        # top-level domain is numeric, so such a host is a malformed address, not a name.
        raise _fail(f"webhookURL host '{shown}' looks like an IPv4 address but is not a valid one")
    return host, None


def _is_loopback_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def _name_problem(host: str) -> str | None:
    """Why a (normalised, non-localhost) host name is refused without resolving it."""
    if host == "metadata.google.internal":
        return "the cloud metadata server"
    if "." not in host:
        return "not a fully qualified domain name (a single-label name resolves only internally)"
    if host.endswith(".internal"):
        return "an internal-only name (.internal)"
    if host.endswith(".local"):
        return "a link-local multicast DNS name (.local)"
    if host.endswith(".localdomain"):
        return "a local-only name (.localdomain)"
    if host.endswith(".arpa"):
        return "a reserved infrastructure name (.arpa, including .home.arpa)"
    return None


def _resolve(
    shown_host: str, host: str, port: int, resolve: Resolver, allow_loopback: bool
) -> tuple[str, ...]:
    try:
        answers = resolve(host, port)
    except HostNotFound:
        raise _fail(
            f"webhookURL host '{shown_host}' does not resolve; check the host name"
        ) from None
    addresses: list[str] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer) if isinstance(answer, str) else None
        except ValueError:
            ip = None
        if ip is None:
            raise _fail(
                f"webhookURL host '{shown_host}' resolves to '{_shown(str(answer))}', "
                "which is not an IP address"
            )
        problem = address_problem(ip)
        if problem is not None and not (allow_loopback and _is_loopback(ip)):
            raise _fail(f"webhookURL host '{shown_host}' resolves to {ip}, {problem}")
        canonical = str(ip)
        if canonical not in addresses:
            addresses.append(canonical)
    if not addresses:
        raise _fail(f"webhookURL host '{shown_host}' does not resolve (no addresses)")
    return tuple(addresses)


def check_webhook_url(
    url: str, resolve: Resolver, *, allow_loopback: bool = False
) -> WebhookTarget:
    """Validate a customer's webhook URL and resolve it, or raise :class:`InvalidWebhookURL`.

    ``resolve`` is called only for host names (never for IP literals or refused names). Every
    address it returns must pass :func:`address_problem`; one bad address refuses the URL.
    With ``allow_loopback`` (local development only) loopback hosts are also accepted, over
    ``http`` or ``https``.
    """
    if not isinstance(url, str):
        raise _fail("webhookURL must be a string")
    url = url.strip()
    if not url:
        raise _fail("webhookURL must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise _fail(f"webhookURL must be at most {MAX_URL_LENGTH} characters (got {len(url)})")
    for position, char in enumerate(url):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise _fail(
                "webhookURL must not contain whitespace or control characters "
                f"(found U+{ord(char):04X} at position {position}); percent-encode it"
            )
    if "\\" in url:
        raise _fail("webhookURL must not contain backslashes; use '/' (or %5C in the path)")

    match = _SCHEME_RE.fullmatch(url)
    if match is None:
        raise _fail(
            "webhookURL must be an absolute URL starting with https://, "
            "e.g. https://yourapp.com/webhook"
        )
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in _DEFAULT_PORTS or (scheme == "http" and not allow_loopback):
        raise _fail(f"webhookURL must use https (got '{_shown(scheme, 20)}')")
    if not rest.startswith("//"):
        raise _fail(f"webhookURL must start with '{scheme}://' followed by the host")
    if "#" in rest:
        raise _fail(
            "webhookURL must not contain a fragment ('#...'); it is never sent to the server"
        )
    after_slashes = rest[2:]
    authority_end = len(after_slashes)
    for delimiter in "/?":
        index = after_slashes.find(delimiter)
        if index != -1:
            authority_end = min(authority_end, index)
    authority = after_slashes[:authority_end]
    if "@" in authority:
        raise _fail("webhookURL must not contain credentials (user:password@ before the host)")
    if not authority:
        raise _fail("webhookURL must include a host, e.g. https://yourapp.com/webhook")

    raw_host, port_text, bracketed = _split_authority(authority)
    port = _parse_port(port_text, scheme)
    if not raw_host:
        raise _fail("webhookURL must include a host, e.g. https://yourapp.com/webhook")

    ip: IPAddress | None
    if bracketed:
        if "%" in raw_host:
            raise _fail(f"webhookURL host '[{_shown(raw_host)}]' must not contain an IPv6 zone id")
        try:
            ip = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise _fail(
                f"webhookURL host '[{_shown(raw_host)}]' is not a valid IPv6 address"
            ) from None
        shown_host = f"[{raw_host}]"
        host = str(ip)
    else:
        shown_host = _shown(raw_host)
        host, ip = _ascii_host(raw_host)
        if ip is not None:
            host = str(ip)

    if ip is not None:
        _ip_literal_problem(shown_host, ip, allow_loopback)
        is_loopback_host = _is_loopback(ip)
        addresses: tuple[str, ...] | None = (host,)
    elif _is_loopback_name(host):
        if not allow_loopback:
            raise _fail(
                f"webhookURL host '{shown_host}' is a loopback name; "
                "use a public HTTPS endpoint reachable from the internet"
            )
        is_loopback_host = True
        addresses = _LOOPBACK_NAME_ADDRESSES
    else:
        problem = _name_problem(host)
        if problem is not None:
            raise _fail(f"webhookURL host '{shown_host}' is {problem}")
        is_loopback_host = False
        addresses = None  # resolved below, once the scheme is known to be acceptable

    if scheme == "http" and not is_loopback_host:
        raise _fail(
            "webhookURL must use https (got 'http'); plain http is allowed only for "
            "loopback hosts in local mode"
        )
    if addresses is None:
        addresses = _resolve(shown_host, host, port, resolve, allow_loopback)
    return WebhookTarget(url=url, scheme=scheme, host=host, port=port, addresses=addresses)
