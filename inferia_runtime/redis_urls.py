"""One Redis server, separate databases per purpose: the Celery broker, cache/counters and the channel layer.

`REDIS_URL` names the server (`redis://host:6379`, `rediss://...` or `unix:///path/redis.sock`); the database
numbers are Inferia's. Each purpose can also be pointed elsewhere with its own variable.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

BROKER_DB = 0
CACHE_DB = 1
CHANNELS_DB = 2


def redis_db_url(base: str, db: int) -> str:
    """The URL of database `db` on the server that `base` names, in redis-py's URL syntax."""
    parts = urlsplit(base)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        # Not urlunsplit: with an empty host it drops the `//`, and redis-py refuses `unix:/path`.
        return f"unix://{parts.path}?{urlencode(query)}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def celery_broker_url(redis_url: str) -> str:
    """Celery (kombu) spells a unix socket as `redis+socket://` with the database as `virtual_host`."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        db = query.pop("db", "0")
        query["virtual_host"] = db
        return f"redis+socket://{parts.path}?{urlencode(query)}"
    return redis_url
