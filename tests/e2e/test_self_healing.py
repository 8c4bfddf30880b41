"""Self-healing and autoscaling end to end: the real web process (uvicorn), Celery worker and beat of `inferia start
all` (the package's `platform` fixture), deployments made through the REST API, replicas that are inferia-sim
processes the worker provisions through the simulator adapter, and streaming load through the gateway."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests
from openai import OpenAI

from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

HEAL_DEADLINE_S = 15.0  # the promise: out of routing and replaced within this


@dataclass
class Load:
    """Streaming chat completions from a few threads until stopped, sorted by how they ended."""

    base_url: str
    key: str
    model: str
    threads: int = 4
    max_tokens: int = 20
    completed: int = 0
    cut_mid_stream: int = 0
    failed_before_streaming: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        client = OpenAI(base_url=f"{self.base_url}/v1", api_key=self.key, max_retries=0, timeout=30)
        while not self._stop.is_set():
            started = False
            try:
                stream = client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": "Tell me a story"}],
                    max_tokens=self.max_tokens,
                    stream=True,
                )
                for _chunk in stream:
                    started = True
                with self._lock:
                    self.completed += 1
            except Exception as error:
                with self._lock:
                    if started:
                        self.cut_mid_stream += 1  # allowed: its replica died under it
                    else:
                        self.failed_before_streaming.append(repr(error))

    def start(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)


class Api:
    """The management REST API with the e2e organisation's manage key."""

    def __init__(self, platform) -> None:
        self.base = f"{platform.base_url}/api"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {platform.manage_key}"
        self.org = platform.organization_id

    def post(self, path: str, body: dict) -> dict:
        response = self.session.post(self.base + path, json=body, timeout=30)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def get(self, path: str) -> dict:
        response = self.session.get(self.base + path, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def deploy(self, name: str, *, sim: dict, min_replicas: int, max_replicas: int, replicas: int) -> dict:
        provider = self.post(
            "/providers/", {"organization": self.org, "name": name, "kind": "simulator", "config": {"sim": sim}}
        )
        pool = self.post(
            "/pools/", {"organization": self.org, "provider": provider["id"], "name": name, "max_nodes": 4}
        )
        return self.post(
            "/deployments/",
            {
                "organization": self.org,
                "pool": pool["id"],
                "name": name,
                "model_id": "inferia/sim-model",
                "served_model_name": name,
                "engine": "inferia-sim",
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
                "desired_replicas": replicas,
            },
        )

    def replicas(self, deployment_id: int, state: str | None = None) -> list[dict]:
        query = f"/replicas/?deployment={deployment_id}&page_size=100" + (f"&state={state}" if state else "")
        return self.get(query)["results"]

    def stop(self, deployment_id: int) -> None:
        self.post(f"/deployments/{deployment_id}/stop/", {"reason": "test over"})
        wait_for(lambda: self.get(f"/deployments/{deployment_id}/")["state"] == "stopped", timeout_s=60)


def wait_for(condition, *, timeout_s: float, what: str = "condition") -> float:
    """`eventually(condition)`; how long it took."""
    start = time.monotonic()
    eventually(condition, timeout=timeout_s, interval=0.2, what=what)
    return time.monotonic() - start


def test_a_killed_replica_leaves_routing_and_is_replaced_without_failing_requests(platform, django_db_blocker):
    api = Api(platform)
    deployment = api.deploy("heal-chat", sim={"ttft_ms": 20, "itl_ms": 20}, min_replicas=2, max_replicas=2, replicas=2)
    wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 2, timeout_s=60, what="2 READY replicas")
    assert api.get(f"/deployments/{deployment['id']}/")["state"] == "ready"
    load = Load(platform.base_url, platform.key, "heal-chat").start()
    try:
        time.sleep(2)
        from apps.compute.models import Replica

        with django_db_blocker.unblock():
            victim = Replica.objects.filter(deployment_id=deployment["id"], state=Replica.State.READY).first()
        os.killpg(victim.provider_handle["pid"], signal.SIGKILL)
        killed_at = time.monotonic()

        def healed() -> bool:
            ready = {replica["id"] for replica in api.replicas(deployment["id"], "ready")}
            return victim.pk not in ready and len(ready) == 2

        wait_for(healed, timeout_s=HEAL_DEADLINE_S, what="a replacement READY and the dead one out of routing")
        healed_after = time.monotonic() - killed_at
        time.sleep(2)  # the load keeps running on the healed deployment
    finally:
        load.stop()

    assert healed_after < HEAL_DEADLINE_S
    assert load.failed_before_streaming == []
    assert load.completed > 20
    events = api.get(f"/deployments/{deployment['id']}/events/")
    assert any(event["to_state"] == "degraded" and "replacing 1 failed" in event["reason"] for event in events)
    assert events[0]["to_state"] == "ready"
    api.stop(deployment["id"])


def test_a_queue_scales_the_deployment_up_and_idleness_back_down_after_the_cool_down(platform):
    api = Api(platform)
    # One request at a time per replica, slow tokens: concurrent requests wait in the engine's queue.
    sim = {"max_num_seqs": 1, "ttft_ms": 200, "itl_ms": 30}
    deployment = api.deploy("scale-chat", sim=sim, min_replicas=1, max_replicas=2, replicas=1)
    wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 1, timeout_s=60, what="1 READY replica")

    load = Load(platform.base_url, platform.key, "scale-chat", threads=6, max_tokens=10).start()
    desired = lambda: api.get(f"/deployments/{deployment['id']}/")["desired_replicas"]  # noqa: E731
    try:
        wait_for(lambda: desired() == 2, timeout_s=40, what="scale up decided")
        scaled_up_seen = time.monotonic()  # at most one poll after the decision
        wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 2, timeout_s=40, what="scaled up to 2")
    finally:
        load.stop()
    assert load.failed_before_streaming == []

    wait_for(lambda: desired() == 1, timeout_s=60, what="scale down")
    # The down cool-down is 6 s from the scale up; allow for the polling interval and one API round trip.
    assert time.monotonic() - scaled_up_seen >= 5
    wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 1, timeout_s=30, what="1 READY replica")
    api.stop(deployment["id"])
