"""Usage events: one per authenticated request, appended to a Redis stream before the response ends.

The worker (`apps.gateway.tasks.usage_flush`) turns them into UsageRecord rows and hourly rollups. The event is
one compact JSON field, so that the hot path pays for one small XADD and nothing else.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

logger = logging.getLogger(__name__)

EVENT_FIELD = "e"


@dataclass(slots=True)
class UsageEvent:
    """What one request used and how it went. Filled in as the request goes through the pipeline."""

    request_id: str  # ours, unique (see `Exchange`)
    started_at: float  # POSIX time
    endpoint: str
    client_request_id: str = ""  # the caller's own id, when it sent one
    key_id: int | None = None
    organization_id: int | None = None
    team_id: int | None = None
    model: str = ""
    deployment_id: int | None = None
    replica_id: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    status: int = 200
    outcome: str = "ok"  # UsageRecord.Outcome values
    error_code: str = ""
    estimated: bool = False
    streamed: bool = False
    # Which guardrails fired and what was done: [{"category", "action", "count"}, ...] (UsageRecord.guardrails).
    guardrails: list[dict[str, Any]] = field(default_factory=list)

    def encoded(self) -> str:
        return json.dumps(
            {
                "rid": self.request_id,
                "crid": self.client_request_id,
                "t": self.started_at,
                "ep": self.endpoint,
                "k": self.key_id,
                "o": self.organization_id,
                "tm": self.team_id,
                "m": self.model,
                "d": self.deployment_id,
                "r": self.replica_id,
                "pt": self.prompt_tokens,
                "ct": self.completion_tokens,
                "c": self.cost_micros,
                "ttft": self.ttft_ms,
                "lat": self.latency_ms,
                "st": self.status,
                "out": self.outcome,
                "err": self.error_code,
                "est": self.estimated,
                "s": self.streamed,
                "g": self.guardrails,
            },
            separators=(",", ":"),
        )


def usage_event_decode(raw: bytes | str) -> dict[str, Any]:
    """The fields of an encoded event, named as UsageRecord's (for the worker)."""
    data = json.loads(raw)
    return {
        "request_id": data["rid"],
        "client_request_id": data.get("crid") or "",
        "started_at": data["t"],
        "endpoint": data["ep"],
        "api_key_id": data["k"],
        "organization_id": data["o"],
        "team_id": data["tm"],
        "model": data["m"],
        "deployment_id": data["d"],
        "replica_id": data["r"],
        "prompt_tokens": data["pt"],
        "completion_tokens": data["ct"],
        "cost_micros": data["c"],
        "ttft_ms": data["ttft"],
        "latency_ms": data["lat"],
        "status_code": data["st"],
        "outcome": data["out"],
        "error_code": data["err"],
        "estimated": data["est"],
        "streamed": data["s"],
        "guardrails": data.get("g") or [],
    }


async def usage_append(client: aioredis.Redis, event: UsageEvent) -> None:
    """Append the event to the usage stream. A Redis failure is logged and the response still completes."""
    try:
        await client.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: event.encoded()})
    except redis.RedisError:
        logger.error("usage event %s lost: Redis unavailable", event.request_id, exc_info=True)
