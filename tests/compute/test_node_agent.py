"""`inferia agent` on a node next to its engine: its pushed heartbeats keep a replica the health checker cannot poll
READY, with the engine's load; a wrong token is refused and ends the agent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.compute.health import HealthOutcome, replicas_health_check
from apps.compute.models import Replica
from apps.compute.node_tokens import node_token, node_token_hash
from inferia_cli.agent import AgentConfig, backoff_seconds, engine_report_build
from tests.factories import ModelDeploymentFactory, ReplicaFactory
from tests.kit.processes import INFERIA, TestProcess, child_database_url, sim_start, web_start

RState = Replica.State
UNPOLLABLE = "http://127.0.0.1:9"  # what the checker polls: nothing listens there, as behind NAT


@pytest.fixture(scope="module")
def engine() -> Iterator[TestProcess]:
    process = sim_start(models=("agent-model",))
    yield process
    process.stop()


@pytest.fixture
def web(transactional_db: Any) -> Iterator[TestProcess]:
    process = web_start(child_database_url())
    yield process
    process.stop()


@pytest.fixture
def unpollable_replica(org) -> tuple[Replica, str]:
    """A STARTING replica on a node the control plane cannot reach (judged by its engine alone), with its token."""
    replica = ReplicaFactory(
        deployment=ModelDeploymentFactory(organization=org, state="ready"),
        state=RState.STARTING,
        endpoint=UNPOLLABLE,
        provider_handle={"key": "behind-nat", "host": "a-node-behind-nat"},
    )
    token = node_token(replica)
    Replica.objects.filter(pk=replica.pk).update(node_token_hash=node_token_hash(token))
    return replica, token


def agent_start(
    *, server: str, engine: str, token: str, interval: str = "0.2", flags: tuple[str, ...] = ()
) -> TestProcess:
    """`inferia agent` with its token in the environment, as provisioning hands it over."""
    env = {**os.environ, "INFERIA_NODE_TOKEN": token}
    args = [INFERIA, "agent", "--server", server, "--engine", engine, "--interval", interval, "--timeout", "2", *flags]
    return TestProcess(args, env=env, name="inferia-agent")


def replica_state(replica: Replica) -> str:
    return Replica.objects.values_list("state", flat=True).get(pk=replica.pk)


def test_the_agents_pushes_keep_a_replica_ready_that_polling_cannot_reach(web, engine, unpollable_replica, settings):
    settings.INFERIA_HEALTH_FAILURES = 1  # one missed poll would take it out of routing
    replica, token = unpollable_replica
    agent = agent_start(server=web.url, engine=engine.url, token=token)
    try:
        agent.wait_until(lambda: replica_state(replica) == RState.READY, timeout=30, what="READY from a push")
        outcomes = [replicas_health_check() for _ in range(3)]
        agent.wait_line("replica ready")
    finally:
        agent.stop()

    assert outcomes == [{HealthOutcome.HEALTHY: 1}] * 3  # every poll failed; the fresh push kept it
    replica.refresh_from_db()
    assert replica.state == RState.READY
    assert replica.last_metrics["running"] == 0.0
    assert "kv_cache" in replica.last_metrics
    # What held it was the push: once stale, the next failed poll takes it out of routing.
    Replica.objects.filter(pk=replica.pk).update(last_pushed_at=timezone.now() - timedelta(minutes=5))
    assert replicas_health_check() == {HealthOutcome.UNHEALTHY: 1}


def test_a_wrong_token_is_refused_and_ends_the_agent(web, engine, unpollable_replica):
    replica, token = unpollable_replica
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    agent = agent_start(server=web.url, engine=engine.url, token=forged)
    try:
        code = agent.popen.wait(timeout=30)
    finally:
        agent.stop()

    assert code == 2, agent.describe()
    assert "refused (401)" in agent.output
    assert replica_state(replica) == RState.STARTING


def test_an_engine_not_answering_is_reported_as_starting_and_load_only_comes_when_it_is_ready():
    assert engine_report_build(None, None) == {"state": "starting"}
    assert engine_report_build(503, None) == {"state": "starting"}
    assert engine_report_build(200, 'garbage no value\nvllm:num_requests_running{a="b"} x\n') == {"state": "ready"}
    text = 'vllm:num_requests_running{model_name="m"} 2\nvllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.5\n'
    assert engine_report_build(200, text) == {
        "state": "ready",
        "metrics": {"running": 2.0, "waiting": 1.0, "kv_cache": 0.5},
    }


def test_the_backoff_doubles_after_each_failure_up_to_its_ceiling():
    config = AgentConfig(server="http://x", engine="http://y", token="inf-node-x", interval_s=2, max_backoff_s=60)

    waits = [backoff_seconds(config, failures, jitter=lambda: 0.0) for failures in range(1, 8)]

    assert waits == [4, 8, 16, 32, 60, 60, 60]
    assert backoff_seconds(config, 3, jitter=lambda: 1.0) == 8  # jitter takes up to half off


def test_an_agent_whose_engine_does_not_answer_never_makes_its_replica_ready(web, unpollable_replica):
    replica, token = unpollable_replica
    agent = agent_start(server=web.url, engine=UNPOLLABLE, token=token)
    try:
        agent.wait_line("engine starting, replica starting", timeout=30)
    finally:
        agent.stop()

    replica.refresh_from_db()
    assert replica.state == RState.STARTING
    assert replica.last_pushed_at is None


def test_an_agent_that_cannot_reach_inferia_backs_off_and_keeps_trying(engine, unpollable_replica):
    _replica, token = unpollable_replica
    agent = agent_start(server=UNPOLLABLE, engine=engine.url, token=token, interval="0.1", flags=("--max-backoff", "1"))
    try:
        agent.wait_until(lambda: agent.output.count("heartbeat failed") >= 3, timeout=30, what="three failures")
    finally:
        agent.stop()

    waits = [float(line.rsplit("next try in ", 1)[1].rstrip("s")) for line in agent.lines if "next try in" in line]
    ceilings = [0.2, 0.4, 0.8]  # the interval doubled after each failure; jitter takes up to half off
    assert all(ceiling / 2 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=False))
