"""Usage rollups at every grain: the usage worker keeps the per-model hourly and per-key daily rollups in step with
the hourly ones, a batch stored twice counts once, a rebuild gives the same rows, and the dashboard's reads over them
are exact at the edges of days and never cross organisations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db.models import Sum

from apps.usage import selectors as usage_selectors
from apps.usage.models import UsageKeyRollup, UsageModelRollup, UsageRollup
from apps.usage.rollups import usage_rollups_rebuild
from apps.usage.services import usage_records_store

NOW = datetime(2026, 11, 20, 13, 30, tzinfo=UTC)
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros")


def _event(org: Any, at: datetime, *, key: int | None, model: str = "m-1", team: Any = None, **fields: Any):
    return {
        "request_id": uuid.uuid4().hex, "started_at": at.timestamp(), "endpoint": "chat.completions",
        "api_key_id": key, "organization_id": org.pk, "team_id": team.pk if team else None, "model": model,
        "deployment_id": None, "replica_id": None, "prompt_tokens": 10, "completion_tokens": 5, "cost_micros": 100,
        "ttft_ms": 20.0, "latency_ms": 50.0, "status_code": 200, "outcome": "ok", "error_code": "",
        "estimated": False, "streamed": True, "guardrails": [], **fields,
    }  # fmt: skip


def _grains() -> dict[str, list[tuple[Any, ...]]]:
    return {
        "model": sorted(
            UsageModelRollup.objects.values_list(
                "hour", "organization_id", "team_id", "model", *SUMS, "latency_ms_total"
            )
        ),
        "key": sorted(
            UsageKeyRollup.objects.values_list("day", "organization_id", "team_id", "api_key_id", *SUMS),
            key=lambda row: tuple((v is None, v) for v in row),
        ),
    }


@pytest.fixture
def week(org, other_org):
    """Usage of the 7 days before NOW (and a little outside them), in both organisations."""
    since, until, _ = usage_selectors.range_window("7d", now=NOW)  # 13 Nov 14:00 to 20 Nov 14:00
    at = [
        (since - timedelta(minutes=30), 7, "m-1"),  # before the range
        (since + timedelta(minutes=5), 1, "m-1"),  # first hour, in a partial day
        (since + timedelta(hours=9, minutes=59), 1, "m-2"),  # 13 Nov 23:59
        (since + timedelta(hours=10), 2, "m-2"),  # 14 Nov 00:00, first whole day
        (since + timedelta(days=3), 2, "m-1"),
        (since + timedelta(days=3), 3, "m-3"),
        (until - timedelta(hours=13, minutes=30), 3, "m-1"),  # 20 Nov 00:30, last partial day
        (until - timedelta(minutes=1), 1, "m-2"),  # last minute of the range
        (until, 7, "m-1"),  # after the range
    ]
    events = [_event(org, moment, key=key, model=model) for moment, key, model in at]
    events += [_event(org, since + timedelta(days=2), key=3, model="m-3", outcome="error") for _ in range(2)]
    events += [_event(other_org, since + timedelta(days=2), key=99, model="globex-model") for _ in range(9)]
    assert usage_records_store(events) == len(events)
    return since, until


def test_the_worker_keeps_every_grain_and_a_batch_stored_twice_counts_once(org):
    events = [
        _event(org, NOW, key=1, model="m-1"),
        _event(org, NOW + timedelta(minutes=10), key=1, model="m-2", outcome="error"),
        _event(org, NOW + timedelta(hours=11), key=2, model="m-1"),  # the next day (UTC)
        _event(org, NOW + timedelta(hours=11, minutes=1), key=None, model="m-1"),
    ]
    assert usage_records_store(events) == 4
    assert usage_records_store(events) == 0  # re-read after a crash: nothing counted again

    hourly = UsageRollup.objects.aggregate(**{s: Sum(s) for s in SUMS})
    assert UsageModelRollup.objects.aggregate(**{s: Sum(s) for s in SUMS}) == hourly
    assert UsageKeyRollup.objects.aggregate(**{s: Sum(s) for s in SUMS}) == hourly
    assert hourly == {"requests": 4, "errors": 1, "prompt_tokens": 40, "completion_tokens": 20, "cost_micros": 400}
    days = dict(UsageKeyRollup.objects.filter(api_key_id=1).values_list("day", "requests"))
    assert days == {datetime(2026, 11, 20, tzinfo=UTC): 2}
    assert set(UsageKeyRollup.objects.values_list("day", "api_key_id", "requests")) == {
        (datetime(2026, 11, 20, tzinfo=UTC), 1, 2),
        (datetime(2026, 11, 21, tzinfo=UTC), 2, 1),
        (datetime(2026, 11, 21, tzinfo=UTC), None, 1),
    }
    models = set(UsageModelRollup.objects.values_list("hour", "model", "requests", "errors"))
    assert models == {
        (datetime(2026, 11, 20, 13, tzinfo=UTC), "m-1", 1, 0),
        (datetime(2026, 11, 20, 13, tzinfo=UTC), "m-2", 1, 1),
        (datetime(2026, 11, 21, 0, tzinfo=UTC), "m-1", 2, 0),
    }


def test_a_rebuild_gives_the_rows_the_worker_wrote_and_again_the_same(week):
    since, until = week
    kept = _grains()
    assert kept["model"]
    assert kept["key"]
    usage_rollups_rebuild(since=since - timedelta(days=1), until=until + timedelta(days=1))
    assert _grains() == kept
    usage_rollups_rebuild(since=since - timedelta(days=1), until=until + timedelta(days=1))
    assert _grains() == kept


def test_top_keys_over_days_are_exact_at_the_edges_of_the_range(week, org):
    since, until = week
    rollups = UsageRollup.objects.filter(organization_id=org.pk)
    keys = usage_selectors.usage_top_keys(
        rollups=rollups, by_key=UsageKeyRollup.objects.filter(organization_id=org.pk), since=since, until=until
    )
    assert [(row["api_key_id"], row["requests"], row["errors"]) for row in keys] == [(3, 4, 2), (1, 3, 0), (2, 2, 0)]
    expected = (
        rollups.filter(hour__gte=since, hour__lt=until, api_key__isnull=False)
        .values("api_key_id")
        .annotate(requests=Sum("requests"))
    )
    assert {row["api_key_id"]: row["requests"] for row in keys} == {r["api_key_id"]: r["requests"] for r in expected}


def test_the_overview_is_one_pass_over_the_range_and_only_the_organisations(week, org):
    since, until = week
    overview = usage_selectors.usage_overview(
        by_model=UsageModelRollup.objects.filter(organization_id=org.pk), since=since, until=until, bucket="hour"
    )
    assert overview.series.totals["requests"] == 9  # 11 stored, 2 outside the range
    assert overview.series.totals["errors"] == 2
    assert len(overview.series.buckets) == 7 * 24
    assert overview.series.requests[0] == 1
    assert overview.series.requests[-1] == 1
    assert [(row["model"], row["requests"]) for row in overview.top_models] == [("m-1", 3), ("m-2", 3), ("m-3", 3)]
    assert "globex-model" not in {row["model"] for row in overview.top_models}


def test_the_rebuild_command_repairs_the_derived_grains(week):
    from django.core.management import call_command

    since, until = week
    kept = _grains()
    UsageModelRollup.objects.all().delete()
    UsageKeyRollup.objects.filter(api_key_id=1).delete()
    call_command(
        "usage_rollups_rebuild", "--since", f"{since - timedelta(days=1):%Y-%m-%d}", "--until", f"{until:%Y-%m-%d}"
    )
    assert _grains() == kept
