"""Events of the domains become deliveries: budgets past 80% and 100% once each per period, a failed deployment, a
failed rollout, a replica still unhealthy after the threshold, and a key about to expire, once per key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from apps.compute.models import ModelDeployment, Replica
from apps.compute.services import deployment_transition
from apps.keys.expiry_notices import api_keys_expiring_announce
from apps.notifications.models import Channel, Delivery, EventKind
from apps.notifications.subscribers import replica_still_unhealthy_notify
from apps.policies.budget_alerts import budget_thresholds_announce
from apps.policies.effective import policy_counter_scope
from apps.policies.limits import quota_key
from tests.factories import ApiKeyFactory, ModelDeploymentFactory, PolicyFactory, ReplicaFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)


def _channel(org, *events: str, name: str = "ops") -> Channel:
    return Channel.objects.create(
        organization=org, name=name, kind=Channel.Kind.SLACK, url="https://hooks.example.com/x", events=list(events)
    )


def _kinds(org) -> list[str]:
    return sorted(Delivery.objects.filter(organization=org).values_list("event_kind", flat=True))


def _spend(policy, micros: int) -> None:
    from inferia_runtime.redis_clients import sync_redis

    key = quota_key(policy_counter_scope(policy), "d", NOW.strftime("%Y%m%d"))
    sync_redis().hset(key, "usd_used", micros)


def test_a_budget_notifies_once_at_80_and_once_at_100_percent(
    org, other_org, redis_cache, django_capture_on_commit_callbacks
):
    policy = PolicyFactory(organization=org, budget_per_day_micros=10_000_000)
    _channel(org, EventKind.BUDGET_80, EventKind.BUDGET_100)
    _channel(other_org, EventKind.BUDGET_80, EventKind.BUDGET_100, name="theirs")
    with django_capture_on_commit_callbacks(execute=True):
        _spend(policy, 5_000_000)
        assert budget_thresholds_announce(now=NOW) == 0
        _spend(policy, 8_500_000)
        assert budget_thresholds_announce(now=NOW) == 1
        assert budget_thresholds_announce(now=NOW) == 0  # the next scan, many requests later: no second notice
    assert _kinds(org) == [EventKind.BUDGET_80]
    with django_capture_on_commit_callbacks(execute=True):
        _spend(policy, 10_200_000)
        assert budget_thresholds_announce(now=NOW) == 1
        assert budget_thresholds_announce(now=NOW) == 0
    assert _kinds(org) == [EventKind.BUDGET_100, EventKind.BUDGET_80]
    assert _kinds(other_org) == []
    notice = Delivery.objects.get(event_kind=EventKind.BUDGET_100)
    assert notice.payload["percent"] == 100
    assert notice.status == Delivery.Status.PENDING
    # The next day is a new period: its crossings are notified again.
    next_day = NOW + timedelta(days=1)
    with django_capture_on_commit_callbacks(execute=True):
        key = quota_key(policy_counter_scope(policy), "d", next_day.strftime("%Y%m%d"))
        redis_cache.hset(key, "usd_used", 9_000_000)
        assert budget_thresholds_announce(now=next_day) == 1
    assert _kinds(org).count(EventKind.BUDGET_80) == 2


def test_a_failed_deployment_notifies_subscribed_channels_only(org, django_capture_on_commit_callbacks):
    _channel(org, EventKind.DEPLOYMENT_FAILED)
    _channel(org, EventKind.BUDGET_80, name="budget-only")
    deployment = ModelDeploymentFactory(organization=org)
    with django_capture_on_commit_callbacks(execute=True):
        deployment_transition(deployment_id=deployment.pk, to_state=ModelDeployment.State.FAILED, reason="no GPUs")
    delivery = Delivery.objects.get()
    assert delivery.event_kind == EventKind.DEPLOYMENT_FAILED
    assert delivery.channel.name == "ops"
    assert "no GPUs" in delivery.summary


def test_a_failed_rollout_notifies(org, django_capture_on_commit_callbacks):
    from apps.compute.rollout import _rollout_set

    _channel(org, EventKind.ROLLOUT_FAILED)
    deployment = ModelDeploymentFactory(organization=org, rollout_state=ModelDeployment.RolloutState.PROGRESSING)
    with django_capture_on_commit_callbacks(execute=True):
        _rollout_set(deployment, ModelDeployment.RolloutState.FAILED, "3 replicas of the new spec failed")
    assert _kinds(org) == [EventKind.ROLLOUT_FAILED]


def test_a_replica_notifies_only_if_still_unhealthy_after_the_threshold(org):
    _channel(org, EventKind.REPLICA_UNHEALTHY)
    replica = ReplicaFactory(deployment=ModelDeploymentFactory(organization=org), state=Replica.State.UNHEALTHY)
    since = timezone.now().isoformat()
    assert replica_still_unhealthy_notify(replica_id=replica.pk, since=since) == 1
    assert replica_still_unhealthy_notify(replica_id=replica.pk, since=since) == 0  # the same spell, once
    Replica.objects.filter(pk=replica.pk).update(state=Replica.State.READY)
    assert replica_still_unhealthy_notify(replica_id=replica.pk, since=timezone.now().isoformat()) == 0
    assert _kinds(org) == [EventKind.REPLICA_UNHEALTHY]


def test_a_key_about_to_expire_is_notified_once(org, redis_cache, django_capture_on_commit_callbacks):
    _channel(org, EventKind.KEY_EXPIRING)
    soon = ApiKeyFactory(organization=org, name="soon", expires_at=timezone.now() + timedelta(days=2))
    ApiKeyFactory(organization=org, name="later", expires_at=timezone.now() + timedelta(days=30))
    ApiKeyFactory(organization=org, name="never")
    with django_capture_on_commit_callbacks(execute=True):
        assert api_keys_expiring_announce(within=timedelta(days=7)) == 1
        assert api_keys_expiring_announce(within=timedelta(days=7)) == 0
    delivery = Delivery.objects.get()
    assert delivery.event_kind == EventKind.KEY_EXPIRING
    assert delivery.payload["key_id"] == soon.key.pk
