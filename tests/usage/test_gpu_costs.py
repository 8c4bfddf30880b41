"""GPU cost: a replica's GPUs from when it first serves until it stops, at its pool's price per GPU-hour, per
organisation, team and deployment, beside its tokens, in exact micro-units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apps.compute.models import Replica
from apps.compute.replica_states import replica_transition
from apps.usage.models import GpuUsageSpan, UsageDeploymentRollup
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ReplicaFactory, TeamFactory

RState = Replica.State
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def deployment(org):
    pool = ComputePoolFactory(organization=org, name="h100", max_nodes=4, cost_per_gpu_hour_micros=2_500_000)
    return ModelDeploymentFactory(
        organization=org,
        pool=pool,
        name="chat",
        engine_args={"tensor_parallel_size": 2},
        team=TeamFactory(organization=org, name="Research"),
    )


def serve(replica):
    for state in (RState.PROVISIONING, RState.STARTING, RState.READY):
        replica_transition(replica=replica, to_state=state)


def stop(replica):
    replica_transition(replica=replica, to_state=RState.STOPPING)
    replica_transition(replica=replica, to_state=RState.STOPPED)


def costs(client, **params):
    response = client.get("/api/usage/gpu-costs/", {"since": "2026-03-02T00:00:00Z", **params})
    assert response.status_code == 200, response.data
    return response.data


def test_gpu_cost_accrues_while_a_replica_serves_and_stops_with_it(org, owner, deployment, as_user):
    client = as_user(owner)
    with time_machine.travel(T0, tick=False) as clock:
        replica = ReplicaFactory(deployment=deployment)
        clock.shift(timedelta(minutes=5))  # provisioning and starting are not charged
        serve(replica)
        UsageDeploymentRollup.objects.create(
            hour=T0,
            organization=org,
            deployment=deployment,
            prompt_tokens=2_000_000,
            completion_tokens=1_000_000,
            cost_micros=900_000,
        )
        clock.shift(timedelta(minutes=90))
        running = costs(client)
        replica_transition(replica=replica, to_state=RState.UNHEALTHY)  # still holds its GPUs
        clock.shift(timedelta(minutes=30))
        replica_transition(replica=replica, to_state=RState.READY)
        stop(replica)
        clock.shift(timedelta(hours=5))
        stopped = costs(client)
        window = costs(client, since="2026-03-02T11:05:00Z", until="2026-03-02T11:20:00Z")

    # 90 minutes x 2 GPUs x 2.50 per GPU-hour = 7.50
    assert running == [
        {
            "organization": org.pk,
            "team": deployment.team_id,
            "deployment": deployment.pk,
            "deployment_name": "chat",
            "gpu_seconds": 10_800,
            "gpu_cost_micros": 7_500_000,
            "tokens": 3_000_000,
            "token_cost_micros": 900_000,
            "gpu_cost_per_mtok_micros": 2_500_000,
        }
    ]
    assert (stopped[0]["gpu_seconds"], stopped[0]["gpu_cost_micros"]) == (14_400, 10_000_000)  # two hours, then none
    assert (window[0]["gpu_seconds"], window[0]["gpu_cost_micros"]) == (1_800, 1_250_000)
    span = GpuUsageSpan.objects.get(replica_id=replica.pk)
    assert (span.started_at, span.ended_at) == (T0 + timedelta(minutes=5), T0 + timedelta(minutes=125))


def test_micro_units_stay_exact_over_odd_durations(org, deployment):
    from apps.usage.gpu_selectors import span_cost_micros

    span = GpuUsageSpan(gpus=3, cost_per_gpu_hour_micros=1_000_001, started_at=T0, ended_at=T0 + timedelta(seconds=7))

    gpu_micros, cost = span_cost_micros(span, since=T0, until=T0 + timedelta(hours=1))

    assert gpu_micros == 21_000_000
    assert cost == 21 * 1_000_001 // 3600  # 5833, rounded down once


def test_costs_sum_per_team_and_organisation_and_stay_inside_the_tenant(org, owner, outsider, deployment, as_user):
    other = ModelDeploymentFactory(organization=org, pool=deployment.pool, name="embed")  # charged to no team
    with time_machine.travel(T0, tick=False) as clock:
        for target in (deployment, other):
            serve(ReplicaFactory(deployment=target))
        clock.shift(timedelta(hours=1))
        by_team = costs(as_user(owner), group_by="team")
        by_org = costs(as_user(owner), group_by="organization")
        foreign = costs(as_user(outsider))
        export = as_user(owner).get("/api/usage/gpu-costs/export/", {"since": "2026-03-02T00:00:00Z"})

    assert {(row["team"], row["gpu_cost_micros"]) for row in by_team} == {
        (deployment.team_id, 5_000_000),
        (None, 2_500_000),
    }
    assert [(row["organization"], row["deployment"], row["gpu_cost_micros"]) for row in by_org] == [
        (org.pk, None, 7_500_000)
    ]
    assert foreign == []
    lines = export.content.decode().splitlines()
    assert export["Content-Type"].startswith("text/csv")
    assert lines[0].startswith("organization_id,team_id,deployment_id,deployment_name,gpu_seconds,gpu_cost_micros")
    assert f"{org.pk},{deployment.team_id},{deployment.pk},chat,7200,5000000,0,0," in lines


def test_servers_of_an_external_provider_cost_no_gpu_time(org):
    pool = ComputePoolFactory(organization=org, provider__kind="external", cost_per_gpu_hour_micros=1_000_000)
    replica = ReplicaFactory(deployment=ModelDeploymentFactory(organization=org, pool=pool))

    serve(replica)

    assert not GpuUsageSpan.objects.exists()
