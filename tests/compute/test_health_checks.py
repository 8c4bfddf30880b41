"""The health checker at scale: every engine asked concurrently, the results written in batches."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from apps.compute.health import (
    HealthOutcome,
    ReplicaCheckRow,
    engine_load_parse,
    replicas_check_record,
    replicas_health_check,
)
from apps.compute.models import Replica
from apps.compute.routing import REPLICA_LOAD_KEY
from tests.bench.health_engines import engine_address
from tests.factories import ModelDeploymentFactory, ReplicaFactory
from tests.kit.ports import port_reserve
from tests.kit.processes import TestProcess

RState = Replica.State
ENGINES = Path(__file__).resolve().parents[1] / "bench" / "health_engines.py"


@pytest.fixture
def engines():
    """`count` simulated engines on distinct loopback addresses, answering after `delay_ms`; returns the port."""
    started = []

    def start(count: int, *, delay_ms: float = 0.0) -> int:
        port = port_reserve()
        args = [sys.executable, str(ENGINES), "--port", str(port), "--count", str(count), "--delay-ms", str(delay_ms)]
        process = TestProcess(args, port=port, name="health-engines")
        started.append(process)
        process.wait_line("listening", timeout=30)
        return port

    yield start
    for process in started:
        process.stop()


def remote_replicas(deployment, addresses: list[str]) -> list[Replica]:
    """READY replicas as the simulator adapter records those on another host: judged by their engine alone."""
    return [
        ReplicaFactory(
            deployment=deployment,
            state=RState.READY,
            endpoint=address,
            provider_handle={"key": f"remote-{index}", "host": "another-gpu-node"},
        )
        for index, address in enumerate(addresses)
    ]


def test_the_gauges_are_read_whatever_their_labels_timestamps_or_neighbours():
    text = (
        "# HELP vllm:num_requests_running Number of requests.\n"
        'vllm:num_requests_running{engine="0",model_name="a model {with} braces"} 2 1700000000000\n'
        "vllm:num_requests_running_total 100\n"  # a lookalike name: not the gauge
        "vllm:num_requests_waiting 5.0\n"
        'vllm:kv_cache_usage_perc{model_name="a"} 0.25\n'
        'vllm:gpu_cache_usage_perc{model_name="a"} 0.9\n'  # the older name, ignored when the newer is there
        'vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="a"} 7\n'
    )

    load = engine_load_parse(text)

    assert (load.running, load.waiting, load.kv_cache) == (2.0, 5.0, 0.25)


def test_a_malformed_gauge_is_a_value_error():
    with pytest.raises(ValueError):
        engine_load_parse('vllm:num_requests_running{model_name="a"} lots\n')


def test_one_cycle_asks_slow_engines_concurrently_and_records_their_load(engines, org, redis_cache):
    port = engines(12, delay_ms=300)  # sequentially: 12 engines x 2 requests x 0.3 s = 7.2 s
    deployment = ModelDeploymentFactory(organization=org, state="ready")
    replicas = remote_replicas(deployment, [f"http://{engine_address(index)}:{port}" for index in range(12)])
    (silent,) = remote_replicas(deployment, [f"http://{engine_address(200)}:{port}"])  # nothing listens there

    started = time.monotonic()
    counts = replicas_health_check()
    elapsed = time.monotonic() - started

    assert counts == {HealthOutcome.HEALTHY: 12, HealthOutcome.MISSED: 1}
    assert elapsed < 2.5
    for replica in replicas:
        replica.refresh_from_db()
        assert replica.last_metrics["running"] == 3.0
        assert replica.last_heartbeat_at is not None
        assert redis_cache.hget(REPLICA_LOAD_KEY.format(replica_id=replica.pk), "running") == b"3.0"
    silent.refresh_from_db()
    assert (silent.state, silent.failed_checks) == (RState.READY, 1)
    assert "/health not answering" in silent.last_error


def test_the_batched_write_leaves_a_replica_that_changed_state_meanwhile_alone(org):
    deployment = ModelDeploymentFactory(organization=org)
    kept, stopped = ReplicaFactory.create_batch(2, deployment=deployment, state=RState.READY, failed_checks=0)
    Replica.objects.filter(pk=stopped.pk).update(state=RState.STOPPING)

    written = replicas_check_record(
        rows=[
            ReplicaCheckRow(kept.pk, RState.READY, 2, last_error="slow"),
            ReplicaCheckRow(stopped.pk, RState.READY, 2, last_error="slow"),
        ]
    )

    assert written == 1
    kept.refresh_from_db()
    stopped.refresh_from_db()
    assert (kept.failed_checks, kept.last_error, kept.last_metrics) == (2, "slow", {})
    assert (stopped.failed_checks, stopped.last_error) == (0, "")


def test_a_metrics_answer_past_its_limit_is_not_read_and_the_replica_stays_healthy(engines, org, monkeypatch):
    monkeypatch.setattr("apps.compute.health_probes.METRICS_MAX_BYTES", 512)  # the engines send a few kilobytes
    port = engines(1)
    (replica,) = remote_replicas(ModelDeploymentFactory(organization=org), [f"http://{engine_address(0)}:{port}"])

    counts = replicas_health_check()

    assert counts == {HealthOutcome.HEALTHY: 1}
    replica.refresh_from_db()
    assert replica.last_metrics == {}
    assert replica.last_heartbeat_at is not None
