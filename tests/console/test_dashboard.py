"""The overview dashboard: per-organisation usage from the rollups, the org switcher, budgets against the gateway's
counters, guardrails fired, and a query count that does not grow with the data."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from apps.policies.effective import policy_counter_scope
from apps.policies.limits import quota_key
from apps.policies.models import Policy
from apps.usage.models import GpuUsageSpan, UsageDeploymentRollup, UsageRecord, UsageRollup
from apps.usage.rollups import usage_rollups_rebuild
from tests.factories import ComputePoolFactory, ModelDeploymentFactory


@pytest.fixture(autouse=True)
def _clean_counters(redis_cache):
    """Budgets and live load are read from Redis."""


def _hour(hours_ago: int = 0) -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago)


def _rollups(org, n: int, model: str = "chat-small", **fields):
    """Hourly rollups, and the other grains derived from them as the usage worker keeps them."""
    for i in range(n):
        UsageRollup.objects.create(
            hour=_hour(i % 20), organization=org, model=f"{model}-{i % 7}", requests=10, errors=1,
            prompt_tokens=100, completion_tokens=50, cost_micros=2_000, latency_ms_total=1000.0, **fields,
        )  # fmt: skip
    usage_rollups_rebuild(since=_hour(40), until=_hour() + timedelta(hours=1))


def _series(html: str) -> dict:
    match = re.search(r'<script id="dashboard-series" type="application/json">(.*?)</script>', html, re.S)
    assert match
    return json.loads(match.group(1))


def test_it_shows_the_organisations_usage_and_not_anothers(client, owner, org, other_org):
    _rollups(org, 3)
    _rollups(other_org, 5, model="globex-secret")
    client.force_login(owner)
    page = client.get("/console/dashboard/?range=24h")
    html = page.content.decode()
    assert page.status_code == 200
    assert sum(_series(html)["requests"]) == 30
    assert "chat-small-0" in html
    assert "globex-secret" not in html
    assert 'data-testid="nav-deployments"' in html


def test_a_foreign_organisation_in_the_switcher_is_404(client, owner, other_org):
    client.force_login(owner)
    assert client.get(f"/console/dashboard/?org={other_org.slug}").status_code == 404


def test_the_superadmin_sees_the_platform(client, org, other_org, roles):
    from apps.orgs.models import User

    admin = User.objects.create_superuser("root@inferia.test", "correct horse battery")
    _rollups(org, 2)
    _rollups(other_org, 3)
    client.force_login(admin)
    html = client.get("/console/dashboard/?range=7d").content.decode()
    assert sum(_series(html)["requests"]) == 50
    assert '<option value="__platform__" selected>All organisations (platform)</option>' in html


def test_budgets_burn_against_the_gateways_counters(client, owner, org, redis_cache):
    policy = Policy.objects.create(organization=org, budget_per_day_micros=10_000_000)
    day = datetime.now(UTC).strftime("%Y%m%d")
    redis_cache.hset(quota_key(policy_counter_scope(policy), "d", day), mapping={"usd_used": 8_500_000, "usd_held": 0})
    client.force_login(owner)
    html = client.get("/console/dashboard/").content.decode()
    assert "$8.50 of $10.00" in html
    assert "burn-warn" in html


def test_guardrails_fired_are_counted_by_category_and_action(client, owner, org):
    for action in ("redact", "redact", "block"):
        UsageRecord.objects.create(
            request_id=uuid.uuid4().hex, started_at=datetime.now(UTC), organization=org, endpoint="chat.completions",
            model="m", status_code=200, outcome="ok", guardrails=[{"category": "email", "action": action, "count": 2}],
        )  # fmt: skip
    client.force_login(owner)
    html = client.get("/console/dashboard/").content.decode()
    table = html[html.index('data-testid="guardrails-fired"') :]
    assert re.search(r"email</th><td><span class=\"badge badge-redact\">redact</span></td><td class=\"num\">4<", table)


@pytest.mark.parametrize("rows", [1, 60])
def test_the_query_count_does_not_grow_with_the_data(client, owner, org, rows, django_assert_num_queries):
    from apps.orgs.models import Team

    team = Team.objects.create(organization=org, name="Core", slug="core")
    _rollups(org, rows, team=team)
    client.force_login(owner)
    client.get("/console/dashboard/?range=30d")  # warm the per-process caches (content types), as a server's are
    with django_assert_num_queries(DASHBOARD_QUERIES):
        assert client.get("/console/dashboard/?range=30d").status_code == 200


# Session, user, the two-factor gate, the organisation switcher, then: usage over time with the top models and teams
# (one grouped pass), latency percentiles and failures (one pass), the engines' load over time, top keys, live load,
# budgets, guardrails, GPU cost (the replicas' GPU time; the tokens of their deployments only when some served).
DASHBOARD_QUERIES = 13


def test_the_busiest_keys_and_teams_are_named_and_stay_in_the_organisation(client, owner, org, other_org, outsider):
    from apps.keys.services import api_key_create
    from apps.orgs.models import Team
    from apps.usage.services import usage_records_store

    team = Team.objects.create(organization=org, name="Core", slug="core")
    ours = api_key_create(organization=org, name="busy backend", scopes=["inference"], team=team, actor=owner).key
    theirs = api_key_create(organization=other_org, name="globex secret key", scopes=["inference"], actor=outsider).key

    def event(key, at):
        return {
            "request_id": uuid.uuid4().hex, "started_at": at.timestamp(), "endpoint": "chat.completions",
            "api_key_id": key.pk, "organization_id": key.organization_id, "team_id": key.team_id, "model": "m",
            "deployment_id": None, "replica_id": None, "prompt_tokens": 1, "completion_tokens": 1, "cost_micros": 1,
            "ttft_ms": 1.0, "latency_ms": 1.0, "status_code": 200, "outcome": "ok", "error_code": "",
            "estimated": False, "streamed": False, "guardrails": [],
        }  # fmt: skip

    usage_records_store([event(ours, _hour(h) - timedelta(days=h)) for h in range(10)])
    usage_records_store([event(theirs, _hour(1)) for _ in range(50)])
    client.force_login(owner)
    for range_name, requests in (("24h", 1), ("7d", 7), ("30d", 10)):
        html = client.get(f"/console/dashboard/?range={range_name}").content.decode()
        keys = html[html.index('data-testid="top-keys"') :]
        teams = html[html.index('data-testid="top-teams"') :]
        assert "busy backend" in keys
        assert f'<td class="num">{requests}' in keys
        assert "Core" in teams
        assert "globex secret key" not in html


def test_gpu_cost_per_million_tokens_is_shown_per_deployment(client, owner, org):
    deployment = ModelDeploymentFactory(
        organization=org, pool=ComputePoolFactory(organization=org, cost_per_gpu_hour_micros=4_000_000), name="chat"
    )
    now = datetime.now(UTC)
    GpuUsageSpan.objects.create(
        organization=org, deployment=deployment, replica_id=1, gpus=2, cost_per_gpu_hour_micros=4_000_000,
        started_at=now - timedelta(hours=3), ended_at=now - timedelta(hours=1),
    )  # fmt: skip
    UsageDeploymentRollup.objects.create(
        hour=(now - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0), organization=org,
        deployment=deployment, prompt_tokens=3_000_000, completion_tokens=1_000_000, cost_micros=2_000_000,
    )  # fmt: skip
    client.force_login(owner)

    html = client.get("/console/dashboard/?range=24h").content.decode()

    table = html[html.index('data-testid="gpu-costs"') :]
    # 2 hours x 2 GPUs x 4.00 = 16.00 for 4M tokens: 4.00 per million
    assert re.search(r"chat</th><td class=\"num\">4.0</td><td class=\"num\">\$16.00</td>", table)
    assert "$4.00</td></tr>" in table
    export = re.search(r'href="(/api/usage/gpu-costs/export/[^"]+)" data-testid="gpu-costs-export"', table)
    assert export is not None
    csv = client.get(export.group(1).replace("&amp;", "&")).content.decode()
    assert f"{org.pk},,{deployment.pk},chat,14400,16000000,4000000,2000000,4000000" in csv
