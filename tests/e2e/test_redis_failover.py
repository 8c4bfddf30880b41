"""Inferia through a Redis failover: a master, its replica and three sentinels of this test's own (real
`redis-server` and `redis-sentinel` processes), a web process, a worker and a beat that know Redis only as
`redis+sentinel://...`. The master is killed during streaming load: /v1 answers 503 for a few seconds, then serves
again from the same web process, and every request that was answered has exactly one usage record in PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from tests.kit.ports import _bindable
from tests.kit.processes import TestProcess, child_database_url, inferia_start, sim_start, web_start
from tests.kit.waiting import NotYet, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "failover-chat"
MASTER_NAME = "inferia-failover"
# Ports of the Redis processes this test starts (outside the ports other tests reserve).
REDIS_PORTS = range(6500, 6550)
THREADS = 6
LOAD_BEFORE_KILL_S = 3.0
# Sentinel declares the master down after DOWN_AFTER_MS, then elects a leader and promotes the replica.
DOWN_AFTER_MS = 1000
OUTAGE_BOUND_S = 15.0
SERVED_AFTER_S = 3.0


def _free_ports(count: int) -> list[int]:
    ports = [port for port in REDIS_PORTS if _bindable(port)][:count]
    if len(ports) < count:
        pytest.skip(f"fewer than {count} free ports in {REDIS_PORTS}")
    return ports


def _answers(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


class SentinelGroup:
    """A master, one replica and three sentinels watching them (quorum 2), each in a directory of the test's."""

    def __init__(self, directory: Path) -> None:
        self.master_port, self.replica_port, *self.sentinel_ports = _free_ports(5)
        self.processes: list[TestProcess] = []
        self.master = self._server(directory, self.master_port)
        self.replica = self._server(directory, self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for port in self.sentinel_ports:
            config = directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            )
            process = TestProcess(["redis-sentinel", str(config)], port=port, name=f"sentinel-{port}")
            self.processes.append(process)
            process.wait_until(lambda port=port: _answers(port), timeout=10, what="redis-sentinel answering PING")

    def _server(self, directory: Path, port: int, *flags: str) -> TestProcess:
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
        args += ["--save", "", "--appendonly", "no", "--databases", "16", *flags]
        process = TestProcess(args, port=port, name=f"redis-{port}")
        self.processes.append(process)
        process.wait_until(lambda: _answers(port), timeout=10, what="redis-server answering PING")
        return process

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def master_address(self) -> tuple[str, int]:
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=1, decode_responses=True) as client:
            host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        return str(host), int(port)

    def ready(self) -> bool:
        """Every sentinel knows the replica and the two other sentinels, and the replica is in sync."""
        try:
            for port in self.sentinel_ports:
                with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as client:
                    master = client.sentinel_master(MASTER_NAME)
                    if int(master["num-other-sentinels"]) < 2 or int(master["num-slaves"]) < 1:
                        return False
            with redis.Redis(port=self.replica_port, socket_timeout=1) as replica:
                return replica.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def close(self) -> None:
        for process in reversed(self.processes):
            process.kill_everything()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    if shutil.which("redis-sentinel") is None or shutil.which("redis-server") is None:
        pytest.skip("redis-sentinel is not installed (scripts/ensure-services.sh installs Debian's redis-sentinel)")
    group = SentinelGroup(tmp_path)
    try:
        eventually(group.ready, timeout=30, interval=0.2, what="sentinels that know the replica and each other")
        yield group
    finally:
        group.close()


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int
    request_id: str
    complete: bool  # a 200 whose stream reached its end


def _chat(base: str, secret: str) -> Answer:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 8, "stream": True}
    started = time.monotonic()
    try:
        with requests.post(
            f"{base}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=60,
            stream=True,
        ) as answer:
            content = answer.content
            if answer.status_code == 503:
                error = answer.json()["error"]  # OpenAI's shape
                assert set(error) == {"message", "type", "param", "code"}, error
            complete = answer.status_code == 200 and content.rstrip().endswith(b"data: [DONE]")
            return Answer(started, time.monotonic(), answer.status_code, answer.headers["x-request-id"], complete)
    except requests.ConnectionError:
        return Answer(started, time.monotonic(), 0, "", False)


