"""One Redis server, separate databases per purpose: the Celery broker, cache/counters and the channel layer.

`REDIS_URL` names the server (`redis://host:6379`, `rediss://...` or `unix:///path/redis.sock`), or a master that
Redis Sentinel watches:

    redis+sentinel://[[username]:password@]host1:26379,host2:26379/MASTER_NAME[?sentinel_password=...]

The password (and username) are the master's and its replicas'; `sentinel_password` is the sentinels' own, when
they require one. The database numbers are Inferia's: a purpose's URL adds its database after the master's name
(`redis+sentinel://h1:26379,h2:26379/mymaster/1`). Each purpose can also be pointed elsewhere with its own variable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

BROKER_DB = 0
CACHE_DB = 1
CHANNELS_DB = 2
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))(?::(?P<port>[0-9]{1,5}))?")


class RedisUrlError(ValueError):
    """A Redis URL that cannot name a server."""


@dataclass(frozen=True)
class SentinelTarget:
    """A master that Redis Sentinel watches, and how to reach it."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None

    def connection_kwargs(self) -> dict[str, object]:
        """redis-py's arguments for connections to the master (and replicas)."""
        kwargs: dict[str, object] = {"db": self.db}
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def sentinel_kwargs(self) -> dict[str, object]:
        """redis-py's arguments for connections to the sentinels themselves."""
        return {"password": self.sentinel_password} if self.sentinel_password else {}


def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def sentinel_target(url: str) -> SentinelTarget:
    """Parse a `redis+sentinel://` URL (see the module docstring)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise RedisUrlError(f"not a {SENTINEL_SCHEME}:// URL")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    sentinels: list[tuple[str, int]] = []
    for host in hosts.split(","):
        match = _HOST.fullmatch(host.strip())
        if match is None:
            raise RedisUrlError(f"{SENTINEL_SCHEME}:// URL: bad sentinel address {host!r}")
        name = match.group("v6") or match.group("name")
        sentinels.append((name, int(match.group("port") or SENTINEL_PORT)))
    segments = [segment for segment in parts.path.split("/") if segment]
    if not segments or len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise RedisUrlError(f"{SENTINEL_SCHEME}:// URL must end in /MASTER_NAME (or /MASTER_NAME/DB)")
    query = dict(parse_qsl(parts.query))
    return SentinelTarget(
        sentinels=tuple(sentinels),
        master_name=unquote(segments[0]),
        db=int(segments[1]) if len(segments) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=query.get("sentinel_password") or None,
    )


def redis_db_url(base: str, db: int) -> str:
    """The URL of database `db` on the server that `base` names, in redis-py's URL syntax (or ours, for Sentinel)."""
    parts = urlsplit(base)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        # Not urlunsplit: with an empty host it drops the `//`, and redis-py refuses `unix:/path`.
        return f"unix://{parts.path}?{urlencode(query)}"
    if parts.scheme == SENTINEL_SCHEME:
        master = sentinel_target(base).master_name
        return urlunsplit((parts.scheme, parts.netloc, f"/{master}/{db}", parts.query, ""))
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def celery_broker_url(redis_url: str) -> str:
    """Celery (kombu) spells a unix socket as `redis+socket://` with the database as `virtual_host`, and Sentinel as
    `sentinel://host1;sentinel://host2/db` with the master's name in the transport options."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        db = query.pop("db", "0")
        query["virtual_host"] = db
        return f"redis+socket://{parts.path}?{urlencode(query)}"
    if parts.scheme == SENTINEL_SCHEME:
        target = sentinel_target(redis_url)
        credentials = parts.netloc.rpartition("@")[0]
        prefix = f"{credentials}@" if credentials else ""
        hosts = [f"sentinel://{prefix}{_netloc(host, port)}" for host, port in target.sentinels]
        return ";".join(hosts) + f"/{target.db}"
    return redis_url


def celery_transport_options(redis_url: str) -> dict[str, object]:
    """kombu's transport options for the broker URL: only Sentinel needs any (the master's name)."""
    if not is_sentinel_url(redis_url):
        return {}
    target = sentinel_target(redis_url)
    options: dict[str, object] = {"master_name": target.master_name}
    if target.sentinel_kwargs():
        options["sentinel_kwargs"] = target.sentinel_kwargs()
    return options


def channels_host(redis_url: str, **options: object) -> dict[str, object]:
    """One `hosts` entry of channels_redis's RedisChannelLayer: an address, or a Sentinel-watched master."""
    if not is_sentinel_url(redis_url):
        return {"address": redis_url, **options}
    target = sentinel_target(redis_url)
    return {
        "sentinels": list(target.sentinels),
        "master_name": target.master_name,
        "sentinel_kwargs": target.sentinel_kwargs() or None,
        **target.connection_kwargs(),
        **options,
    }


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
