"""DATABASE_URL to Django's DATABASES entry, including libpq's multi-host form for a PostgreSQL failover.

A managed PostgreSQL that fails over to a standby is named by all its hosts, as libpq spells it:
`postgres://user:pw@db1:5432,db2:5433/inferia?target_session_attrs=read-write`. dj-database-url reads one host
only, so such a URL is split here: the first host goes through dj-database-url like any single-host URL (the same
options, the same quoting), then HOST and PORT become the comma lists libpq takes ("db1,db2", "5432,5433").
psycopg tries the hosts in order and keeps the first that satisfies `target_session_attrs`, so after a failover a
new connection lands on the promoted standby. A single-host URL is parsed by dj-database-url exactly as before.

Errors never repeat the URL: it holds the password.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import dj_database_url

from inferia_runtime.env import ConfigError

MAX_URL_LENGTH = 4096
MAX_HOSTS = 16
MAX_CONNECT_TIMEOUT_SECONDS = 600
DEFAULT_PORT = "5432"
# libpq's values (PostgreSQL 14 and later; psycopg's wheels ship such a libpq).
SESSION_ATTRS = frozenset({"any", "read-write", "read-only", "primary", "standby", "prefer-standby"})

_SCHEMES = ("postgres", "postgresql")
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_PORT = re.compile(r"[0-9]{1,5}")


def database_settings(url: str, *, conn_max_age: int | None) -> dict[str, Any]:
    """Django's DATABASES["default"] for a PostgreSQL URL with one host or several; ConfigError if it is unusable."""
    parts = _split(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    entries = hostlist.split(",")
    if len(entries) > MAX_HOSTS:
        raise ConfigError(f"DATABASE_URL names {len(entries)} hosts; at most {MAX_HOSTS}")
    if len(entries) == 1:
        if hostlist:
            _host_port(hostlist)
        config = _dj_parse(url, conn_max_age)
    else:
        hosts = [_host_port(entry) for entry in entries]
        first = urlunsplit(parts._replace(netloc=f"{userinfo}{at}{entries[0]}"))
        config = _dj_parse(first, conn_max_age)
        if {"host", "hostaddr", "port"} & set(config.get("OPTIONS", {})):
            raise ConfigError("DATABASE_URL with several hosts cannot also set host, hostaddr or port in its query")
        config["HOST"] = ",".join(host for host, _ in hosts)
        # A host without a port gets the default explicitly, so the two lists always pair up one to one.
        ports = [port or DEFAULT_PORT for _, port in hosts]
        config["PORT"] = ",".join(ports) if any(port for _, port in hosts) else ""
    _check_options(config.get("OPTIONS", {}))
    return dict(config)


def database_url_with_name(url: str, name: str) -> str:
    """`url` with its database name replaced by `name`; hosts, credentials and options kept (several hosts too)."""
    parts = _split(url)
    return urlunsplit(parts._replace(path="/" + name))


def _split(url: str) -> SplitResult:
    if len(url) > MAX_URL_LENGTH:
        raise ConfigError(f"DATABASE_URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise ConfigError("DATABASE_URL contains a control character")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError("DATABASE_URL is not a valid URL") from None
    if parts.scheme not in _SCHEMES:
        raise ConfigError("DATABASE_URL must be a PostgreSQL URL (postgres://...); PostgreSQL is the only database")
    if parts.fragment:
        raise ConfigError("DATABASE_URL must not have a #fragment")
    return parts


def _host_port(entry: str) -> tuple[str, str]:
    """One `host[:port]` of the host list, checked: a name, an IPv4 or [IPv6] address, or a %-quoted socket dir."""
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or not _IPV6.fullmatch(host) or (rest and not rest.startswith(":")):
            raise ConfigError("DATABASE_URL has a malformed [IPv6] host")
        port = rest[1:]
    else:
        host, _, port = entry.partition(":")
        if ":" in port:
            raise ConfigError("DATABASE_URL has a host with more than one ':'; write IPv6 addresses in brackets")
        host = unquote(host)
        if not host:
            raise ConfigError("DATABASE_URL has an empty host in its host list")
        if not (_HOSTNAME.fullmatch(host) or (host.startswith("/") and "," not in host)):
            raise ConfigError("DATABASE_URL has a host that is neither a name, an address nor a socket directory")
    if port and not (_PORT.fullmatch(port) and 0 < int(port) < 65536):
        raise ConfigError("DATABASE_URL has a port that is not a number from 1 to 65535")
    return host, port


def _dj_parse(url: str, conn_max_age: int | None) -> Any:
    try:
        return dj_database_url.parse(url, conn_max_age=conn_max_age)
    except ValueError:
        # dj-database-url's messages are fine but some repeat the URL; say what is wrong without it.
        raise ConfigError("DATABASE_URL is not a valid URL (quote special characters in the password)") from None


def _check_options(options: dict[str, Any]) -> None:
    """The failover options are checked here rather than by libpq, whose error would come only at first connect."""
    if "target_session_attrs" in options:
        value = options["target_session_attrs"]
        if not isinstance(value, str) or value not in SESSION_ATTRS:
            allowed = ", ".join(sorted(SESSION_ATTRS))
            raise ConfigError(f"DATABASE_URL's target_session_attrs must be one of {allowed}")
    if "connect_timeout" in options:
        value = options["connect_timeout"]
        if isinstance(value, bool) or not isinstance(value, int) or value > MAX_CONNECT_TIMEOUT_SECONDS:
            raise ConfigError(
                f"DATABASE_URL's connect_timeout must be whole seconds from 0 to {MAX_CONNECT_TIMEOUT_SECONDS}"
            )
