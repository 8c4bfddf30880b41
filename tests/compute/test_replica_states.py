"""The replica state machine: every place that changes a replica's state makes a move the table allows, the table
holds no move that no place makes, a move it does not allow is refused, and nothing outside `replica_transition`
writes a replica's state.

The places run for real against PostgreSQL, on an external provider's replicas (adopting an endpoint starts no
process); health checks are applied from hand-made probes.
"""

from __future__ import annotations

import ast
import itertools
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apps.compute.adapters import ReplicaPhase
from apps.compute.events import ReplicaStateChanged
from apps.compute.health import HealthOutcome, Probe, replica_health_apply, replica_heartbeat_record
from apps.compute.models import ModelDeployment, Replica
from apps.compute.reconcile import deployment_reconcile_run
from apps.compute.replica_states import REPLICA_TRANSITIONS, replica_transition
from apps.compute.replicas import (
    replica_claim_provision,
    replica_provision_give_up,
    replica_provision_run,
    replica_teardown_run,
    replicas_mark_stopping,
)
from apps.compute.services import InvalidTransitionError
from inferia_runtime.events import event_subscribe, event_unsubscribe
from tests.factories import ReplicaFactory

RState = Replica.State
ENDPOINT = "http://93.184.215.14:8000"
APPS = pathlib.Path(settings.BASE_DIR) / "apps"


@pytest.fixture
def replica_in(make_replica):
    """A replica of an external deployment (one endpoint to adopt) put in `state` with `fields`, as the test's
    starting point."""

    def make(state, **fields):
        replica = make_replica("external", config={"base_urls": [ENDPOINT]})
        Replica.objects.filter(pk=replica.pk).update(state=state, **fields)
        replica.refresh_from_db()
        return replica

    return make


@dataclass(frozen=True)
class Place:
    """A place in the code that changes a replica's state, run on a replica read in `from_state`."""

    name: str
    from_state: str
    to_state: str
    run: Callable[[Replica], object]
    fields: tuple[tuple[str, object], ...] = ()


def _probe(phase, detail=""):
    return lambda replica: replica_health_apply(replica=replica, probe=Probe(phase, detail))


def _endpoint_taken(replica):
    """Another replica of the deployment holds the only endpoint: provisioning fails, worth retrying."""
    ReplicaFactory(deployment=replica.deployment, state=RState.READY, provider_handle={"base_url": ENDPOINT})
    return replica_provision_run(replica_id=replica.pk)


def _no_endpoints(replica):
    """The provider lists no endpoint at all: provisioning fails for good."""
    provider = replica.deployment.pool.provider
    provider.config = {"base_urls": []}
    provider.save()
    return replica_provision_run(replica_id=replica.pk)


def _rolled_over(replica):
    """A rollout that may take one replica out of routing before a new one serves: the old one drains."""
    ModelDeployment.objects.filter(pk=replica.deployment_id).update(
        rollout_state=ModelDeployment.RolloutState.PROGRESSING, spec_hash="new", max_surge=1, max_unavailable=1
    )
    Replica.objects.filter(pk=replica.pk).update(spec_hash="old")
    return deployment_reconcile_run(deployment_id=replica.deployment_id)


LONG_AGO = {"updated_at": timezone.now() - timedelta(days=1), "last_heartbeat_at": timezone.now() - timedelta(days=1)}

PLACES = [
    Place("claim", RState.PENDING, RState.PROVISIONING, lambda r: replica_claim_provision(replica_id=r.pk)),
    Place("provisioned", RState.PROVISIONING, RState.STARTING, lambda r: replica_provision_run(replica_id=r.pk)),
    Place("provision retry", RState.PROVISIONING, RState.PENDING, _endpoint_taken),
    Place("provision failure", RState.PROVISIONING, RState.FAILED, _no_endpoints),
    Place(
        "give up pending",
        RState.PENDING,
        RState.FAILED,
        lambda r: replica_provision_give_up(replica_id=r.pk, error="x"),
    ),
    Place(
        "give up provisioning",
        RState.PROVISIONING,
        RState.FAILED,
        lambda r: replica_provision_give_up(replica_id=r.pk, error="x"),
    ),
    *(
        Place(
            f"stop {state}", state, RState.STOPPING, lambda r: replicas_mark_stopping(replica_ids=[r.pk], reason="test")
        )
        for state in (RState.PENDING, RState.PROVISIONING, RState.STARTING, RState.READY, RState.UNHEALTHY)
    ),
    Place(
        "reconcile a failed one",
        RState.FAILED,
        RState.STOPPING,
        lambda r: deployment_reconcile_run(deployment_id=r.deployment_id),
    ),
    Place("rollout drains", RState.READY, RState.DRAINING, _rolled_over),
    Place(
        "reconcile a drained one",
        RState.DRAINING,
        RState.STOPPING,
        lambda r: deployment_reconcile_run(deployment_id=r.deployment_id),
        (("drain_started_at", timezone.now() - timedelta(days=1)),),
    ),
    Place("check: gone while draining", RState.DRAINING, RState.STOPPING, _probe(ReplicaPhase.FAILED, "exited")),
    Place("teardown", RState.STOPPING, RState.STOPPED, lambda r: replica_teardown_run(replica_id=r.pk)),
    Place("check: up", RState.STARTING, RState.READY, _probe(ReplicaPhase.READY)),
    Place("check: back", RState.UNHEALTHY, RState.READY, _probe(ReplicaPhase.READY)),
    Place("check: gone", RState.READY, RState.FAILED, _probe(ReplicaPhase.FAILED, "exited")),
    Place(
        "check: never started", RState.STARTING, RState.FAILED, _probe(ReplicaPhase.STARTING), tuple(LONG_AGO.items())
    ),
    Place(
        "check: missed too many",
        RState.READY,
        RState.UNHEALTHY,
        _probe(ReplicaPhase.STARTING, "no answer"),
        (("failed_checks", 1_000),),
    ),
    Place(
        "check: unhealthy too long",
        RState.UNHEALTHY,
        RState.FAILED,
        _probe(ReplicaPhase.STARTING),
        tuple(LONG_AGO.items()),
    ),
    Place(
        "heartbeat: ready",
        RState.STARTING,
        RState.READY,
        lambda r: replica_heartbeat_record(replica=r, state="ready", load=None),
    ),
    Place(
        "heartbeat: failed",
        RState.READY,
        RState.FAILED,
        lambda r: replica_heartbeat_record(replica=r, state="failed", load=None),
    ),
]


