"""The platform's real processes, started once for all end-to-end tests: `inferia start all` on free ports,
against pytest-django's test database, with committed data for them to serve."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

from tests.e2e.running import PlatformProcess, child_database_url, free_port

E2E_MODEL = "demo-chat"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """pytest-django creates the test database only for a session that collected a database test: mark these, so
    the end-to-end package also runs on its own."""
    for item in items:
        if "tests/e2e/" in item.nodeid and item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db)
    # Tests that run a Celery worker and beat of their own (`compute_plane`, test_killed_worker.py) must not share the
    # database and broker with the platform's worker, which would take their tasks: they run before any other
    # end-to-end test, so before the package's platform starts.
    own = [item for item in items if "compute_plane" in getattr(item, "fixturenames", ())]
    if own:
        rest = [item for item in items if "compute_plane" not in getattr(item, "fixturenames", ())]
        first = next((i for i, item in enumerate(rest) if "tests/e2e/" in item.nodeid), len(rest))
        items[:] = [*rest[:first], *own, *rest[first:]]


@dataclass(frozen=True)
class Platform:
    """A running Inferia: where it answers, a key with the inference scope and the model it may use."""

    base_url: str
    key: str
    model: str
    process: PlatformProcess
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
}


@pytest.fixture(scope="package")
def platform(django_db_setup, django_db_blocker):
    """One `inferia start all` (web, Celery worker and beat) for the whole e2e package (all e2e tests live here, so:
    once per session). Its demo-like deployment is provisioned by the worker through the simulator adapter.

    The data is committed (outside any test transaction) so that the child processes see it, and removed
    afterwards so that later tests find the database as they expect."""
    from apps.compute.services import simulator_deployment_ensure
    from apps.keys.services import api_key_create
    from apps.orgs.services import organization_ensure

    port = free_port()
    with django_db_blocker.unblock():
        organization, _ = organization_ensure(slug="e2e", name="End to end")
        issued = api_key_create(organization=organization, name="e2e inference", scopes=["inference"])
        manage = api_key_create(organization=organization, name="e2e manage", scopes=["manage", "read"])
        deployment, _ = simulator_deployment_ensure(
            organization=organization, served_model_name=E2E_MODEL, model_id="inferia/sim-model"
        )
    env = {
        **os.environ,
        **E2E_COMPUTE_ENV,
        "DATABASE_URL": child_database_url(),
        "INFERIA_UPSTREAM_ALLOW_PRIVATE": "true",
        "INFERIA_WORKER_CONCURRENCY": "4",
    }
    env.pop("INFERIA_SIM_MODEL", None)
    process = PlatformProcess(["start", "all", "--port", str(port)], env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        with django_db_blocker.unblock():
            process.wait_until(lambda: bool(_ready_replicas(deployment.pk)), what="the worker-provisioned replica")
        process.wait_http(f"{base_url}/healthz")
        yield Platform(
            base_url=base_url,
            key=issued.secret,
            model=E2E_MODEL,
            process=process,
            manage_key=manage.secret,
            organization_id=organization.pk,
        )
    finally:
        code = process.interrupt() if process.proc.poll() is None else process.proc.returncode
        leftovers = process.session_processes()
        replica_processes = _replica_processes()
        process.kill_everything()
        with django_db_blocker.unblock():
            _delete_organization(organization)
        assert code == 0, process.output[-5000:]
        assert not leftovers, leftovers
        assert not replica_processes, replica_processes  # `start all` stopping tears the replicas down


def _replica_processes() -> list[str]:
    """Replica processes still tracked by pidfiles under the test data directory."""
    from apps.compute.adapters.process import ProcessRecord, replicas_dir

    alive = []
    for path in replicas_dir().glob("replica-*.json"):
        record = ProcessRecord(**json.loads(path.read_text()))
        if record.process() is not None:
            alive.append(f"{record.key} pid {record.pid}")
    return alive
