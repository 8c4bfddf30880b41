"""The in-process event publisher: events reach their subscribers once the transaction commits (at once outside
one), never after a rollback, and a subscriber that fails is logged without breaking the publisher's transaction or
the other subscribers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
from django.db import transaction

from apps.orgs.models import Organization
from inferia_runtime.events import event_publish, event_subscribe, event_unsubscribe
from tests.factories import OrganizationFactory


@dataclass(frozen=True)
class ThingHappened:
    what: str


@dataclass(frozen=True)
class SomethingElse:
    what: str


@pytest.fixture
def received():
    """What a well-behaved subscriber of ThingHappened was given."""
    events = []
    event_subscribe(ThingHappened, events.append)
    yield events
    event_unsubscribe(ThingHappened, events.append)


def _broken(event):
    raise RuntimeError(f"cannot handle {event.what}")


@pytest.fixture
def broken_subscriber():
    """A subscriber of ThingHappened that always raises, subscribed before the well-behaved one."""
    event_subscribe(ThingHappened, _broken)
    yield
    event_unsubscribe(ThingHappened, _broken)


def test_an_event_reaches_its_subscribers_once_the_transaction_commits(
    db, received, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        event_publish(ThingHappened("a"))
        event_publish(SomethingElse("b"))
        assert received == []

    assert received == [ThingHappened("a")]


@pytest.mark.django_db(transaction=True)
def test_an_event_of_a_rolled_back_transaction_is_never_delivered(received):
    with transaction.atomic():
        event_publish(ThingHappened("rolled back"))
        transaction.set_rollback(True)

    event_publish(ThingHappened("outside a transaction"))

    assert received == [ThingHappened("outside a transaction")]


@pytest.mark.django_db(transaction=True)
def test_a_failing_subscriber_is_logged_and_breaks_neither_the_transaction_nor_the_others(
    broken_subscriber, received, caplog
):
    with caplog.at_level(logging.ERROR, logger="inferia_runtime.events"), transaction.atomic():
        OrganizationFactory(name="Committed", slug="committed")
        event_publish(ThingHappened("x"))

    assert Organization.objects.filter(slug="committed").exists()
    assert received == [ThingHappened("x")]
    assert "cannot handle x" in caplog.text


def test_subscribing_twice_delivers_once(db, received, django_capture_on_commit_callbacks):
    event_subscribe(ThingHappened, received.append)

    with django_capture_on_commit_callbacks(execute=True):
        event_publish(ThingHappened("once"))

    assert received == [ThingHappened("once")]
