"""Rebuilding day/month quota and budget counters from PostgreSQL after Redis lost them (flushed, restarted
without persistence, failed over). Usage reaches PostgreSQL a little after Redis counts it, so a counter is only
ever raised to what the usage records say, never lowered: run it as often as you like.

Also giving back the reservations of requests whose web process died before settling them, once they are due."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from django.db.models import F, Sum

from apps.policies.limits import RAISE_USED_LUA, limits_holds_release, quota_key
from apps.policies.models import Policy
from apps.usage.models import UsageRecord

# How long a rebuilt counter lives when Redis has no expiry for it yet: past the end of any month.
_TTL_MS = 33 * 86_400_000


def _scopes_with_quotas() -> dict[str, tuple[str, int]]:
    """scope -> (level field on UsageRecord, id) for every enabled policy that has a day or month limit."""
    quota = (
        Policy.objects.filter(enabled=True)
        .exclude(
            tokens_per_day__isnull=True,
            tokens_per_month__isnull=True,
            budget_per_day_micros__isnull=True,
            budget_per_month_micros__isnull=True,
        )
        .values_list("organization_id", "team_id", "api_key_id")
    )
    scopes: dict[str, tuple[str, int]] = {}
    for organization_id, team_id, key_id in quota:
        org = f"{{o{organization_id}}}"
        if key_id is not None:
            scopes[f"{org}:k{key_id}"] = ("api_key_id", key_id)
        elif team_id is not None:
            scopes[f"{org}:t{team_id}"] = ("team_id", team_id)
        else:
            scopes[f"{org}:o"] = ("organization_id", organization_id)
    return scopes


def policy_counters_reconcile(*, client: redis.Redis, now: datetime | None = None) -> int:
    """Raise the current day's and month's token and money counters of every scope with a quota or budget to
    the totals of its usage records. Returns how many counters were written."""
    moment = now or datetime.now(UTC)
    month_start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    day_start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    scopes = _scopes_with_quotas()
    if not scopes:
        return 0
    keys: list[str] = []
    args: list[str | int] = []
    by_field: dict[str, dict[int, str]] = {}
    for scope, (field, object_id) in scopes.items():
        by_field.setdefault(field, {})[object_id] = scope
    for field, ids in by_field.items():
        for period, start, period_id in (
            ("m", month_start, moment.strftime("%Y%m")),
            ("d", day_start, moment.strftime("%Y%m%d")),
        ):
            totals = (
                UsageRecord.objects.filter(**{f"{field}__in": list(ids)}, started_at__gte=start)
                .values(field)
                .annotate(tokens=Sum(F("prompt_tokens") + F("completion_tokens")), money=Sum("cost_micros"))
            )
            for row in totals:
                key = quota_key(ids[row[field]], period, period_id)
                keys += [key, key]
                args += ["tok_used", int(row["tokens"] or 0), _TTL_MS, "usd_used", int(row["money"] or 0), _TTL_MS]
    if keys:
        client.eval(RAISE_USED_LUA, len(keys), *keys, *args)
    return len(keys)


def policy_holds_release(*, client: redis.Redis, now_ms: int | None = None) -> int:
    """Give back the due, never settled reservations of every organisation with a quota or budget (see
    `limits_holds_release`). Returns how many were given back."""
    organisations = {scope.split(":", 1)[0] for scope in _scopes_with_quotas()}
    return sum(limits_holds_release(client, scope=tag, now_ms=now_ms) for tag in sorted(organisations))
