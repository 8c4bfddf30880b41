"""The address of the client behind a request, for sign-in throttling and the audit trail.

`X-Forwarded-For` is written by whoever sent the request, so it is believed only when the peer (REMOTE_ADDR) is one
of INFERIA_TRUSTED_PROXIES (CIDRs; none by default). Then the header is read from the right, skipping the trusted
proxies' own hops: the first address no trusted proxy vouches for is the client. Anything left of it could have been
typed by that client and is ignored.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def trusted_proxy_networks_parse(cidrs: list[str]) -> list[str]:
    """`cidrs` checked (raises ValueError naming the first that is not an address or network), for settings."""
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP address or CIDR network") from None
    return cidrs


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)


def client_address(request: Any) -> str | None:
    """The client's IP address: REMOTE_ADDR, or, when that is a trusted proxy, the nearest untrusted hop of
    X-Forwarded-For. `request` is Django's or DRF's."""
    meta = getattr(request, "META", {})
    peer = meta.get("REMOTE_ADDR") or None
    networks = _networks(tuple(getattr(settings, "INFERIA_TRUSTED_PROXIES", ())))
    peer_address = _parse(peer) if peer else None
    if not networks or peer_address is None or not _trusted(peer_address, networks):
        return peer
    client = peer_address
    hops = [hop for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if (hop := part.strip())]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            break  # a malformed hop: the trusted proxy to its right is the last address that can be believed
        client = address
        if not _trusted(address, networks):
            break
    return str(client)


__all__ = ["client_address", "trusted_proxy_networks_parse"]
