"""Rolling updates end to end: the real web process, Celery worker and beat of `inferia start all` (the package's
`platform` fixture), deployments changed through the REST API, inferia-sim replicas the worker provisions through the
simulator adapter, and continuous streaming load through the gateway while the replicas are replaced."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest
from django.db import connection

from tests.e2e.test_self_healing import Api, Load, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

ROLLOUT_DEADLINE_S = 90.0


def _rollout(api: Api, deployment_id: int) -> dict:
    return api.get(f"/deployments/{deployment_id}/rollout/")


def test_a_rolling_update_under_streaming_load_fails_no_request(platform):
    api = Api(platform)
    deployment = api.deploy("roll-chat", sim={"ttft_ms": 20, "itl_ms": 20}, min_replicas=2, max_replicas=2, replicas=2)
    wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 2, timeout_s=60, what="2 READY replicas")
    old = {replica["id"] for replica in api.replicas(deployment["id"], "ready")}
    load = Load(platform.base_url, platform.key, "roll-chat").start()
    seen_states: set[str] = set()
    try:
        time.sleep(2)
        changed = api.session.patch(
            f"{api.base}/deployments/{deployment['id']}/",
            json={"engine_args": {"max_model_len": 8192}, "image": "vllm/vllm-openai:v0.9.0"},
            timeout=30,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["rollout_state"] == "progressing"
        started = time.monotonic()

        def complete() -> bool:
            progress = _rollout(api, deployment["id"])
            seen_states.update(progress["old_replicas"])
            return progress["state"] == "complete"

        wait_for(complete, timeout_s=ROLLOUT_DEADLINE_S, what="the rollout complete")
        rolled_in = time.monotonic() - started
        time.sleep(2)  # the load keeps running on the new replicas
    finally:
        load.stop()

    ready = api.replicas(deployment["id"], "ready")
    assert len(ready) == 2
    assert not old & {replica["id"] for replica in ready}
    assert load.failed_before_streaming == []
    assert load.cut_mid_stream == 0  # drained, not cut: every stream on an old replica finished
    assert load.completed > 20
    assert "draining" in seen_states
    wait_for(
        lambda: {r["state"] for r in api.replicas(deployment["id"]) if r["id"] in old} == {"stopped"},
        timeout_s=30,
        what="the old replicas stopped",
    )
    print(f"rolled 2 replicas in {rolled_in:.1f}s under load: {load.completed} streams, none failed")
    api.stop(deployment["id"])


def test_a_new_spec_whose_replicas_crash_fails_the_rollout_and_the_old_replicas_keep_serving(
    platform, django_db_blocker
):
    from apps.compute.models import Replica

    api = Api(platform)
    deployment = api.deploy("crash-roll", sim={"ttft_ms": 20, "itl_ms": 20}, min_replicas=2, max_replicas=2, replicas=2)
    wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 2, timeout_s=60, what="2 READY replicas")
    old = {replica["id"] for replica in api.replicas(deployment["id"], "ready")}
    done = threading.Event()
    killed: set[int] = set()

    def crash_new_replicas() -> None:
        """Every replica of the new spec dies as soon as it runs: an engine that crash-loops."""
        try:
            _crash_until_done()
        finally:
            with django_db_blocker.unblock():
                connection.close()  # this thread's own connection, or the test database cannot be dropped

    def _crash_until_done() -> None:
        while not done.is_set():
            with django_db_blocker.unblock():
                fresh = Replica.objects.filter(deployment_id=deployment["id"]).exclude(pk__in=old)
                for replica in fresh.exclude(state__in=("stopping", "stopped", "failed")):
                    pid = (replica.provider_handle or {}).get("pid")
                    if pid and replica.pk not in killed:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pid, signal.SIGKILL)
                            killed.add(replica.pk)
            time.sleep(0.1)

    killer = threading.Thread(target=crash_new_replicas, daemon=True)
    killer.start()
    load = Load(platform.base_url, platform.key, "crash-roll").start()
    try:
        api.session.patch(
            f"{api.base}/deployments/{deployment['id']}/", json={"engine_args": {"max_model_len": 2048}}, timeout=30
        ).raise_for_status()
        wait_for(lambda: _rollout(api, deployment["id"])["state"] == "failed", timeout_s=90, what="the rollout FAILED")
        time.sleep(3)  # the old replicas keep serving the load after the rollout failed
    finally:
        load.stop()
        done.set()
        killer.join(timeout=5)

    current = api.get(f"/deployments/{deployment['id']}/")
    assert current["state"] == "ready"
    assert current["rollout_state"] == "failed"
    assert {replica["id"] for replica in api.replicas(deployment["id"], "ready")} == old
    assert len(killed) >= 3  # INFERIA_ROLLOUT_MAX_FAILURES new replicas crashed
    assert load.failed_before_streaming == []
    assert load.cut_mid_stream == 0

    # Rolling back makes the deployment whole again, on the spec its replicas run: nothing to replace.
    api.post(f"/deployments/{deployment['id']}/rollout/rollback/", {"reason": "crashes"})
    wait_for(lambda: _rollout(api, deployment["id"])["state"] == "complete", timeout_s=30, what="rolled back")
    assert {replica["id"] for replica in api.replicas(deployment["id"], "ready")} == old
    api.stop(deployment["id"])


def test_the_cli_pauses_resumes_and_rolls_back_a_rollout(platform):
    from tests.e2e.test_cli_remote import Cli

    api, cli = Api(platform), Cli(platform.base_url, platform.manage_key)
    # Engines that take 3 s to start: the rollout is still under way when it is paused.
    sim = {"ttft_ms": 20, "itl_ms": 20, "startup_delay": 3.0}
    deployment = api.deploy("cli-roll", sim=sim, min_replicas=2, max_replicas=2, replicas=2)
    wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 2, timeout_s=60, what="2 READY replicas")
    old = {replica["id"] for replica in api.replicas(deployment["id"], "ready")}
    original = api.get(f"/deployments/{deployment['id']}/")["spec_hash"]

    started = cli.json("rollout", "start", "cli-roll", "--engine-args", '{"max_model_len": 1024}')
    assert started["rollout"]["state"] == "progressing"
    assert "rollout: paused" in cli.ok("rollout", "pause", "cli-roll", "--reason", "watching").stdout
    wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 3, timeout_s=30, what="the surge replica READY")
    time.sleep(3)  # paused: no old replica leaves routing, however long it waits
    assert old <= {replica["id"] for replica in api.replicas(deployment["id"], "ready")}
    assert "2 ready" in cli.ok("rollout", "status", "cli-roll").stdout.split("old spec replicas:")[1]

    cli.ok("rollout", "resume", "cli-roll")
    wait_for(lambda: _rollout(api, deployment["id"])["state"] == "complete", timeout_s=60, what="the rollout done")
    assert not old & {replica["id"] for replica in api.replicas(deployment["id"], "ready")}

    rolled_back = cli.json("rollout", "rollback", "cli-roll", "--reason", "worse latency")
    assert rolled_back["deployment"]["spec_hash"] == original
    wait_for(lambda: _rollout(api, deployment["id"])["state"] == "complete", timeout_s=60, what="rolled back")
    assert len(api.replicas(deployment["id"], "ready")) == 2
    assert api.get(f"/deployments/{deployment['id']}/")["engine_args"] == {}
    api.stop(deployment["id"])
