"""Inferia as several processes against one PostgreSQL and one Redis, as it runs on Kubernetes: two web processes
with the load spread over both, two workers and two beats. What one process guarantees must hold across all of
them: a budget under 200 concurrent requests, a rate limit, a revocation within a second, and one usage record for
every request answered, refused or not."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.kit.processes import TestProcess, child_database_url, inferia_start, sim_start, web_start
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "multi-chat"
# 1,000 micro-units a token both ways: a request's worst case (prompt bound plus max_tokens) is tens of thousands.
PRICE_PER_MTOK = 1_000_000_000
BUDGET_MICROS = 1_000_000
CONCURRENT = 200
RPM = 30


class Fleet:
    """The processes of the test, and what it committed for them, all removed afterwards."""

    def __init__(self) -> None:
        self.env = {**os.environ, "DATABASE_URL": child_database_url(), "INFERIA_UPSTREAM_ALLOW_PRIVATE": "true"}
        self.processes: list[TestProcess] = []
        self.webs: list[TestProcess] = []

    def start(self) -> None:
        self.processes.append(sim := sim_start("--itl-ms", "20", models=(MODEL,)))
        self.sim = sim
        for _ in range(2):
            web = web_start(self.env["DATABASE_URL"], extra_env=self.env)
            self.webs.append(web)
            self.processes.append(web)
        for role in ("worker", "worker", "beat", "beat"):
            data = f"{self.env.get('INFERIA_DATA_DIR', '/tmp')}/multi-{uuid.uuid4().hex[:6]}"
            self.processes.append(inferia_start(["start", role], env={**self.env, "INFERIA_DATA_DIR": data}))

    def describe(self) -> str:
        """The web processes' and the engine's output, for a failure's message."""
        return "\n".join(process.describe() for process in [self.sim, *self.webs])

    def close(self) -> None:
        for process in reversed(self.processes):
            process.kill_everything()


@pytest.fixture
def fleet(transactional_db, redis_cache):  # no counters of an earlier run's keys (ids restart with the database)
    plane = Fleet()
    try:
        yield plane
    finally:
        plane.close()


def _chat(base: str, key: str, *, stream: bool) -> tuple[int, str]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 8}
    if stream:
        body["stream"] = True
    with requests.post(
        f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60, stream=stream
    ) as answer:
        _ = answer.content  # the stream, read to its end
        return answer.status_code, answer.headers["x-request-id"]


def test_budgets_limits_revocations_and_usage_hold_across_processes(fleet: Fleet):
    from apps.compute.models import ModelDeployment
    from apps.keys.services import api_key_create, api_key_revoke
    from apps.policies.services import policy_create
    from apps.usage.models import UsageRecord
    from tests.factories import OrganizationFactory, deployment_serving

    fleet.start()
    organization = OrganizationFactory(slug=f"multi-{uuid.uuid4().hex[:6]}")
    deployment_serving(
        organization,
        MODEL,
        [fleet.sim.url],
        price_input_per_mtok_micros=PRICE_PER_MTOK,
        price_output_per_mtok_micros=PRICE_PER_MTOK,
    )
    budgeted = api_key_create(organization=organization, name="budgeted", scopes=["inference"])
    policy_create(actor=None, organization=organization, api_key=budgeted.key, budget_per_day_micros=BUDGET_MICROS)
    limited = api_key_create(organization=organization, name="limited", scopes=["inference"])
    policy_create(actor=None, organization=organization, api_key=limited.key, requests_per_minute=RPM)
    probe = api_key_create(organization=organization, name="probe", scopes=["inference"])
    bases = [web.url for web in fleet.webs]
    assert ModelDeployment.objects.filter(organization=organization).count() == 1

    def served(base: str) -> bool:
        return _chat(base, probe.secret, stream=False)[0] == 200

    for base in bases:  # both web processes see the deployment (the catalog reaches them through Redis)
        eventually(lambda base=base: served(base), timeout=30, what=f"{base} serving {MODEL}")
    answers: list[tuple[int, str]] = []

    # A budget under 200 concurrent streams, half through each web process: never exceeded.
    with ThreadPoolExecutor(CONCURRENT) as pool:
        budget_answers = list(pool.map(lambda n: _chat(bases[n % 2], budgeted.secret, stream=True), range(CONCURRENT)))
    answers += budget_answers
    statuses = Counter(status for status, _ in budget_answers)
    assert set(statuses) <= {200, 429}, (statuses, fleet.describe())
    assert statuses[200] > 0, statuses  # some fit,
    assert statuses[429] > 0, statuses  # the rest were refused

    # A rate limit shared by both: 2x the limit sent quickly admits the limit (plus what refills meanwhile).
    started = time.monotonic()
    limit_answers = [_chat(bases[n % 2], limited.secret, stream=False) for n in range(2 * RPM)]
    refill = (time.monotonic() - started) * RPM / 60
    answers += limit_answers
    limit_statuses = Counter(status for status, _ in limit_answers)
    admitted = len(limit_answers) - limit_statuses[429]  # what the limit let through, however the engine answered
    assert RPM <= admitted <= RPM + refill + 1, (limit_statuses, fleet.describe())

    # Every request answered has its usage record, once; the budget's records add up to no more than the budget.
    ids = [request_id for _, request_id in answers]
    assert len(set(ids)) == len(ids)

    def recorded() -> int:
        return UsageRecord.objects.filter(request_id__in=ids).count()

    eventually(lambda: recorded() == len(ids), timeout=60, interval=0.5, what="every request's usage record")
    by_status = Counter(UsageRecord.objects.filter(request_id__in=ids).values_list("status_code", flat=True))
    assert by_status == Counter(status for status, _ in answers)
    spent = sum(UsageRecord.objects.filter(api_key=budgeted.key).values_list("cost_micros", flat=True))
    assert 0 < spent <= BUDGET_MICROS

    # A revocation reaches both web processes within a second.
    revoked_at = time.monotonic()
    api_key_revoke(key=limited.key, reason="test")
    deadlines: dict[str, float] = {}

    def refused(base: str) -> None:
        while time.monotonic() - revoked_at < 5:
            if _chat(base, limited.secret, stream=False)[0] == 401:
                deadlines[base] = time.monotonic() - revoked_at
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=refused, args=(base,)) for base in bases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(deadlines) == set(bases)
    assert max(deadlines.values()) < 1.0, deadlines
