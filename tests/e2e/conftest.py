"""The platform's real processes for the end-to-end tests: `inferia start all` on a reserved port, against
pytest-django's test database, with committed data for it to serve.

A test that needs the platform asks for `platform` (started on first use, then shared); a test that runs a Celery
worker of its own asks for `platform_stopped`, so that no other worker takes its tasks. Each test gets what it needs
whatever the order the tests run in."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

from tests.kit.ports import port_reserve
from tests.kit.processes import TestProcess, child_database_url, http_ok, inferia_start

E2E_MODEL = "demo-chat"


@dataclass(frozen=True)
class Platform:
    """A running Inferia: where it answers, a key with the inference scope and the model it may use."""

    base_url: str
    key: str
    model: str
    process: TestProcess
    manage_key: str = ""
    organization_id: int = 0


def _delete_organization(organization) -> None:
    """Remove what the fixture committed; pools and providers are PROTECTed, so deployments go first."""
    from apps.compute.models import ComputePool, ModelDeployment, Provider

    ModelDeployment.objects.filter(organization=organization).delete()
    ComputePool.objects.filter(organization=organization).delete()
    Provider.objects.filter(organization=organization).delete()
    organization.delete()


def _ready_replicas(deployment_id: int) -> list[str]:
    from apps.compute.models import Replica

    return list(
        Replica.objects.filter(deployment_id=deployment_id, state=Replica.State.READY).values_list(
            "endpoint", flat=True
        )
    )


# Compute-plane timings for the e2e tests: quick checks and short cool-downs so that self-healing and autoscaling
# show within seconds (the deadlines asserted keep fair margins over them).
E2E_COMPUTE_ENV = {
    "INFERIA_HEALTH_INTERVAL_SECONDS": "1.0",
    "INFERIA_RECONCILE_INTERVAL_SECONDS": "2.0",
    "INFERIA_AUTOSCALE_INTERVAL_SECONDS": "1.0",
    "INFERIA_AUTOSCALE_WAITING_PER_REPLICA": "2",
    "INFERIA_AUTOSCALE_UP_COOLDOWN_SECONDS": "3",
    "INFERIA_AUTOSCALE_DOWN_COOLDOWN_SECONDS": "6",
    # A crash loop's back-off in seconds, not minutes (tests/e2e/test_crash_loop.py).
    "INFERIA_REPLICA_BACKOFF_SECONDS": "0.5",
    "INFERIA_REPLICA_BACKOFF_MAX_SECONDS": "2",
    # A replica out of routing stops 2 s after it last ran a request (tests/e2e/test_rollout.py).
    "INFERIA_DRAIN_GRACE_SECONDS": "2",
}


class PlatformSupervisor:
    """Starts `inferia start all` when a test needs it and stops it when a test needs it gone, on the data committed
    once for the package (outside any test transaction, so that the child processes see it)."""

    def __init__(self, django_db_blocker) -> None:
        from apps.compute.services import simulator_deployment_ensure
        from apps.keys.services import api_key_create
        from apps.orgs.bootstrap_services import organization_ensure

        self.blocker = django_db_blocker
        with django_db_blocker.unblock():
            self.organization, _ = organization_ensure(slug="e2e", name="End to end")
            self.key = api_key_create(organization=self.organization, name="e2e inference", scopes=["inference"])
            self.manage = api_key_create(organization=self.organization, name="e2e manage", scopes=["manage", "read"])
            self.deployment, _ = simulator_deployment_ensure(
                organization=self.organization, served_model_name=E2E_MODEL, model_id="inferia/sim-model"
            )
        self.platform: Platform | None = None

    def running(self) -> Platform:
        if self.platform is not None and self.platform.process.returncode is None:
            return self.platform
        port = port_reserve()
        env = {
            **os.environ,
            **E2E_COMPUTE_ENV,
            "DATABASE_URL": child_database_url(),
            "INFERIA_UPSTREAM_ALLOW_PRIVATE": "true",
            "INFERIA_WORKER_CONCURRENCY": "4",
        }
        env.pop("INFERIA_SIM_MODEL", None)
        process = inferia_start(["start", "all", "--port", str(port)], env=env)
        base_url = f"http://127.0.0.1:{port}"
        try:
            with self.blocker.unblock():
                # An engine that answers: after a restart, rows of the previous run's replicas may still say READY.
                process.wait_until(
                    lambda: any(http_ok(f"{url}/health") for url in _ready_replicas(self.deployment.pk)),
                    what="the worker-provisioned replica",
                )
            process.wait_http(f"{base_url}/healthz")
        except BaseException:
            process.kill_everything()
            raise
        self.platform = Platform(
            base_url=base_url,
            key=self.key.secret,
            model=E2E_MODEL,
            process=process,
            manage_key=self.manage.secret,
            organization_id=self.organization.pk,
        )
        return self.platform

    def stop(self) -> None:
        """Stop the platform if it runs: Ctrl-C, and it must exit cleanly and leave no process behind."""
        if self.platform is None:
            return
        process, self.platform = self.platform.process, None
        code = process.interrupt() if process.returncode is None else process.returncode
        leftovers = process.session_processes()
        replica_processes = _replica_processes()
        process.kill_everything()
        assert code == 0, process.output[-5000:]
        assert not leftovers, leftovers
        assert not replica_processes, replica_processes  # `start all` stopping tears the replicas down

    def close(self) -> None:
        try:
            self.stop()
        finally:
            with self.blocker.unblock():
                _delete_organization(self.organization)


@pytest.fixture(scope="package")
def platform_supervisor(django_db_setup, django_db_blocker):
    supervisor = PlatformSupervisor(django_db_blocker)
    yield supervisor
    supervisor.close()


@pytest.fixture
def platform(platform_supervisor) -> Platform:
    """A running `inferia start all` (web, Celery worker and beat) with a demo-like deployment that its worker
    provisioned through the simulator adapter; shared by the tests that run while it is up."""
    return platform_supervisor.running()


@pytest.fixture
def platform_stopped(platform_supervisor) -> None:
    """No platform running: its worker shares the broker and database, and would take the test's own tasks."""
    platform_supervisor.stop()


def _replica_processes() -> list[str]:
    """Replica processes still tracked by pidfiles under the test data directory."""
    from apps.compute.adapters.process import ProcessRecord, replicas_dir

    alive = []
    for path in replicas_dir().glob("replica-*.json"):
        record = ProcessRecord(**json.loads(path.read_text()))
        if record.process() is not None:
            alive.append(f"{record.key} pid {record.pid}")
    return alive
