"""A Celery worker SIGKILLed in the middle of a replica's provisioning or teardown, end to end: real worker and beat
processes (`inferia start worker|beat`) against the test database and broker, inferia-sim engines started by the
simulator adapter, a fresh worker started after the kill, and the outcome counted in processes and pidfiles.

Nothing is mocked, but the kill is placed: a provisioning run spends milliseconds between starting an engine and
recording it, so the test holds the worker at that point the way a stalled disk would (a FIFO where the adapter
writes its pidfile, so the write blocks) and kills it there. A teardown waits for the engine to exit, so an engine
that ignores SIGTERM (here: stopped with SIGSTOP, as one hung in a driver call) holds the worker inside it.

A SIGKILLed worker's message stays unacknowledged in Redis for the broker's visibility timeout (an hour), so what
rescues the replica is the beat's reconcile once the claim's lease runs out; the test shortens the lease through
INFERIA_PROVISION_TIME_LIMIT_SECONDS and INFERIA_TASK_REQUEUE_SECONDS.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from django.db import connection

from apps.compute.adapters.process import REPLICA_ENV, ProcessRecord, process_replica_stop, replica_key, replicas_dir
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from tests.e2e.conftest import E2E_COMPUTE_ENV
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ProviderFactory
from tests.kit.ports import port_reserve
from tests.kit.processes import TestProcess, child_database_url, http_ok, inferia_start
from tests.kit.waiting import NotYet, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

State = ModelDeployment.State
RState = Replica.State
RECOVERY_DEADLINE_S = 60.0  # from the kill to the outcome, on a loaded two-core machine
# Provisioning runs may take 15 s, so a dead worker's claim is taken over after 22 s; a lost teardown is enqueued
# again after 12 s (longer than a live one waits for its engine to exit).
PLANE_ENV = {
    **E2E_COMPUTE_ENV,
    "INFERIA_PROVISION_TIME_LIMIT_SECONDS": "15",
    "INFERIA_TASK_REQUEUE_SECONDS": "12",
    "INFERIA_WORKER_CONCURRENCY": "2",
    "INFERIA_UPSTREAM_ALLOW_PRIVATE": "true",
}


def committed(work: Callable[[], Any]) -> Any:
    """Run `work` on a database connection of its own, outside the test's transaction, so that the worker sees
    what it writes."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def engines(replica: Replica) -> list[psutil.Process]:
    """Live processes carrying the replica's marker, whoever started them and whether recorded or not."""
    key = replica_key(replica)
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(REPLICA_ENV) == key and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def engines_serving(model: str) -> list[psutil.Process]:
    """Live inferia-sim processes whose command line serves `model`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        argv = proc.info["cmdline"] or []
        if "inferia_sim" in argv and model in argv and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def pidfile_records(model: str) -> list[ProcessRecord]:
    """The pidfiles under the data directory whose engine serves `model`."""
    records = []
    for path in replicas_dir().glob("replica-*.json"):
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            record = ProcessRecord(**json.loads(path.read_text()))
            if model in record.argv:
                records.append(record)
    return records


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def sigterm_pending(pid: int) -> bool:
    """Whether SIGTERM was sent to `pid` and not yet delivered (it is stopped)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("ShdPnd:", "SigPnd:")) and int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
            return True
    return False


