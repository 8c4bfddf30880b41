"""What `/metrics` says about the platform beyond the gateway's counters, scraped from the real web process: every
`/v1` request's end-to-end latency by model, route and status class; the fleet (replicas by state, deployment
states, GPUs in use, each replica's load as its engine reported it); budgets; the Celery queues' lengths; and
whether PostgreSQL and Redis answer. Each is moved by the real thing it measures."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from apps.gateway.metrics import UNKNOWN_MODEL
from tests.gateway.conftest import METRICS_TOKEN, http
from tests.gateway.test_metrics import CHAT, scrape, scrape_text, value
from tests.gateway.test_redis_stall import RedisServer
from tests.kit.processes import web_start

MONITORING = Path(__file__).resolve().parents[2] / "docker" / "monitoring"
DASHBOARDS = MONITORING.parent / "kubernetes" / "overlays" / "monitoring" / "dashboards"

DURATION = "inferia_gateway_request_duration_seconds_count"


def test_every_v1_request_is_timed_by_model_route_and_status_class(tenant, gateway, redis_cache):
    before = scrape(gateway.url)
    assert http("POST", f"{gateway.url}/v1/chat/completions", body=CHAT, secret=tenant.secret)[0] == 200
    assert (
        http("POST", f"{gateway.url}/v1/chat/completions", body={**CHAT, "stream": False}, secret=tenant.secret)[0]
        == 200
    )
    body = {**CHAT, "model": "made-up-by-a-client"}
    assert http("POST", f"{gateway.url}/v1/chat/completions", body=body, secret=tenant.secret)[0] == 404
    assert http("GET", f"{gateway.url}/v1/models", secret="wrong")[0] == 401
    assert http("GET", f"{gateway.url}/v1/no-such-route/made-up", secret=tenant.secret)[0] == 404
    after = scrape(gateway.url)

    def grew(**labels: str) -> float:
        return value(after, DURATION, **labels) - value(before, DURATION, **labels)

    assert grew(model="gw-chat", route="chat.completions", status_class="2xx") == 2
    assert grew(model=UNKNOWN_MODEL, route="chat.completions", status_class="4xx") == 1
    assert grew(model="", route="models", status_class="4xx") == 1
    assert grew(model="", route="other", status_class="4xx") == 1
    names = {labels for name, labels in after if name == DURATION}
    assert not any("made-up" in str(labels) for labels in names)  # client-sent names and paths never become labels
    provider = tenant.deployment.pool.provider.name
    answered = {"model": "gw-chat", "deployment": "gw-chat", "provider": provider, "status": "200"}
    assert (
        value(after, "inferia_gateway_deployment_requests_total", **answered)
        - value(before, "inferia_gateway_deployment_requests_total", **answered)
        == 2
    )
    seconds = value(after, "inferia_gateway_request_duration_seconds_sum", model="gw-chat", route="chat.completions",
                    status_class="2xx")  # fmt: skip
    assert seconds > 0


def test_the_fleet_is_reported_by_deployment_pool_provider_and_state(tenant, gateway, redis_cache):
    from apps.compute.models import Replica
    from apps.compute.routing import replica_load_store
    from tests.factories import ComputePoolFactory, ReplicaFactory

    ReplicaFactory(deployment=tenant.deployment, endpoint="http://127.0.0.1:9", state=Replica.State.UNHEALTHY)
    # A replica placed on another pool (a placement pool) counts there, with that pool's provider.
    spare = ComputePoolFactory(organization=tenant.organization, gpus_per_node=2, max_nodes=4)
    ReplicaFactory(
        deployment=tenant.deployment, pool=spare, endpoint="http://127.0.0.1:9", state=Replica.State.STARTING
    )
    replica_load_store(replica_id=tenant.replica.pk, running=3, waiting=2, kv_cache=0.5)
    samples = scrape(gateway.url)

    deployment = tenant.deployment
    pool, provider = deployment.pool.name, deployment.pool.provider.name
    where = {"deployment": "gw-chat", "organization": "acme", "pool": pool, "provider": provider}
    assert value(samples, "inferia_replicas", **where, state="ready") == 1
    assert value(samples, "inferia_replicas", **where, state="unhealthy") == 1
    assert value(samples, "inferia_deployment_state", deployment="gw-chat", organization="acme", state="ready") == 1
    assert value(samples, "inferia_deployment_replicas_desired", deployment="gw-chat", organization="acme") >= 1
    replica = {"replica": str(tenant.replica.pk), "deployment": "gw-chat", "organization": "acme"}
    assert value(samples, "inferia_replica_requests_running", **replica) == 3
    assert value(samples, "inferia_replica_requests_waiting", **replica) == 2
    assert value(samples, "inferia_replica_kv_cache_usage_ratio", **replica) == 0.5
    # Both replicas hold a node of the pool, one GPU each (no tensor parallelism asked for).
    assert value(samples, "inferia_pool_gpus_in_use", pool=pool, provider=provider) == 2
    placed = {"pool": spare.name, "provider": spare.provider.name}
    assert (
        value(samples, "inferia_replicas", deployment="gw-chat", organization="acme", **placed, state="starting") == 1
    )
    assert value(samples, "inferia_pool_gpus_in_use", **placed) == 1
    assert value(samples, "inferia_pool_gpus", **placed) == 8

    Replica.objects.filter(pk=tenant.replica.pk).update(state=Replica.State.FAILED)
    samples = scrape(gateway.url)
    assert value(samples, "inferia_replicas", **where, state="ready") == 0
    assert value(samples, "inferia_replicas", **where, state="failed") == 1
    assert value(samples, "inferia_pool_gpus_in_use", pool=pool, provider=provider) == 1


def test_a_budget_is_reported_as_the_share_spent(tenant, gateway, redis_cache):
    from apps.policies.services import policy_create

    policy = policy_create(actor=None, organization=tenant.organization, budget_per_day_micros=1_000_000)
    labels = {"organization": "acme", "policy": str(policy.pk), "period": "day"}
    assert ("inferia_budget_used_ratio", tuple(sorted(labels.items()))) in scrape(gateway.url)
    assert value(scrape(gateway.url), "inferia_budget_used_ratio", **labels) == 0
    assert http("POST", f"{gateway.url}/v1/chat/completions", body=CHAT, secret=tenant.secret)[0] == 200
    samples = scrape(gateway.url)
    assert 0 < value(samples, "inferia_budget_used_ratio", **labels) < 1
    assert value(samples, "inferia_gateway_cost_total", model="gw-chat", organization="acme") > 0


def test_a_queued_task_shows_in_its_queue_length(tenant, gateway):
    from celery_app.app import app

    before = value(scrape(gateway.url), "inferia_celery_queue_length", queue="knowledge")
    try:
        app.send_task("apps.knowledge.tasks.store_files_resume", queue="knowledge")
        app.send_task("apps.knowledge.tasks.store_files_resume", queue="knowledge")
        assert value(scrape(gateway.url), "inferia_celery_queue_length", queue="knowledge") == before + 2
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge("knowledge")
    samples = scrape(gateway.url)
    assert value(samples, "inferia_celery_queue_length", queue="knowledge") == 0
    assert ("inferia_celery_queue_length", (("queue", "usage"),)) in samples


def test_the_scrape_says_postgresql_and_redis_answer(tenant, gateway):
    samples = scrape(gateway.url)
    assert value(samples, "inferia_dependency_up", dependency="postgresql") == 1
    assert value(samples, "inferia_dependency_up", dependency="redis") == 1


def test_every_metric_a_dashboard_or_alert_names_is_one_the_scrape_exports(tenant, gateway, redis_cache):
    assert http("POST", f"{gateway.url}/v1/chat/completions", body=CHAT, secret=tenant.secret)[0] == 200
    exported = {family.name for family in text_string_to_metric_families(scrape_text(gateway.url))}
    files = [*MONITORING.glob("rules/*.yml"), *DASHBOARDS.glob("*.json")]
    named = {name for path in files for name in re.findall(r"\binferia_[a-z_]+", path.read_text())}
    assert len(named) > 20
    for name in sorted(named):
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert base in exported, f"{name} is used by a dashboard or rule but /metrics does not export it"


def test_with_redis_down_the_scrape_still_answers_and_says_so(transactional_db, test_database_url):
    own_redis = RedisServer()
    env = {
        "INFERIA_CACHE_REDIS_URL": own_redis.url(11),
        "CELERY_BROKER_URL": own_redis.url(10),
        "INFERIA_METRICS_TOKEN": METRICS_TOKEN,
    }
    web = web_start(test_database_url, extra_env=env)
    try:
        assert value(scrape(web.url), "inferia_dependency_up", dependency="redis") == 1
        own_redis.kill()
        samples = scrape(web.url)
        assert value(samples, "inferia_dependency_up", dependency="redis") == 0
        assert value(samples, "inferia_dependency_up", dependency="postgresql") == 1
        assert not [
            name for name, _ in samples if name in ("inferia_celery_queue_length", "inferia_usage_dead_letters")
        ]
        own_redis.restart()
        assert value(scrape(web.url), "inferia_dependency_up", dependency="redis") == 1
    finally:
        web.stop()
        own_redis.stop()
