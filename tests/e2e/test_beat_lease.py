"""Two `inferia start beat` processes against one Redis send the schedule once, and the one standing by takes over
when the sender is killed."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from celery_app.beat_lock import BEAT_LOCK_KEY, LEASE_S
from tests.kit.processes import TestProcess, child_database_url, inferia_start
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FLUSH_PERIOD_S = 2.0  # the usage flush's period in the schedule: the task counted here
QUEUE = "usage"


@pytest.fixture
def broker() -> redis.Redis:
    client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    client.delete(QUEUE)
    yield client
    client.delete(QUEUE)


def _beat(tmp_path, name: str) -> TestProcess:
    data = tmp_path / name
    data.mkdir()
    env = {**os.environ, "DATABASE_URL": child_database_url(), "INFERIA_DATA_DIR": str(data)}
    return inferia_start(["start", "beat"], env=env)


def _flushes(broker: redis.Redis) -> int:
    return sum(b"usage_flush" in message for message in broker.lrange(QUEUE, 0, -1))


@pytest.mark.django_db(transaction=True)
def test_two_beats_send_each_periodic_task_once_and_the_standby_takes_over(tmp_path, broker):
    sync = redis.Redis.from_url(os.environ["INFERIA_CACHE_REDIS_URL"])
    sync.delete(BEAT_LOCK_KEY)
    beats = [_beat(tmp_path, "a"), _beat(tmp_path, "b")]
    try:
        # Each beat has decided: it sends the schedule, or it stands by (celery's own "beat: Starting..." comes
        # before either, so it does not count).
        eventually(
            lambda: all(any("sends the schedule" in line or "stands by" in line for line in b.lines) for b in beats),
            timeout=60,
            what="each beat sending or standing by",
        )
        senders = [b for b in beats if any("sends the schedule" in line for line in b.lines)]
        assert len(senders) == 1, [b.lines[-5:] for b in beats]
        standby = next(b for b in beats if b is not senders[0])
        start, window = _flushes(broker), 12.0
        time.sleep(window)
        sent = _flushes(broker) - start
        assert window / FLUSH_PERIOD_S - 2 <= sent <= window / FLUSH_PERIOD_S + 1  # one beat's worth, not two

        os.killpg(senders[0].pid, signal.SIGKILL)  # no clean stop: the lease has to run out
        senders[0].popen.wait(timeout=10)
        killed_at = time.monotonic()
        eventually(
            lambda: any("sends the schedule" in line for line in standby.lines),
            timeout=LEASE_S + 15,
            what="the standby beat taking over",
        )
        assert time.monotonic() - killed_at <= LEASE_S + 10
        before = _flushes(broker)
        eventually(lambda: _flushes(broker) >= before + 2, timeout=10, what="the schedule sent again")
    finally:
        for beat in beats:
            beat.kill_everything()
