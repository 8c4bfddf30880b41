"""Server-side request forgery checks for the upstream URLs users give us (external endpoints, webhooks).

A URL is safe when it is http(s) and every address its host resolves to is a public unicast address: loopback,
link-local (169.254.169.254, the cloud metadata service), private, shared (CGNAT), reserved, multicast,
unspecified and documentation ranges are refused, including when hidden inside IPv6 (IPv4-mapped, 6to4, Teredo,
NAT64). `settings.INFERIA_UPSTREAM_ALLOW_PRIVATE` allows private and loopback addresses (`make run` on a laptop), but
never the link-local ranges where clouds answer with instance credentials (169.254.0.0/16, fe80::/10, fd00:ec2::254):
only `settings.INFERIA_UPSTREAM_ALLOW_LINK_LOCAL` as well does. The scheme check always applies.

A host must be written the one way every parser reads alike: IPv4 as four decimal numbers, IPv6 in brackets without a
zone, a name in ASCII without percent-escapes or a trailing dot. `http://134744072/`, `http://0177.0.0.1/` and
`http://127.1/` mean an address to getaddrinfo and something else (or nothing) to other URL parsers, so they are
refused rather than guessed at.

Checking a URL when it is saved is not enough: DNS can answer differently when we connect (rebinding) and a
server can redirect. So the same check runs at connection time in `guarded_connector()`, on the very addresses
aiohttp connects to, for the first request and for every redirect it follows. Replicas that Inferia's own adapters
create on private networks are trusted and use an ordinary connector.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import idna
from aiohttp.abc import ResolveResult
from django.conf import settings

from inferia_runtime.errors import DomainRefusal

ALLOWED_SCHEMES = ("http", "https")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Where cloud metadata services answer (AWS, GCP, Azure, OpenStack on 169.254.169.254; AWS's IPv6 one on
# fd00:ec2::254; Alibaba's on 100.100.100.200): refused even when private addresses are allowed.
_METADATA_NETWORKS = tuple(
    ipaddress.ip_network(net) for net in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")
)
# WHATWG's "ends in a number": such a host is an IPv4 address to browsers and yarl alike, so it must be a plain one.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_NAME_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class UnsafeUrlError(DomainRefusal):
    """A URL Inferia must not call: wrong scheme, malformed, or reaching a non-public address."""


def _allow_private(allow_private: bool | None) -> bool:
    return settings.INFERIA_UPSTREAM_ALLOW_PRIVATE if allow_private is None else allow_private


def _allow_link_local(allow_link_local: bool | None) -> bool:
    return settings.INFERIA_UPSTREAM_ALLOW_LINK_LOCAL if allow_link_local is None else allow_link_local


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address, where traffic would actually go
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_is_public(address: IPAddress | str) -> bool:
    """Whether `address` is a globally routable unicast address, looking inside IPv6 forms that carry an IPv4."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return address_is_public(inner)
    refused = (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )
    return not refused and ip.is_global


