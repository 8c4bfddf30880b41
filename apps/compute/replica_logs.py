"""A replica's engine output as the console and the REST API see it: read by the worker through the replica's adapter
(the web process may not run where the engine does), redacted, and kept in a bounded buffer in Redis.

While a replica provisions, starts or is unhealthy, and once more as it fails, the worker (`replica_logs_publish`,
called by the provisioning run and the health checker) reads the tail of its output, keeps the lines it has not seen
before, and announces them (`ReplicaOutputCaptured`, for the deployment's live page). Adapters only offer "the last N
lines", not an offset, so the new lines are found by lining the fresh tail up against the fingerprints of the previous
one: a line is never published twice (a long run of identical lines may be published short).

Nothing that looks like a credential leaves this module: the provider's own secret values, the replica's node token, and
anything shaped like a key, a token, an `Authorization` header or a password are masked before a line is stored,
published or returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from apps.compute.adapters import AdapterError, adapter_for
from apps.compute.credentials import CredentialsError, provider_credentials
from apps.compute.events import ReplicaOutputCaptured
from apps.compute.node_tokens import node_token
from inferia_runtime.events import event_publish
from inferia_runtime.redis_clients import sync_redis

if TYPE_CHECKING:
    from apps.compute.models import Replica

logger = logging.getLogger(__name__)

LOG_WINDOW_LINES = 200  # the tail read from the adapter on each capture
LOG_BUFFER_LINES = 500  # kept per replica, the most the REST API returns
LOG_PUBLISH_LINES = 100  # at most per announcement to the live page
LOG_LINE_CHARS = 2000
LOG_TTL_S = 3 * 24 * 3600
REDACTED = "[redacted]"
_BUFFER_KEY = "inferia:compute:replica_logs:{replica_id}"
_SEEN_KEY = "inferia:compute:replica_logs_seen:{replica_id}"
_LOCK_KEY = "inferia:compute:replica_logs_lock:{replica_id}"
_LOCK_S = 60
# Secret values shorter than this are words ("true", a port): masking them would shred ordinary lines.
_MIN_SECRET_CHARS = 8

_SECRET_NAME = r"[\w.-]*(?:api[_-]?key|access[_-]?key|secret|token|passw(?:or)?d|credentials?|auth)[\w.-]*"  # noqa: S105
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # `Authorization: Bearer ...` in any spelling (header dumps, repr'd dicts, curl -H), whatever the scheme.
    (re.compile(r"(?i)((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"\b((?i:bearer)|Basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1> {REDACTED}"),
    # `--hf-token X`, `--api-key=X` on a logged command line.
    (re.compile(rf"(?i)(--{_SECRET_NAME}(?:\s+|=))(?!-)\S+"), rf"\g<1>{REDACTED}"),
    # name=value and "name": "value" with a secret-sounding name (not plain numbers: `max_num_batched_tokens=8192`).
    (
        re.compile(rf"(?i)\b({_SECRET_NAME}[\"']?\s*[:=]\s*[\"']?)(?!\d+\b)(?!None\b)[^\s\"',;}}&)]+"),
        rf"\g<1>{REDACTED}",
    ),
    # user:password@ in URLs.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), rf"\g<1>{REDACTED}@"),
    # Vendor tokens by shape: Hugging Face, OpenAI-style and our own API keys, node tokens, GitHub, AWS, Slack,
    # Google, JWTs.
    (
        re.compile(
            r"(?<![\w-])(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{16,}|inf-node-[0-9a-f]{16,}"
            r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|(?:AKIA|ASIA)[A-Z0-9]{16}"
            r"|xox[abprse]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
            r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
        ),
        REDACTED,
    ),
)
_KEY_BLOCK_START = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")
_KEY_BLOCK_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")


def _secret_values(value: Any) -> Iterable[str]:
    """Every string inside a credentials value, and each long line of a multi-line one (a kubeconfig, a PEM)."""
    if isinstance(value, str):
        yield value
        if "\n" in value:
            yield from (line.strip() for line in value.splitlines() if len(line.strip()) >= 16)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_values(item)


def log_lines_redact(lines: Iterable[str], *, secrets: Iterable[str] = ()) -> list[str]:
    """`lines` with every known secret value and everything shaped like a credential masked; a private key block
    is masked whole, line by line."""
    known = sorted({s for s in secrets if len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True)
    masked = []
    in_key_block = False
    for line in lines:
        if in_key_block or _KEY_BLOCK_START.search(line):
            in_key_block = not _KEY_BLOCK_END.search(line)
            masked.append(REDACTED)
            continue
        for secret in known:
            line = line.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            line = pattern.sub(replacement, line)
        masked.append(line)
    return masked


def log_text_redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """`log_lines_redact` for a block of text."""
    return "\n".join(log_lines_redact(text.split("\n"), secrets=secrets))


def replica_secrets(replica: Replica) -> list[str]:
    """What must never appear in `replica`'s published output: its provider's credential values and its node
    token."""
    try:
        values = list(_secret_values(provider_credentials(replica.pool.provider).reveal()))
    except CredentialsError:
        values = []
    return [*values, node_token(replica)]


def _fingerprint(line: str) -> str:
    return hashlib.blake2b(line.encode(), digest_size=6).hexdigest()


def _first_unseen(seen: list[str], current: list[str]) -> int:
    """Where the lines not yet seen start in `current`: after the longest run of `seen`'s newest lines that
    `current` starts with (the tail moved on by that much). No overlap at all: everything is new."""
    for start in range(len(seen)):
        size = len(seen) - start
        if size <= len(current) and seen[start:] == current[:size]:
            return size
    return 0


@dataclass(frozen=True)
class LogCapture:
    """What one capture found: the new lines (the newest `LOG_PUBLISH_LINES` of them) and how many were left out."""

    lines: list[str]
    skipped: int = 0


def replica_logs_capture(replica: Replica, *, final: bool = False) -> LogCapture:
    """Read `replica`'s output tail through its adapter, keep the lines not seen before in its buffer and return
    them. One capture per replica at a time (a Redis lock): the provisioning run and the health checker may meet.

    A last line without its newline is still being written and waits for the next capture, unless `final` (the
    replica failed: there will be no next one). Never raises: output is a diagnosis aid, not a step."""
    client = sync_redis()
    lock = _LOCK_KEY.format(replica_id=replica.pk)
    try:
        if not client.set(lock, "1", nx=True, ex=_LOCK_S):
            return LogCapture([])
    except redis.RedisError:
        logger.warning("could not capture the output of replica %s: Redis is unavailable", replica.pk)
        return LogCapture([])
    try:
        text = adapter_for(replica.pool.provider).logs(replica, tail=LOG_WINDOW_LINES)
        return _kept(client, replica, text, final=final)
    except redis.RedisError:
        logger.warning("could not keep the output of replica %s: Redis is unavailable", replica.pk)
        return LogCapture([])
    except AdapterError as error:
        logger.info("could not read the output of replica %s: %s", replica.pk, error)
        return LogCapture([])
    except Exception:  # an unreachable node or a bug must not stop provisioning or health checks
        logger.warning("could not read the output of replica %s", replica.pk, exc_info=True)
        return LogCapture([])
    finally:
        with contextlib.suppress(redis.RedisError):
            client.delete(lock)


def _kept(client: redis.Redis, replica: Replica, text: str, *, final: bool) -> LogCapture:
    """Store the lines of `text` (an output tail) that were not seen before; return them (bounded)."""
    raw = text.split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    elif raw and not final:
        raw.pop()  # a partial line
    lines = log_lines_redact([line.rstrip("\r")[:LOG_LINE_CHARS] for line in raw], secrets=replica_secrets(replica))
    prints = [_fingerprint(line) for line in lines]
    seen_key = _SEEN_KEY.format(replica_id=replica.pk)
    stored = client.get(seen_key)
    seen = json.loads(stored) if stored else []
    fresh = lines[_first_unseen(seen, prints) :]
    pipe = client.pipeline()
    pipe.set(seen_key, json.dumps(prints), ex=LOG_TTL_S)
    if fresh:
        buffer = _BUFFER_KEY.format(replica_id=replica.pk)
        pipe.rpush(buffer, *fresh)
        pipe.ltrim(buffer, -LOG_BUFFER_LINES, -1)
        pipe.expire(buffer, LOG_TTL_S)
    pipe.execute()
    kept = fresh[-LOG_PUBLISH_LINES:]
    return LogCapture(kept, skipped=len(fresh) - len(kept))


def replica_logs_publish(replica: Replica, *, final: bool = False) -> LogCapture:
    """Capture `replica`'s new output lines and announce them for its deployment's live page."""
    capture = replica_logs_capture(replica, final=final)
    _output_announce(replica, capture)
    return capture


def replicas_logs_publish(watched: list[tuple[Replica, bool]]) -> None:
    """`replica_logs_publish` for many (replica, final) pairs: read in parallel threads (each read may be an SSH or
    API call), announced from this thread. The replicas come with their deployment, pool and provider loaded."""
    if not watched:
        return
    with ThreadPoolExecutor(max_workers=min(8, len(watched))) as pool:
        captures = list(pool.map(lambda item: replica_logs_capture(item[0], final=item[1]), watched))
    for (replica, _final), capture in zip(watched, captures, strict=True):
        _output_announce(replica, capture)


def _output_announce(replica: Replica, capture: LogCapture) -> None:
    if capture.lines:
        event_publish(
            ReplicaOutputCaptured(
                deployment_id=replica.deployment_id,
                replica_id=replica.pk,
                lines=tuple(capture.lines),
                skipped=capture.skipped,
            )
        )


def replica_logs_recent(*, replica_ids: list[int], tail: int = LOG_BUFFER_LINES) -> dict[int, list[str]]:
    """The last `tail` captured lines of each replica (one Redis round trip); replicas without any are left out."""
    if not replica_ids or tail <= 0:
        return {}
    pipe = sync_redis().pipeline()
    for replica_id in replica_ids:
        pipe.lrange(_BUFFER_KEY.format(replica_id=replica_id), -tail, -1)
    found = {}
    for replica_id, raw in zip(replica_ids, pipe.execute(), strict=True):
        if raw:
            found[replica_id] = [line.decode("utf-8", errors="replace") for line in raw]
    return found
