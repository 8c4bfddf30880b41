"""The engines' load over time: the health task folds the READY replicas' last load into one sample per deployment
and step (the highest seen in the step), leaves out replicas that are not serving or whose metrics are stale, prunes
old samples, and the series read back has gaps where nothing was recorded."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from apps.compute.load_history import deployment_load_prune, deployment_load_record, load_sample_step_start
from apps.compute.load_selectors import deployment_load_series, load_step_for
from apps.compute.models import DeploymentLoadSample, ModelDeployment, Replica
from tests.compute.test_lifecycle import provision_ready, sim_deployment  # noqa: F401 (a fixture)
from tests.factories import ModelDeploymentFactory, ReplicaFactory

pytestmark = pytest.mark.django_db


def _replica(deployment, *, running, waiting, kv_cache, state=Replica.State.READY, age_s=0.0):
    return ReplicaFactory(
        deployment=deployment,
        state=state,
        last_metrics={"running": running, "waiting": waiting, "kv_cache": kv_cache, "checked_at": time.time() - age_s},
    )


def test_the_sample_sums_the_ready_replicas_and_keeps_the_highest_of_the_step(org, settings):
    settings.INFERIA_LOAD_SAMPLE_SECONDS = 300
    deployment = ModelDeploymentFactory(organization=org)
    quiet = ModelDeploymentFactory(organization=org)
    first = _replica(deployment, running=3, waiting=1, kv_cache=0.25)
    _replica(deployment, running=2, waiting=4, kv_cache=0.5)
    _replica(deployment, running=50, waiting=50, kv_cache=1.0, state=Replica.State.UNHEALTHY)  # out of routing
    _replica(deployment, running=70, waiting=70, kv_cache=1.0, age_s=600)  # stopped answering long ago
    _replica(quiet, running=0, waiting=0, kv_cache=0.0, state=Replica.State.STARTING)
    now = datetime.now(UTC)

    assert deployment_load_record(now=now) == 1
    Replica.objects.filter(pk=first.pk).update(
        last_metrics={"running": 0, "waiting": 0, "kv_cache": 0.9, "checked_at": time.time()}
    )
    deployment_load_record(now=now)  # the next check, in the same step: the highest of each stays

    sample = DeploymentLoadSample.objects.get()
    assert sample.deployment_id == deployment.pk
    assert sample.at == load_sample_step_start(now)
    assert sample.at.timestamp() % 300 == 0
    assert now - sample.at < timedelta(seconds=300)
    assert (sample.running, sample.waiting, sample.kv_cache, sample.replicas) == (5, 5, 0.9, 2)


def test_samples_past_the_history_are_pruned(org, settings):
    settings.INFERIA_LOAD_HISTORY_DAYS = 7
    deployment = ModelDeploymentFactory(organization=org)
    now = datetime.now(UTC)
    for days in (1, 6, 8, 40):
        DeploymentLoadSample.objects.create(deployment=deployment, at=now - timedelta(days=days), running=1)

    assert deployment_load_prune() == 2
    assert DeploymentLoadSample.objects.count() == 2


def test_the_series_sums_deployments_per_sample_keeps_the_peak_per_step_and_leaves_gaps(org, other_org):
    ours, also_ours = ModelDeploymentFactory(organization=org), ModelDeploymentFactory(organization=org)
    theirs = ModelDeploymentFactory(organization=other_org)
    since = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
    for deployment, running in ((ours, 2), (also_ours, 3), (theirs, 100)):
        DeploymentLoadSample.objects.create(deployment=deployment, at=since, running=running, kv_cache=0.5)
    DeploymentLoadSample.objects.create(deployment=ours, at=since + timedelta(minutes=5), running=1, waiting=7)
    DeploymentLoadSample.objects.create(deployment=ours, at=since + timedelta(hours=2), running=4, kv_cache=0.75)

    series = deployment_load_series(
        deployments=ModelDeployment.objects.filter(organization=org),
        since=since,
        until=since + timedelta(hours=3),
        step_seconds=3600,
    )

    assert series.buckets == [int((since + timedelta(hours=h)).timestamp()) for h in range(3)]
    assert series.running == [5, None, 4]  # 2 + 3 at the first sample is the hour's peak; another org's stays out
    assert series.waiting == [7, None, 0]
    assert series.kv_cache_percent == [50, None, 75]
    assert not series.empty


def test_the_step_is_never_finer_than_the_samples():
    since = datetime(2026, 11, 20, tzinfo=UTC)
    assert load_step_for(since, since + timedelta(hours=24), 300) == 300
    assert load_step_for(since, since + timedelta(days=7), 300) == 3600
    assert load_step_for(since, since + timedelta(days=30), 300) == 6 * 3600
    assert load_step_for(since, since + timedelta(hours=24), 7200) == 7200


def test_the_health_check_records_a_serving_engines_load(sim_deployment, settings):  # noqa: F811 (the fixture)
    deployment = sim_deployment(1)
    provision_ready(deployment)  # runs the health check until the replica is READY

    sample = DeploymentLoadSample.objects.get(deployment=deployment)
    assert sample.replicas == 1
    assert datetime.now(UTC) - sample.at < timedelta(seconds=settings.INFERIA_LOAD_SAMPLE_SECONDS + 60)
