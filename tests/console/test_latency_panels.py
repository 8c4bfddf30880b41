"""Latency, throughput, failures and engine load on the dashboard and on a deployment's page: read from the rollups
and the load samples, each figure with its unit, "No data" for an empty range, 4xx and 5xx apart, a text alternative
for every chart, links from the top tables, and nothing from another organisation."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apps.compute.models import DeploymentLoadSample
from apps.usage.services import usage_records_store
from tests.factories import ModelDeploymentFactory


@pytest.fixture(autouse=True)
def _clean_counters(redis_cache):
    """The dashboard reads its live load and budgets from Redis."""


def _event(org: Any, *, hours_ago: int = 0, **fields: Any) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(hours=hours_ago)
    return {
        "request_id": uuid.uuid4().hex, "started_at": at.timestamp(), "endpoint": "chat.completions",
        "api_key_id": None, "organization_id": org.pk, "team_id": None, "model": "chat-small", "deployment_id": None,
        "replica_id": None, "prompt_tokens": 10, "completion_tokens": 60, "cost_micros": 100, "ttft_ms": 80.0,
        "latency_ms": 900.0, "status_code": 200, "outcome": "ok", "error_code": "", "estimated": False,
        "streamed": True, "guardrails": [], **fields,
    }  # fmt: skip


def _island(html: str, name: str) -> dict[str, Any]:
    match = re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', html, re.S)
    assert match, name
    return json.loads(match.group(1))


def _tile(html: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}">([^<]*)<', html)
    assert match, testid
    return match.group(1)


def test_an_empty_range_says_no_data_not_zero(client, owner, org):
    client.force_login(owner)
    html = client.get("/console/dashboard/?range=24h").content.decode()
    for testid in ("tile-ttft-p50", "tile-ttft-p95", "tile-latency-p95", "tile-tokens-per-second",
                   "tile-client-errors", "tile-server-errors", "stat-error-rate", "stat-latency-avg"):  # fmt: skip
        assert _tile(html, testid) == "No data", testid
    for chart in ("ttft", "latency", "throughput", "failures", "load", "kv_cache"):
        assert f'data-testid="no-data-{chart}"' in html
        assert f'data-metric-chart="{chart}"' not in html
    assert "0.0%" not in html


def test_the_dashboard_shows_percentiles_throughput_and_failures_apart(client, owner, org, other_org):
    served = [_event(org, ttft_ms=float(t), latency_ms=float(t) * 10) for t in range(60, 160, 10)]
    failures = [
        _event(org, status_code=429, outcome="denied", ttft_ms=None),
        _event(org, status_code=429, outcome="denied", ttft_ms=None),
        _event(org, status_code=502, outcome="error", ttft_ms=None),
    ]
    usage_records_store(served + failures)
    usage_records_store([_event(other_org, ttft_ms=20_000.0, status_code=500, outcome="error") for _ in range(40)])
    client.force_login(owner)

    html = client.get("/console/dashboard/?range=24h").content.decode()

    assert re.fullmatch(r"\d+ ms", _tile(html, "tile-ttft-p50"))
    assert 100 <= int(_tile(html, "tile-ttft-p95").split()[0]) <= 200  # the other org's 20 s TTFTs stay out
    assert _tile(html, "tile-latency-p95").endswith(" ms")
    assert _tile(html, "tile-tokens-per-second").endswith(" tokens/s")
    assert _tile(html, "tile-client-errors") == "2 requests"
    assert _tile(html, "tile-server-errors") == "1 request"
    data = _island(html, "dashboard-metrics")
    assert data["ttft"]["unit"] == "ms"
    assert data["throughput"]["unit"] == "tokens/s"
    assert [s["label"] for s in data["failures"]["series"]] == ["4xx client", "5xx server"]
    assert sum(data["failures"]["series"][0]["values"]) == 2
    assert sum(data["failures"]["series"][1]["values"]) == 1
    p95 = [v for v in data["ttft"]["series"][1]["values"] if v is not None]
    assert len(p95) == 1
    assert 100 <= p95[0] <= 200
    # Every drawn chart has a text alternative that gives its unit and the range's figures.
    label = re.search(r'data-metric-chart="ttft"[^>]*aria-label="([^"]+)"', html).group(1)
    assert "milliseconds" in label
    assert "p95" in label
    assert 'role="img"' in html[html.index('data-metric-chart="latency"') - 200 :][:600]


def test_the_engines_load_is_charted_from_the_samples_of_the_organisations_deployments(client, owner, org, other_org):
    ours = ModelDeploymentFactory(organization=org)
    theirs = ModelDeploymentFactory(organization=other_org)
    now = datetime.now(UTC)
    at = now - timedelta(minutes=10)
    DeploymentLoadSample.objects.create(deployment=ours, step=300, at=at, running=3, waiting=2, kv_cache=0.4)
    DeploymentLoadSample.objects.create(deployment=theirs, step=300, at=at, running=90, kv_cache=1)
    client.force_login(owner)

    data = _island(client.get("/console/dashboard/?range=24h").content.decode(), "dashboard-metrics")

    running = [v for v in data["load"]["series"][0]["values"] if v is not None]
    kv = [v for v in data["kv_cache"]["series"][0]["values"] if v is not None]
    assert running == [3]
    assert kv == [40]
    assert data["kv_cache"]["unit"] == "%"
    assert data["load"]["unit"] == "requests"


def test_the_top_tables_link_to_the_key_team_and_model(client, owner, org):
    from apps.keys.services import api_key_create
    from apps.orgs.models import Team

    team = Team.objects.create(organization=org, name="Core", slug="core")
    key = api_key_create(organization=org, name="busy backend", scopes=["inference"], team=team, actor=owner).key
    usage_records_store([_event(org, api_key_id=key.pk, team_id=team.pk)])
    client.force_login(owner)

    html = client.get("/console/dashboard/").content.decode()

    assert f'href="/console/keys/{key.pk}/">busy backend</a>' in html
    assert f'href="/console/usage/?team={team.pk}&amp;org={org.slug}"' in html
    assert f'href="/console/usage/?model=chat-small&amp;org={org.slug}"' in html


def test_a_deployments_page_charts_its_own_requests_only(client, owner, org, other_org, outsider):
    deployment = ModelDeploymentFactory(organization=org)
    other = ModelDeploymentFactory(organization=org)
    usage_records_store(
        [_event(org, deployment_id=deployment.pk, ttft_ms=50.0) for _ in range(5)]
        + [_event(org, deployment_id=deployment.pk, status_code=503, outcome="error", ttft_ms=None)]
        + [_event(org, deployment_id=other.pk, ttft_ms=9_000.0) for _ in range(5)]
    )
    client.force_login(owner)

    html = client.get(f"/console/deployments/{deployment.pk}/?range=7d").content.decode()

    assert 25 <= int(_tile(html, "tile-ttft-p95").split()[0]) <= 50
    assert _tile(html, "tile-server-errors") == "1 request"
    data = _island(html, "deployment-metrics")
    assert len(data["ttft"]["x"]) == 7 * 24
    assert 'data-testid="no-data-load"' in html  # no engine load recorded for it yet

    client.force_login(outsider)
    assert client.get(f"/console/deployments/{deployment.pk}/").status_code == 404


def test_a_shared_platform_deployment_shows_each_organisation_its_own_requests(client, owner, org, other_org):
    platform = ModelDeploymentFactory(organization=None)
    platform.shared_with.add(org, other_org)
    usage_records_store(
        [_event(org, deployment_id=platform.pk, ttft_ms=40.0) for _ in range(3)]
        + [_event(other_org, deployment_id=platform.pk, ttft_ms=9_000.0, status_code=500, outcome="error")]
    )
    client.force_login(owner)

    response = client.get(f"/console/deployments/{platform.pk}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert _tile(html, "tile-server-errors") == "0 requests"
    assert int(_tile(html, "tile-ttft-p95").split()[0]) <= 50


def test_reading_usage_lets_a_role_see_every_rollup_the_charts_read():
    from apps.rbac.capabilities import CAPABILITIES_BY_SLUG
    from apps.usage.models import UsageDeploymentRollup, UsageModelDayRollup, UsageModelRollup

    granted = CAPABILITIES_BY_SLUG["read_usage"].permissions
    for model in (UsageModelRollup, UsageModelDayRollup, UsageDeploymentRollup):
        assert f"usage.view_{model._meta.model_name}" in granted