def address_is_link_local(address: IPAddress | str) -> bool:
    """Whether `address` is link-local or a cloud metadata address, looking inside IPv6 forms that carry an IPv4."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return address_is_link_local(inner)
    return ip.is_link_local or any(ip in network for network in _METADATA_NETWORKS)


def host_check(host: str) -> str:
    """`host` (as urlsplit's `hostname` gives it) if it is written in the one form all parsers agree on, else
    UnsafeUrlError saying how to write it."""
    if "%" in host:
        raise UnsafeUrlError(f"host {host!r} has a percent-escape or an IPv6 zone; write it out plainly")
    if not host.isascii():
        try:
            ascii_host = idna.encode(host, uts46=True).decode()
        except idna.IDNAError as error:
            raise UnsafeUrlError(f"host {host!r} is not a valid internationalised name: {error}") from None
        raise UnsafeUrlError(f"write the host {host!r} in its ASCII form, {ascii_host}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeUrlError(f"host {host!r} is not a valid IPv6 address") from None
        return host
    if host.endswith("."):
        raise UnsafeUrlError(f"write the host {host!r} without its trailing dot")
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            canonical = str(ipaddress.IPv4Address(host))
        except ValueError:
            canonical = ""
        if canonical != host:
            raise UnsafeUrlError(
                f"host {host!r} is not an IPv4 address in dotted decimal{_read_as(host)}; URL parsers disagree on "
                "what decimal, octal, hex and shortened forms mean, so write the four numbers out (e.g. 10.0.0.1)"
            )
        return host
    if len(host) > 253 or not all(_NAME_LABEL.fullmatch(label) for label in labels):
        raise UnsafeUrlError(f"host {host!r} is not a valid hostname")
    return host


def _read_as(host: str) -> str:
    """What the C library would read `host` as, to show in the refusal."""
    try:
        return f" (some read it as {socket.inet_ntoa(socket.inet_aton(host))})"
    except OSError:
        return ""


def url_parse(url: str) -> tuple[str, str, int]:
    """The scheme, host and port of `url`, or UnsafeUrlError if it is not a plain http(s) URL."""
    if not isinstance(url, str) or any(ord(char) < 33 for char in url):
        raise UnsafeUrlError("URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeUrlError(f"malformed URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeUrlError(f"only http and https URLs are allowed, not {scheme or 'no scheme'}")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrlError("put credentials in the API key field, not in the URL")
    host = parts.hostname
    if not host:
        raise UnsafeUrlError("URL has no host")
    return scheme, host_check(host), port or (443 if scheme == "https" else 80)


def addresses_check(
    host: str, addresses: list[str], *, allow_private: bool | None = None, allow_link_local: bool | None = None
) -> None:
    """Raise UnsafeUrlError unless every one of `host`'s resolved `addresses` is public, or private (but not
    link-local, unless that too is allowed) when private addresses are allowed."""
    if not addresses:
        raise UnsafeUrlError(f"{host} does not resolve")
    private_ok = _allow_private(allow_private)
    link_local_ok = private_ok and _allow_link_local(allow_link_local)
    for address in addresses:
        if not private_ok and not address_is_public(address):
            raise UnsafeUrlError(f"{host} resolves to {address}, a non-public address")
        if not link_local_ok and address_is_link_local(address):
            raise UnsafeUrlError(
                f"{host} resolves to {address}, a link-local address (where cloud metadata services answer); "
                "INFERIA_UPSTREAM_ALLOW_LINK_LOCAL allows it"
            )


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


def _getaddrinfo_addresses(infos: list[Any]) -> list[str]:
    return sorted({info[4][0] for info in infos})


def url_check(url: str, *, allow_private: bool | None = None) -> str:
    """Check `url` now, resolving its host (blocking); returns it unchanged or raises UnsafeUrlError.

    For forms and REST validation; the connection itself is guarded again by `guarded_connector()`."""
    _scheme, host, port = url_parse(url)
    literal = _literal_ip(host)
    if literal is not None:
        addresses_check(host, [literal], allow_private=allow_private)
        return url
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeUrlError(f"{host} does not resolve: {error}") from None
    addresses_check(host, _getaddrinfo_addresses(infos), allow_private=allow_private)
    return url


async def url_check_async(url: str, *, allow_private: bool | None = None) -> str:
    """`url_check` for async code: resolves on the event loop's resolver instead of blocking."""
    _scheme, host, port = url_parse(url)
    literal = _literal_ip(host)
    if literal is not None:
        addresses_check(host, [literal], allow_private=allow_private)
        return url
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeUrlError(f"{host} does not resolve: {error}") from None
    addresses_check(host, _getaddrinfo_addresses(infos), allow_private=allow_private)
    return url


def redirect_target_check(current_url: str, location: str, *, allow_private: bool | None = None) -> str:
    """The absolute URL a redirect from `current_url` to `location` leads to, checked like any user URL.

    For code that follows redirects itself; aiohttp sessions on `guarded_connector()` are covered already."""
    return url_check(urljoin(current_url, location), allow_private=allow_private)


class SafeTCPConnector(aiohttp.TCPConnector):
    """A TCPConnector that refuses to connect to non-public addresses, checked on the addresses it is about to use.

    aiohttp sends every connection, redirects included, through `_resolve_host`, which returns the literal
    address of an IP URL without asking the resolver; checking its result (not a separate lookup) covers literal
    IPs, every resolved address and DNS rebinding alike. tests/compute/test_urlsafety.py pins this behaviour.
    """

    def __init__(self, *args: Any, allow_private: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inferia_allow_private = allow_private

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[ResolveResult]:
        try:
            host_check(host)
        except UnsafeUrlError as error:
            raise aiohttp.InvalidUrlClientError(host, str(error)) from error
        addresses = await super()._resolve_host(host, port, traces=traces)
        try:
            addresses_check(host, [entry["host"] for entry in addresses], allow_private=self._inferia_allow_private)
        except UnsafeUrlError as error:
            # A ClientConnectorError subclass would be retried by callers as a flaky network; this must not be.
            raise aiohttp.InvalidUrlClientError(host, str(error)) from error
        return addresses


def guarded_connector(*, allow_private: bool | None = None, **kwargs: Any) -> SafeTCPConnector:
    """A connector for sessions that call user-supplied upstreams: SSRF-checked at every connection."""
    return SafeTCPConnector(allow_private=allow_private, **kwargs)