class ComputePlane:
    """Worker, beat and web processes of this test's own, and what it created, all removed afterwards."""

    def __init__(self) -> None:
        self.env = {**os.environ, **PLANE_ENV, "DATABASE_URL": child_database_url()}
        self.env.pop("INFERIA_SIM_MODEL", None)
        self.processes: list[TestProcess] = []
        self.organization: Any = None
        self.deployments: list[ModelDeployment] = []
        self.hung_paths: list[Path] = []
        self.name = f"killed-{uuid.uuid4().hex[:8]}"

    def start(self, role: str, *args: str) -> TestProcess:
        process = inferia_start(["start", role, *args], env=self.env)
        self.processes.append(process)
        return process

    def start_worker(self) -> TestProcess:
        worker = self.start("worker")
        self.wait(lambda: any(" ready." in line for line in worker.lines), timeout_s=120, what="the worker")
        return worker

    def kill(self, worker: TestProcess) -> None:
        """SIGKILL the worker's process group (the Celery main process and its pool), as the OOM killer or a
        lost node would: no shutdown, no acknowledgement, no cleanup."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.popen.wait(timeout=10)
        self.wait(lambda: not worker.session_processes(), timeout_s=10, what="the killed worker's pool gone")

    def wait(self, condition: Callable[[], bool], *, timeout_s: float, what: str) -> float:
        """Poll `condition` until it holds; how long it took. Fails with the processes' output after `timeout_s`."""
        start = time.monotonic()
        try:
            eventually(condition, timeout=timeout_s, interval=0.2, what=what)
        except NotYet as error:
            raise AssertionError(f"{error}\n{self.output()}") from None
        return time.monotonic() - start

    def output(self) -> str:
        return "\n".join(f"--- {' '.join(p.args[1:3])}\n" + "\n".join(p.lines[-60:]) for p in self.processes)

    def deploy(self, *, replicas: int) -> ModelDeployment:
        """A simulator deployment wanting `replicas`, committed; nothing enqueued yet (no worker runs)."""
        from apps.orgs.bootstrap_services import organization_ensure

        def create() -> ModelDeployment:
            if self.organization is None:
                self.organization, _ = organization_ensure(slug=self.name, name="Killed worker")
            org = self.organization
            suffix = f"{self.name}-{len(self.deployments)}"
            provider = ProviderFactory(organization=org, name=suffix, config={"sim": {}})
            return ModelDeploymentFactory(
                organization=org,
                pool=ComputePoolFactory(organization=org, provider=provider, name=suffix, max_nodes=4),
                name=suffix,
                model_id="inferia/sim-model",
                served_model_name=suffix,
                engine="inferia-sim",
                min_replicas=replicas,
                max_replicas=replicas,
                desired_replicas=replicas,
            )

        deployment = committed(create)
        self.deployments.append(deployment)
        return deployment

    def inference_key(self) -> str:
        from apps.keys.services import api_key_create

        issued = committed(
            lambda: api_key_create(organization=self.organization, name="inference", scopes=["inference"])
        )
        return str(issued.secret)

    def hang_pidfile_write(self, replica: Replica) -> None:
        """Make the adapter's pidfile write block: it writes `<key>.tmp` first, and opening a FIFO for writing waits
        for a reader that never comes."""
        path = replicas_dir() / f"{replica_key(replica)}.tmp"
        os.mkfifo(path)
        self.hung_paths.append(path)

    def unhang(self) -> None:
        for path in self.hung_paths:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.returncode is None:
                with contextlib.suppress(Exception):
                    process.interrupt(timeout=30)
            process.kill_everything()
        self.unhang()
        replicas = list(Replica.objects.filter(deployment__in=self.deployments))
        for replica in replicas:  # whatever a failed test left running, recorded or not
            with contextlib.suppress(psutil.Error):
                for proc in engines(replica):
                    proc.kill()
            process_replica_stop(replica_key(replica), forget_log=True)
        if self.organization is not None:
            committed(self._delete_organization)
        broker_discard_everything()

    def _delete_organization(self) -> None:
        ModelDeployment.objects.filter(organization=self.organization).delete()
        ComputePool.objects.filter(organization=self.organization).delete()
        Provider.objects.filter(organization=self.organization).delete()
        self.organization.delete()


def broker_discard_everything() -> None:
    """Empty the queues and forget unacknowledged messages (a killed worker's would come back in an hour)."""
    from celery_app import app

    app.control.purge()
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.client.delete(channel.unacked_key, channel.unacked_index_key)


@pytest.fixture
def compute_plane(platform_stopped):
    """A compute plane of this test's own, with the package's platform stopped (its worker would otherwise take these
    tasks: the check below makes sure)."""
    from celery_app import app

    assert app.control.ping(timeout=1.0) == [], "another Celery worker consumes this broker"
    broker_discard_everything()
    plane = ComputePlane()
    try:
        yield plane
    finally:
        plane.close()


