"""Retries with a real Celery worker: a receiver that fails twice gets the third attempt, one that keeps failing
leaves a failed delivery after the last attempt. The worker runs on the test database with a short back-off."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from django.db import transaction

from apps.notifications import services
from apps.notifications.models import Delivery
from apps.notifications.tasks import retry_delay_s
from tests.kit.processes import TestProcess, child_database_url, inferia_start
from tests.kit.waiting import eventually
from tests.knowledge.test_killed_worker import broker_discard_everything

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MAX_ATTEMPTS = 3


@pytest.fixture
def worker() -> Iterator[TestProcess]:
    from celery_app import app

    assert app.control.ping(timeout=1.0) == [], "another Celery worker consumes this broker"
    broker_discard_everything()
    env = {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "INFERIA_WORKER_CONCURRENCY": "1",
        "INFERIA_UPSTREAM_ALLOW_PRIVATE": "true",  # the receiver is on loopback
        "INFERIA_NOTIFY_RETRY_BASE_S": "0.2",
        "INFERIA_NOTIFY_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    }
    process = inferia_start(["start", "worker"], env=env)
    try:
        process.wait_until(lambda: any(" ready." in line for line in process.lines), timeout=120, what="worker ready")
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(Exception):
                process.interrupt(timeout=30)
        process.kill_everything()
        broker_discard_everything()


def _send_test(owner, org, url: str) -> tuple[str, int]:
    with transaction.atomic():
        created = services.channel_create(organization=org, name="hook", kind="webhook", url=url, actor=owner)
    with transaction.atomic():  # the task is queued when this commits, not before
        delivery = services.channel_test_send(channel=created.channel, actor=owner)
    return created.secret, delivery.pk


def _settled(pk: int) -> Delivery | None:
    delivery = Delivery.objects.get(pk=pk)
    return None if delivery.status == Delivery.Status.PENDING else delivery


def test_a_delivery_is_retried_until_the_receiver_accepts_it(owner, org, settings, receiver, worker):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    receiver.statuses = [500, 502]
    receiver.secret, pk = _send_test(owner, org, receiver.url)
    try:
        delivery = eventually(lambda: _settled(pk), timeout=60, what="the delivery settled")
    except Exception as error:
        raise AssertionError(f"{error}\n" + "\n".join(worker.lines[-40:])) from None
    assert (delivery.status, delivery.attempts, delivery.response_status) == (Delivery.Status.SENT, 3, 200)
    assert delivery.last_error == ""
    assert len(receiver.received) == 3
    assert all(request.signature_valid for request in receiver.received)


def test_a_delivery_fails_after_the_last_attempt(owner, org, settings, receiver, worker):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    receiver.statuses = [500] * 10
    receiver.secret, pk = _send_test(owner, org, receiver.url)
    try:
        delivery = eventually(lambda: _settled(pk), timeout=60, what="the delivery settled")
    except Exception as error:
        raise AssertionError(f"{error}\n" + "\n".join(worker.lines[-40:])) from None
    assert (delivery.status, delivery.attempts, delivery.response_status) == (Delivery.Status.FAILED, MAX_ATTEMPTS, 500)
    assert delivery.last_error.startswith("HTTP 500")
    assert len(receiver.received) == MAX_ATTEMPTS


def test_the_back_off_doubles_after_each_failed_attempt(settings):
    settings.INFERIA_NOTIFY_RETRY_BASE_S = 30.0
    assert [retry_delay_s(n) for n in (1, 2, 3, 4)] == [30.0, 60.0, 120.0, 240.0]
