"""The engines' load over time: the health task folds the READY replicas' last load into one sample per deployment
and step (the highest seen in the step), leaves out replicas that are not serving or whose metrics are stale, prunes
old samples, and the series read back has gaps where nothing was recorded."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from apps.compute.load_history import HOUR, deployment_load_prune, deployment_load_record, load_sample_step_start
from apps.compute.load_selectors import deployment_load_series, load_steps_for
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


def test_the_samples_sum_the_ready_replicas_and_keep_the_highest_of_the_step_and_hour(org, settings):
    settings.INFERIA_LOAD_SAMPLE_SECONDS = 300
    deployment = ModelDeploymentFactory(organization=org)
    quiet = ModelDeploymentFactory(organization=org)
    first = _replica(deployment, running=3, waiting=1, kv_cache=0.25)
    _replica(deployment, running=2, waiting=4, kv_cache=0.5)
    _replica(deployment, running=50, waiting=50, kv_cache=1.0, state=Replica.State.UNHEALTHY)  # out of routing
    _replica(deployment, running=70, waiting=70, kv_cache=1.0, age_s=600)  # stopped answering long ago
    _replica(quiet, running=0, waiting=0, kv_cache=0.0, state=Replica.State.STARTING)
    now = datetime.now(UTC)

    assert deployment_load_record(now=now) == 2  # the step's sample and the hour's
    Replica.objects.filter(pk=first.pk).update(
        last_metrics={"running": 0, "waiting": 0, "kv_cache": 0.9, "checked_at": time.time()}
    )
    deployment_load_record(now=now)  # the next check, in the same step: the highest of each stays

    fine, hourly = DeploymentLoadSample.objects.order_by("step")
    assert fine.deployment_id == hourly.deployment_id == deployment.pk
    assert (fine.step, hourly.step) == (300, HOUR)
    assert fine.at == load_sample_step_start(now)
    assert fine.at.timestamp() % 300 == 0
    assert now - fine.at < timedelta(seconds=300)
    assert hourly.at == now.replace(minute=0, second=0, microsecond=0)
    for sample in (fine, hourly):
        assert (sample.running, sample.waiting, sample.kv_cache, sample.replicas) == (5, 5, 0.9, 2)


def test_fine_samples_go_after_days_and_hourly_ones_after_the_history(org, settings):
    settings.INFERIA_LOAD_SAMPLE_SECONDS = 300
    settings.INFERIA_LOAD_FINE_HISTORY_DAYS = 2
    settings.INFERIA_LOAD_HISTORY_DAYS = 30
    deployment = ModelDeploymentFactory(organization=org)
    now = datetime.now(UTC)
    for days in (1, 3, 40):
        for step in (300, HOUR):
            DeploymentLoadSample.objects.create(deployment=deployment, step=step, at=now - timedelta(days=days))

    assert deployment_load_prune() == 3
    assert sorted(DeploymentLoadSample.objects.values_list("step", flat=True)) == [300, HOUR, HOUR]


def test_the_series_sums_deployments_per_sample_keeps_the_peak_per_step_and_leaves_gaps(org, other_org):
    ours, also_ours = ModelDeploymentFactory(organization=org), ModelDeploymentFactory(organization=org)
    theirs = ModelDeploymentFactory(organization=other_org)
    since = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)

    def sample(deployment, at, **values):
        DeploymentLoadSample.objects.create(deployment=deployment, step=300, at=at, **values)

    for deployment, running in ((ours, 2), (also_ours, 3), (theirs, 100)):
        sample(deployment, since, running=running, kv_cache=0.5)
    sample(ours, since + timedelta(minutes=5), running=1, waiting=7)
    sample(ours, since + timedelta(minutes=20), running=4, kv_cache=0.75)
    DeploymentLoadSample.objects.create(deployment=ours, step=HOUR, at=since, running=99)  # another resolution

    series = deployment_load_series(
        deployments=ModelDeployment.objects.filter(organization=org),
        since=since,
        until=since + timedelta(minutes=30),
        fine_seconds=300,
    )

    assert series.step_seconds == 300
    assert series.buckets == [int((since + timedelta(minutes=m)).timestamp()) for m in range(0, 30, 5)]
    assert series.running == [5, 1, None, None, 4, None]  # 2 + 3; another organisation's stays out
    assert series.waiting == [0, 7, None, None, 0, None]
    assert series.kv_cache_percent == [50, 0, None, None, 75, None]
    assert not series.empty


def test_a_week_reads_hourly_samples_and_a_month_charts_them_by_six_hours(org):
    deployment = ModelDeploymentFactory(organization=org)
    since = datetime(2026, 11, 1, tzinfo=UTC)
    for hour, running in ((0, 1), (3, 6), (7, 2)):
        DeploymentLoadSample.objects.create(deployment=deployment, step=HOUR, at=since + timedelta(hours=hour),
                                            running=running)  # fmt: skip
    DeploymentLoadSample.objects.create(deployment=deployment, step=300, at=since, running=50)  # not read

    week = deployment_load_series(
        deployments=ModelDeployment.objects.all(), since=since, until=since + timedelta(days=7), fine_seconds=300
    )
    month = deployment_load_series(
        deployments=ModelDeployment.objects.all(), since=since, until=since + timedelta(days=30), fine_seconds=300
    )

    assert week.step_seconds == HOUR
    assert week.running[:8] == [1, None, None, 6, None, None, None, 2]
    assert month.step_seconds == 6 * HOUR
    assert month.running[:3] == [6, 2, None]


def test_the_resolution_follows_the_range():
    since = datetime(2026, 11, 20, tzinfo=UTC)
    assert load_steps_for(since, since + timedelta(hours=24), 300) == (300, 300)
    assert load_steps_for(since, since + timedelta(days=7), 300) == (HOUR, HOUR)
    assert load_steps_for(since, since + timedelta(days=30), 300) == (HOUR, 6 * HOUR)


def test_the_health_check_records_a_serving_engines_load(sim_deployment, settings):  # noqa: F811 (the fixture)
    deployment = sim_deployment(1)
    provision_ready(deployment)  # runs the health check until the replica is READY

    sample = DeploymentLoadSample.objects.get(deployment=deployment, step=settings.INFERIA_LOAD_SAMPLE_SECONDS)
    assert sample.replicas == 1
    assert datetime.now(UTC) - sample.at < timedelta(seconds=settings.INFERIA_LOAD_SAMPLE_SECONDS + 60)