def test_a_worker_killed_after_starting_engines_it_never_recorded_leaves_one_engine_per_replica(compute_plane):
    plane = compute_plane
    deployment = plane.deploy(replicas=2)
    key = plane.inference_key()
    web_port = port_reserve()
    web = plane.start("web", "--port", str(web_port))
    from apps.compute.reconcile import deployment_reconcile_run

    plan = committed(lambda: deployment_reconcile_run(deployment_id=deployment.pk))
    replicas = list(Replica.objects.filter(pk__in=plan.provision).order_by("pk"))
    assert len(replicas) == 2
    for replica in replicas:
        plane.hang_pidfile_write(replica)
    plane.start("beat")
    worker = plane.start("worker")

    def engines_started_unrecorded() -> bool:
        states = set(Replica.objects.filter(pk__in=plan.provision).values_list("state", flat=True))
        return states == {RState.PROVISIONING} and all(len(engines(replica)) == 1 for replica in replicas)

    plane.wait(engines_started_unrecorded, timeout_s=90, what="both engines started, their pidfiles hanging")
    orphans = {replica.pk: engines(replica)[0] for replica in replicas}
    assert worker.returncode is None
    plane.kill(worker)
    killed_at = time.monotonic()

    # What the dead worker left: engines that nothing records, and claims that nobody holds.
    for replica in replicas:
        replica.refresh_from_db()
        assert replica.state == RState.PROVISIONING
        assert replica.provider_handle == {}
        assert not (replicas_dir() / f"{replica_key(replica)}.json").exists()
    assert all(alive(orphan) for orphan in orphans.values())
    assert len(engines_serving(deployment.served_model_name)) == 2
    assert "Hard time limit" not in worker.output  # killed inside the run, not after its time limit ended it

    plane.unhang()  # the disk recovers
    plane.start_worker()

    def ready() -> bool:
        deployment.refresh_from_db()
        return deployment.state == State.READY and all(
            state == RState.READY
            for state in Replica.objects.filter(deployment=deployment).values_list("state", flat=True)
        )

    plane.wait(ready, timeout_s=RECOVERY_DEADLINE_S - (time.monotonic() - killed_at), what="the deployment READY")
    recovered_after = time.monotonic() - killed_at

    # The same two replicas, provisioned once more each: no replacement, no duplicate.
    assert sorted(Replica.objects.filter(deployment=deployment).values_list("pk", flat=True)) == plan.provision
    serving = engines_serving(deployment.served_model_name)
    records = pidfile_records(deployment.served_model_name)
    assert len(serving) == 2
    assert len(records) == 2
    for replica in replicas:
        replica.refresh_from_db()
        (engine,) = engines(replica)
        record = ProcessRecord(**json.loads((replicas_dir() / f"{replica_key(replica)}.json").read_text()))
        assert engine.pid == record.pid == replica.provider_handle["pid"]
        assert replica.endpoint.endswith(f":{record.port}")
        assert not alive(orphans[replica.pk])  # found by its marker and killed, not left serving beside it
    assert {proc.pid for proc in serving} == {record.pid for record in records}
    assert recovered_after < RECOVERY_DEADLINE_S

    # And it serves through the gateway.
    plane.wait(lambda: http_ok(f"http://127.0.0.1:{web_port}/healthz"), timeout_s=60, what="the web process")
    assert web.returncode is None

    def answered() -> bool:
        response = requests.post(
            f"http://127.0.0.1:{web_port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": deployment.served_model_name, "messages": [{"role": "user", "content": "Hi"}]},
            timeout=30,
        )
        return response.status_code == 200 and bool(response.json()["choices"][0]["message"]["content"])

    plane.wait(answered, timeout_s=30, what="a chat completion through the gateway")


def test_a_worker_killed_while_an_engine_ignores_its_teardown_is_followed_by_one_that_leaves_no_process(
    compute_plane,
):
    plane = compute_plane
    deployment = plane.deploy(replicas=1)
    from apps.compute.reconcile import deployment_reconcile_run
    from apps.compute.services import deployment_stop

    plane.start("beat")
    worker = plane.start("worker")
    committed(lambda: deployment_reconcile_run(deployment_id=deployment.pk))
    plane.wait(
        lambda: ModelDeployment.objects.filter(pk=deployment.pk, state=State.READY).exists(),
        timeout_s=90,
        what="the deployment READY",
    )
    replica = Replica.objects.get(deployment=deployment, state=RState.READY)
    (engine,) = engines(replica)
    assert engine.pid == replica.provider_handle["pid"]
    engine.suspend()  # SIGSTOP: SIGTERM stays pending, so the teardown waits for an exit that does not come

    committed(lambda: deployment_stop(deployment=deployment, actor=None, reason="killed worker test"))

    def tearing_down() -> bool:
        replica.refresh_from_db()
        return replica.state == RState.STOPPING and sigterm_pending(engine.pid)

    plane.wait(tearing_down, timeout_s=60, what="the worker's teardown waiting for the engine")
    assert worker.returncode is None
    plane.kill(worker)
    killed_at = time.monotonic()

    replica.refresh_from_db()
    assert replica.state == RState.STOPPING
    assert alive(engine)  # the dead worker left it running

    plane.start_worker()

    def stopped() -> bool:
        deployment.refresh_from_db()
        return deployment.state == State.STOPPED

    plane.wait(stopped, timeout_s=RECOVERY_DEADLINE_S - (time.monotonic() - killed_at), what="the deployment STOPPED")
    replica.refresh_from_db()
    assert replica.state == RState.STOPPED
    assert not alive(engine)
    assert engines(replica) == []
    assert engines_serving(deployment.served_model_name) == []
    assert pidfile_records(deployment.served_model_name) == []
    assert not (replicas_dir() / f"{replica_key(replica)}.log").exists()
