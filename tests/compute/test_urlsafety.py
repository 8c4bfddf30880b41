"""User-supplied upstream URLs cannot reach loopback, metadata, private or reserved addresses, now or later."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from apps.compute import urlsafety
from apps.compute.urlsafety import (
    UnsafeUrlError,
    address_is_public,
    guarded_connector,
    redirect_target_check,
    url_check,
    url_check_async,
)


@pytest.fixture(autouse=True)
def _production_default(settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False
    settings.INFERIA_UPSTREAM_ALLOW_LINK_LOCAL = False


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space (CGNAT)
        "0.0.0.0",  # noqa: S104
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 wrapping the metadata address
        "64:ff9b::a9fe:a9fe",  # NAT64 to the metadata address
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not address_is_public(address)
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeUrlError):
        url_check(f"http://{host}:8000/v1")


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"])
def test_public_addresses_pass(address):
    assert address_is_public(address)
    host = f"[{address}]" if ":" in address else address
    assert url_check(f"https://{host}/v1") == f"https://{host}/v1"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://8.8.8.8/",
        "file:///etc/passwd",
        "gopher://8.8.8.8/",
        "8.8.8.8:80",
        "http://",
        "http://u:p@8.8.8.8/",
        "http://8.8.8.8 /",
        "http://8.8.8.8:99999/",
    ],
)
def test_malformed_or_non_http_urls_are_refused(url):
    with pytest.raises(UnsafeUrlError):
        url_check(url)


def test_hostnames_are_checked_on_every_resolved_address():
    with pytest.raises(UnsafeUrlError, match="non-public"):
        url_check("http://localhost:8000/v1")


def test_a_name_with_one_private_address_among_public_ones_is_refused():
    with pytest.raises(UnsafeUrlError, match=r"10\.0\.0\.5"):
        urlsafety.addresses_check("mixed.example", ["8.8.8.8", "10.0.0.5"])


def test_unresolvable_hosts_are_refused():
    with pytest.raises(UnsafeUrlError, match="does not resolve"):
        url_check("http://no-such-host.invalid/")


def test_the_setting_allows_private_addresses_but_never_other_schemes(settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    assert url_check("http://localhost:8000/v1")
    assert url_check("http://10.1.2.3/")
    with pytest.raises(UnsafeUrlError):
        url_check("file:///etc/passwd")


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "169.254.0.1",
        "[fe80::1]",
        "[fd00:ec2::254]",
        "[::ffff:169.254.169.254]",
        "[2002:a9fe:a9fe::]",
        "[64:ff9b::a9fe:a9fe]",
        "100.100.100.200",
    ],
)
def test_allowing_private_addresses_still_refuses_link_local_metadata(settings, host):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    with pytest.raises(UnsafeUrlError, match="link-local"):
        url_check(f"http://{host}/latest/meta-data/")
    settings.INFERIA_UPSTREAM_ALLOW_LINK_LOCAL = True
    assert url_check(f"http://{host}/latest/meta-data/")


def test_allowing_link_local_alone_allows_nothing(settings):
    settings.INFERIA_UPSTREAM_ALLOW_LINK_LOCAL = True
    with pytest.raises(UnsafeUrlError, match="non-public"):
        url_check("http://169.254.169.254/")
    with pytest.raises(UnsafeUrlError, match="non-public"):
        url_check("http://127.0.0.1/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://134744072/", r"dotted decimal \(some read it as 8\.8\.8\.8\)"),
        ("http://2130706433:8000/", r"some read it as 127\.0\.0\.1"),
        ("http://0177.0.0.1/", r"some read it as 127\.0\.0\.1"),
        ("http://010.8.8.8/", "dotted decimal"),
        ("http://8.8.8.010/", "dotted decimal"),
        ("http://0x7f.1/", r"some read it as 127\.0\.0\.1"),
        ("http://0x08080808/", r"some read it as 8\.8\.8\.8"),
        ("http://127.1/", r"some read it as 127\.0\.0\.1"),
        ("http://10.1.2/", r"some read it as 10\.1\.0\.2"),
        ("http://8.8.8.8.8/", "dotted decimal"),
        ("http://foo.0x10/", "dotted decimal"),
        ("http://8.8.8.8./", "trailing dot"),
        ("http://dns.google./", "trailing dot"),
        ("http://%38.8.8.8/", "percent-escape"),
        ("http://dns%2egoogle/", "percent-escape"),
        ("http://[fe80::1%25eth0]/", "IPv6 zone"),
        ("http://\uff18.\uff18.\uff18.\uff18/", r"ASCII form, 8\.8\.8\.8"),
        ("http://b\u00fccher.example/", "ASCII form, xn--bcher-kva.example"),
        ("http://a..b.example/", "not a valid hostname"),
        ("http://-a.example/", "not a valid hostname"),
        ("http://a!b.example/", "not a valid hostname"),
    ],
)
def test_hosts_that_parsers_read_differently_are_refused_with_a_clear_message(url, message):
    with pytest.raises(UnsafeUrlError, match=message):
        url_check(url)


@pytest.mark.parametrize(
    "url",
    ["http://8.8.8.8/", "https://dns.google/v1", "http://[2606:4700:4700::1111]:8000/", "https://xn--bcher-kva.ch/"],
)
def test_canonical_hosts_pass_the_form_check(url):
    assert urlsafety.host_check(urlsafety.url_parse(url)[1])


async def test_the_guarded_connector_refuses_a_non_canonical_host_without_connecting(servers, settings):
    (port, _), _hits = servers
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    async with aiohttp.ClientSession(connector=guarded_connector()) as session:
        with pytest.raises(aiohttp.InvalidUrlClientError, match="dotted decimal"):
            await session.get(f"http://2130706433:{port}/hello")


async def test_the_async_check_matches_the_sync_one():
    with pytest.raises(UnsafeUrlError):
        await url_check_async("http://localhost/")
    assert await url_check_async("http://8.8.8.8/") == "http://8.8.8.8/"


def test_redirect_targets_are_resolved_against_the_current_url_and_checked():
    assert redirect_target_check("https://8.8.8.8/a/b", "/c") == "https://8.8.8.8/c"
    with pytest.raises(UnsafeUrlError):
        redirect_target_check("https://8.8.8.8/a", "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(UnsafeUrlError):
        redirect_target_check("https://8.8.8.8/a", "//localhost/x")
    with pytest.raises(UnsafeUrlError):
        redirect_target_check("https://8.8.8.8/a", "file:///etc/passwd")


@pytest.fixture
async def servers(unused_tcp_port_factory):
    """Two loopback servers: 127.0.0.1 answers and redirects to 127.0.0.2, which would leak a secret."""
    runners = []
    hits = []

    async def secret(request):
        hits.append(request.path)
        return web.Response(text="metadata-secret")

    async def hello(request):
        return web.Response(text="hello")

    async def bounce(request):
        raise web.HTTPFound(f"http://127.0.0.2:{ports[1]}/secret")

    ports = [unused_tcp_port_factory(), unused_tcp_port_factory()]
    for host, port, routes in (
        ("127.0.0.1", ports[0], [web.get("/hello", hello), web.get("/bounce", bounce)]),
        ("127.0.0.2", ports[1], [web.get("/secret", secret)]),
    ):
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
    yield ports, hits
    for runner in runners:
        await runner.cleanup()


async def test_the_guarded_connector_refuses_literal_loopback_at_connect_time(servers):
    (port, _), _hits = servers
    async with aiohttp.ClientSession(connector=guarded_connector()) as session:
        with pytest.raises(aiohttp.InvalidUrlClientError, match="non-public"):
            await session.get(f"http://127.0.0.1:{port}/hello")
    async with (
        aiohttp.ClientSession(connector=guarded_connector(allow_private=True)) as session,
        session.get(f"http://127.0.0.1:{port}/hello") as response,
    ):
        assert await response.text() == "hello"


async def test_the_guarded_connector_checks_every_redirect_hop(servers, monkeypatch):
    (port, _), hits = servers
    # Stand-in for the internet: 127.0.0.1 plays a public server, everything else keeps the real rule.
    real = urlsafety.address_is_public
    monkeypatch.setattr(urlsafety, "address_is_public", lambda address: address == "127.0.0.1" or real(address))
    async with aiohttp.ClientSession(connector=guarded_connector()) as session:
        async with session.get(f"http://127.0.0.1:{port}/hello") as response:
            assert await response.text() == "hello"  # the first hop is allowed
        with pytest.raises(aiohttp.InvalidUrlClientError, match=r"127\.0\.0\.2"):
            await session.get(f"http://127.0.0.1:{port}/bounce")
    assert hits == []  # the redirect target was never contacted


class RebindingResolver(AbstractResolver):
    """A DNS that answers a public address when the URL is saved and loopback when we connect."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [
            {"hostname": host, "host": "127.0.0.1", "port": self.port, "family": socket.AF_INET, "proto": 0, "flags": 0}
        ]

    async def close(self):
        return None


async def test_dns_rebinding_is_caught_on_the_address_actually_connected_to(servers):
    (port, _), _hits = servers
    assert url_check("http://8.8.8.8/")  # what the name pointed at when it was checked
    connector = guarded_connector(resolver=RebindingResolver(port))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.InvalidUrlClientError, match=r"rebind\.example"):
            await session.get(f"http://rebind.example:{port}/hello")
