"""A stalled or dead Redis: /v1 answers its 503 (OpenAI's shape) within about a second, for a key in the web
process's cache and for one it has never seen, and serves again as soon as Redis is back, without a restart.

The web process uses a redis-server of this test's own (started on a free port), so that freezing it with SIGSTOP
or killing it touches nothing else."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.factories import OrganizationFactory
from tests.gateway.conftest import http, make_deployment, make_key, wait_until_served
from tests.kit.processes import TestProcess, web_start
from tests.kit.redis_server import RedisServer
from tests.kit.waiting import eventually

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
# The web process's setting (the default) and what a 503 may take: one timeout, whatever the number of Redis calls
# the request makes, plus a PostgreSQL lookup for the cold key.
REDIS_TIMEOUT_S = 0.5
STALLED_503_WITHIN_S = 1.0
# After an outage that ended, requests may still fail fast for up to one timeout before Redis is tried again.
RECOVERED_WITHIN_S = 1.0


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def web(own_redis: RedisServer, test_database_url: str) -> Iterator[TestProcess]:
    env = {"INFERIA_CACHE_REDIS_URL": own_redis.url(11), "INFERIA_REDIS_TIMEOUT_SECONDS": str(REDIS_TIMEOUT_S)}
    process = web_start(test_database_url, extra_env=env)
    yield process
    process.stop()


def chat(web: TestProcess, secret: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    status, _, body = http("POST", f"{web.url}/v1/chat/completions", body=CHAT, secret=secret)
    return status, json.loads(body), time.monotonic() - started


def assert_policy_unavailable(answer: tuple[int, dict, float]) -> float:
    status, document, elapsed = answer
    assert status == 503, document
    assert set(document["error"]) == {"message", "type", "param", "code"}
    assert document["error"]["code"] == "policy_unavailable"
    assert elapsed < STALLED_503_WITHIN_S, f"the 503 took {elapsed:.2f}s"
    return elapsed


def limited_keys(sim_url: str, count: int) -> list[str]:
    """Keys of an organisation with a rate limit, so that every request needs Redis to be admitted."""
    from apps.policies.services import policy_create

    organization = OrganizationFactory(name="Limited", slug="limited")
    policy_create(actor=None, organization=organization, requests_per_minute=10_000)
    make_deployment(organization, "gw-chat", [sim_url])
    return [make_key(organization)[1] for _ in range(count)]


@pytest.mark.parametrize("outage", ["frozen", "killed"])
def test_a_redis_outage_gets_a_prompt_503_and_service_resumes_when_it_returns(
    transactional_db, sim, own_redis, web, outage
):
    warm, cold, cold_after = limited_keys(sim.url, 3)
    wait_until_served(web, warm, "gw-chat")
    assert chat(web, warm)[0] == 200  # this key is now in the web process's memory; `cold` is not

    own_redis.freeze() if outage == "frozen" else own_redis.kill()
    try:
        latencies = [assert_policy_unavailable(chat(web, warm)) for _ in range(3)]
        latencies.append(assert_policy_unavailable(chat(web, cold)))
    finally:
        own_redis.thaw() if outage == "frozen" else own_redis.restart()
    print(f"{outage}: 503 after " + ", ".join(f"{latency:.3f}s" for latency in latencies))

    # Back at once, from the same web process.
    returned = time.monotonic()
    eventually(lambda: chat(web, warm)[0] == 200, timeout=RECOVERED_WITHIN_S, interval=0, what="served again")
    print(f"{outage}: served again {time.monotonic() - returned:.3f}s after Redis returned")
    for secret in (cold, cold_after):
        status, document, elapsed = chat(web, secret)
        assert status == 200, document
        assert elapsed < STALLED_503_WITHIN_S
