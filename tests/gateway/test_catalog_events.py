"""The catalog follows compute's events: a replica entering or leaving READY, a serving replica's new address and a
deployment's synced LoRA adapters each tell every gateway to reload (one message on the catalog channel); moves
between states that never serve do not."""

from __future__ import annotations

import time

import pytest

from apps.compute.events import ReplicaAdaptersSynced, ReplicaEndpointChanged
from apps.compute.models import Replica
from apps.compute.replica_states import replica_transition
from apps.gateway.catalog import CATALOG_CHANNEL
from inferia_runtime.events import event_publish
from inferia_runtime.redis_clients import sync_redis
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ReplicaFactory

RState = Replica.State


@pytest.fixture
def catalog_messages():
    """Reads what was announced on the catalog channel since the test subscribed."""
    pubsub = sync_redis().pubsub()
    pubsub.subscribe(CATALOG_CHANNEL)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"

    def read():
        messages, deadline = [], time.monotonic() + 0.5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                messages.append(message["data"])
        return messages

    yield read
    pubsub.close()


@pytest.fixture
def replica(org):
    pool = ComputePoolFactory(organization=org, provider__name="sim", name="pool")
    deployment = ModelDeploymentFactory(organization=org, pool=pool, name="chat", model_id="sim/tiny")
    return ReplicaFactory(deployment=deployment, state=RState.STARTING, endpoint="http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("start", "end", "announced"),
    [
        (RState.STARTING, RState.READY, 1),
        (RState.READY, RState.UNHEALTHY, 1),
        (RState.READY, RState.STOPPING, 1),
        (RState.STARTING, RState.FAILED, 0),
        (RState.UNHEALTHY, RState.FAILED, 0),
    ],
)
def test_a_replica_entering_or_leaving_ready_reloads_every_catalog(
    replica, start, end, announced, catalog_messages, django_capture_on_commit_callbacks
):
    Replica.objects.filter(pk=replica.pk).update(state=start)
    replica.state = start

    with django_capture_on_commit_callbacks(execute=True):
        assert replica_transition(replica=replica, to_state=end)
        assert catalog_messages() == []  # nothing before the commit

    assert catalog_messages() == [b"1"] * announced


@pytest.mark.parametrize(("serving", "announced"), [(True, 1), (False, 0)])
def test_a_new_address_reloads_every_catalog_when_the_replica_serves(
    replica, serving, announced, catalog_messages, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        event_publish(
            ReplicaEndpointChanged(deployment_id=replica.deployment_id, replica_id=replica.pk, serving=serving)
        )

    assert catalog_messages() == [b"1"] * announced


def test_synced_adapters_reload_every_catalog(replica, catalog_messages, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        event_publish(ReplicaAdaptersSynced(deployment_id=replica.deployment_id))

    assert catalog_messages() == [b"1"]