def test_a_master_killed_under_streaming_load_costs_seconds_of_503_and_no_usage(
    transactional_db, sentinels: SentinelGroup
):
    from apps.keys.services import api_key_create
    from apps.policies.services import policy_create
    from apps.usage.models import UsageRecord
    from tests.factories import OrganizationFactory, deployment_serving

    env = {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "REDIS_URL": sentinels.url,
        # Every purpose on the Sentinel-watched master: the test suite's own per-purpose URLs stay out of it.
        "CELERY_BROKER_URL": "",
        "INFERIA_CACHE_REDIS_URL": "",
        "INFERIA_CHANNELS_REDIS_URL": "",
        "INFERIA_UPSTREAM_ALLOW_PRIVATE": "true",
    }
    processes: list[TestProcess] = []
    try:
        processes.append(sim := sim_start("--itl-ms", "20", models=(MODEL,)))
        processes.append(web := web_start(env["DATABASE_URL"], extra_env=env))
        for role in ("worker", "beat"):
            data = f"{env.get('INFERIA_DATA_DIR', '/tmp')}/failover-{uuid.uuid4().hex[:6]}"
            processes.append(inferia_start(["start", role], env={**env, "INFERIA_DATA_DIR": data}))

        organization = OrganizationFactory(slug=f"failover-{uuid.uuid4().hex[:6]}")
        deployment_serving(organization, MODEL, [sim.url])
        issued = api_key_create(organization=organization, name="load", scopes=["inference"])
        # Limits and a budget: every request needs Redis to be admitted.
        policy_create(
            actor=None,
            organization=organization,
            api_key=issued.key,
            requests_per_minute=100_000,
            tokens_per_day=100_000_000,
        )
        eventually(lambda: _chat(web.url, issued.secret).complete, timeout=30, what=f"{web.url} serving {MODEL}")
        old_master = sentinels.master_address()

        answers: list[Answer] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                answers.append(_chat(web.url, issued.secret))

        threads = [threading.Thread(target=load) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(LOAD_BEFORE_KILL_S)
            killed_at = time.monotonic()
            sentinels.master.kill()
            eventually(lambda: sentinels.master_address() != old_master, timeout=30, interval=0.2, what="a new master")
            promoted_at = time.monotonic()

            def served_again_for_a_while() -> bool:
                recent = [a for a in answers if a.started > promoted_at and a.complete]
                return bool(recent) and time.monotonic() - min(a.ended for a in recent) > SERVED_AFTER_S

            eventually(served_again_for_a_while, timeout=60, interval=0.2, what="serving again after the failover")
        finally:
            stop.set()
            for thread in threads:
                thread.join()

        web.assert_running()  # the same web process serves again: no restart
        assert sentinels.master_address() == ("127.0.0.1", sentinels.replica_port)
        refused = [a for a in answers if a.status == 503]
        outage_s = (max(a.ended for a in refused) - min(a.started for a in refused)) if refused else 0.0
        unexpected = [a for a in answers if a.status not in (200, 503)]
        served = [a for a in answers if a.complete]
        print(
            f"failover: {len(answers)} requests, {len(served)} served, {len(refused)} answered 503 over {outage_s:.2f}s"
        )
        assert not unexpected, [(a.status, a.request_id) for a in unexpected[:5]]
        assert outage_s < OUTAGE_BOUND_S
        assert any(a.started > killed_at for a in served)

        # Every request served, before, during and after the failover, has exactly one usage record.
        ids = [a.request_id for a in served]
        assert len(set(ids)) == len(ids)

        def recorded() -> int:
            return UsageRecord.objects.filter(request_id__in=ids).count()

        with contextlib.suppress(NotYet):
            eventually(lambda: recorded() == len(ids), timeout=90, interval=1, what="every served request's record")
        lost = len(ids) - recorded()
        print(f"failover: {lost} usage events lost")
        assert lost == 0
    finally:
        for process in reversed(processes):
            process.kill_everything()


def test_the_cache_the_channel_layer_and_the_broker_follow_the_master_through_a_failover(sentinels: SentinelGroup):
    import asyncio

    import kombu
    from channels_redis.core import RedisChannelLayer
    from django.conf import settings
    from django.core.cache.backends.redis import RedisCache

    from inferia_runtime.redis_clients import async_pool_from_url, sync_pool_from_url
    from inferia_runtime.redis_urls import (
        celery_broker_url,
        celery_transport_options,
        channels_host,
        redis_db_url,
    )

    counters = redis.Redis(connection_pool=sync_pool_from_url(redis_db_url(sentinels.url, 1), socket_timeout=1))
    cache = RedisCache([redis_db_url(sentinels.url, 1)], settings.CACHES["default"])
    layer = RedisChannelLayer(hosts=[channels_host(redis_db_url(sentinels.url, 2), socket_timeout=5)])
    broker_url = redis_db_url(sentinels.url, 0)
    broker = kombu.Connection(celery_broker_url(broker_url), transport_options=celery_transport_options(broker_url))

    def use_everything(round_: str) -> None:
        counters.incr(f"counter-{round_}")
        cache.set(f"cached-{round_}", round_)
        assert cache.get(f"cached-{round_}") == round_

        async def asynchronous() -> None:
            client = aioredis_client()
            assert await client.incr(f"async-{round_}") >= 1  # more when an earlier try failed further on
            await client.aclose()
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "hello", "round": round_})
            assert (await asyncio.wait_for(layer.receive(channel), 10))["round"] == round_
            await layer.flush()

        def aioredis_client():
            import redis.asyncio as aioredis

            return aioredis.Redis(connection_pool=async_pool_from_url(redis_db_url(sentinels.url, 1), socket_timeout=1))

        asyncio.run(asynchronous())
        queue = broker.SimpleQueue(f"failover-{round_}")
        queue.put({"round": round_})
        assert queue.get(timeout=10).payload == {"round": round_}
        queue.close()

    def master_holds(key: str, port: int) -> bool:
        with redis.Redis(port=port, db=1, socket_timeout=1) as direct:
            return bool(direct.exists(key))

    try:
        use_everything("before")
        assert master_holds("counter-before", sentinels.master_port)
        sentinels.master.kill()
        eventually(
            lambda: sentinels.master_address() == ("127.0.0.1", sentinels.replica_port),
            timeout=30,
            interval=0.2,
            what="the replica promoted",
        )

        def after() -> bool:
            try:
                use_everything("after")
            except (redis.RedisError, OSError, kombu.exceptions.KombuError):
                return False
            return True

        # The same clients, with no restart, reach the new master.
        eventually(after, timeout=30, interval=0.5, what="every client using the new master")
        assert master_holds("counter-after", sentinels.replica_port)
        assert counters.get("counter-before") == b"1"  # replicated before the master died
    finally:
        broker.release()
        counters.close()