@pytest.mark.parametrize("place", PLACES, ids=lambda place: place.name)
def test_each_place_makes_a_move_the_table_allows(place, replica_in, redis_cache):
    replica = replica_in(place.from_state, **dict(place.fields))

    place.run(replica)

    replica.refresh_from_db()
    assert (place.from_state, replica.state) == (place.from_state, place.to_state)
    assert place.to_state in REPLICA_TRANSITIONS[place.from_state]


def test_the_table_holds_no_move_that_no_place_makes():
    table = {(start, end) for start, ends in REPLICA_TRANSITIONS.items() for end in ends}
    made = {(place.from_state, place.to_state) for place in PLACES}
    assert made == table


NOT_ALLOWED = [
    (start, end) for start, end in itertools.permutations(RState.values, 2) if end not in REPLICA_TRANSITIONS[start]
]


@pytest.mark.parametrize(("start", "end"), NOT_ALLOWED, ids=lambda state: state)
def test_it_refuses_a_move_the_table_does_not_allow(start, end, replica_in):
    replica = replica_in(start)

    with pytest.raises(InvalidTransitionError):
        replica_transition(replica=replica, to_state=end)

    replica.refresh_from_db()
    assert replica.state == start


@pytest.fixture
def delivered():
    """The ReplicaStateChanged events delivered while the test runs."""
    events = []
    event_subscribe(ReplicaStateChanged, events.append)
    yield events
    event_unsubscribe(ReplicaStateChanged, events.append)


def test_a_move_stamps_the_replica_and_is_announced_once_committed(
    replica_in, delivered, django_capture_on_commit_callbacks
):
    replica = replica_in(RState.STARTING, updated_at=timezone.now() - timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=True):
        assert replica_transition(replica=replica, to_state=RState.READY, last_error="")
        assert delivered == []  # not before the commit

    stored = Replica.objects.get(pk=replica.pk)
    assert (stored.state, replica.state) == (RState.READY, RState.READY)
    assert timezone.now() - stored.updated_at < timedelta(minutes=1)
    assert delivered == [ReplicaStateChanged(replica.deployment_id, replica.pk, RState.STARTING, RState.READY)]
    assert delivered[0].routing_changed


def test_a_replica_another_worker_moved_first_is_left_alone(replica_in, delivered, django_capture_on_commit_callbacks):
    replica = replica_in(RState.STARTING)
    Replica.objects.filter(pk=replica.pk).update(state=RState.STOPPING)  # what the other worker did meanwhile

    with django_capture_on_commit_callbacks(execute=True):
        assert not replica_transition(replica=replica, to_state=RState.READY)

    assert Replica.objects.get(pk=replica.pk).state == RState.STOPPING
    assert delivered == []


def test_staying_in_the_same_state_is_no_move(replica_in, delivered, django_capture_on_commit_callbacks):
    replica = replica_in(RState.FAILED)

    with django_capture_on_commit_callbacks(execute=True):
        assert not replica_transition(replica=replica, to_state=RState.FAILED)

    assert delivered == []


def test_health_outcomes_are_named(replica_in):
    replica = replica_in(RState.STARTING)

    outcome = replica_health_apply(replica=replica, probe=Probe(ReplicaPhase.STARTING, "booting"))

    assert outcome is HealthOutcome.STARTING


def _state_writes(path: pathlib.Path) -> list[str]:
    """Where `path` writes a replica's state by hand: an `.update(state=...)` (of a queryset, or of the fields a
    queryset update is given), or `<replica>.state = ...` (a deployment's state is its own state machine's)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "update"
            and any(keyword.arg == "state" for keyword in node.keywords)
        ):
            found.append(f"{path}:{node.lineno}")
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "state" and "deployment" not in ast.unparse(target):
                found.append(f"{path}:{node.lineno}")
    return found


def test_nothing_but_replica_transition_writes_a_replicas_state():
    writes = [
        write
        for path in sorted(APPS.rglob("*.py"))
        if "migrations" not in path.parts and path.name != "replica_states.py"
        for write in _state_writes(path)
    ]

    assert writes == []
    assert _state_writes(APPS / "compute" / "replica_states.py")  # the check does find a write
