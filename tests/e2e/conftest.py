"""The platform's real processes, started once for all end-to-end tests: `inferia start all` on free ports,
against pytest-django's test database, with committed data for them to serve."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from tests.e2e.running import PlatformProcess, child_database_url, free_port

E2E_MODEL = "demo-chat"  # what `inferia start all`'s simulated node serves by default


@dataclass(frozen=True)
class Platform:
    """A running Inferia: where it answers, a key with the inference scope and the model it may use."""

    base_url: str
    key: str
    model: str
    process: PlatformProcess


def _delete_organization(organization) -> None:
    """Remove what the fixture committed; pools and providers are PROTECTed, so deployments go first."""
    from apps.compute.models import ComputePool, ModelDeployment, Provider

    ModelDeployment.objects.filter(organization=organization).delete()
    ComputePool.objects.filter(organization=organization).delete()
    Provider.objects.filter(organization=organization).delete()
    organization.delete()


@pytest.fixture(scope="package")
def platform(django_db_setup, django_db_blocker):
    """One `inferia start all` for the whole e2e package (all e2e tests live here, so: once per session).

    The data is committed (outside any test transaction) so that the child processes see it, and removed
    afterwards so that later tests find the database as they expect."""
    from apps.compute.services import replica_record_local_node, simulator_deployment_ensure
    from apps.keys.services import api_key_create
    from apps.orgs.services import organization_ensure

    port, sim_port = free_port(), free_port()
    with django_db_blocker.unblock():
        organization, _ = organization_ensure(slug="e2e", name="End to end")
        issued = api_key_create(organization=organization, name="e2e inference", scopes=["inference"])
        deployment, _ = simulator_deployment_ensure(
            organization=organization, served_model_name=E2E_MODEL, model_id="inferia/sim-model"
        )
        replica_record_local_node(deployment=deployment, endpoint=f"http://127.0.0.1:{sim_port}")
    env = {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "INFERIA_UPSTREAM_ALLOW_PRIVATE": "true",
        "INFERIA_WORKER_CONCURRENCY": "1",
    }
    env.pop("INFERIA_SIM_MODEL", None)
    process = PlatformProcess(["start", "all", "--port", str(port), "--sim-port", str(sim_port)], env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"http://127.0.0.1:{sim_port}/health")
        process.wait_http(f"{base_url}/healthz")
        yield Platform(base_url=base_url, key=issued.secret, model=E2E_MODEL, process=process)
    finally:
        code = process.interrupt() if process.proc.poll() is None else process.proc.returncode
        leftovers = process.session_processes()
        process.kill_everything()
        with django_db_blocker.unblock():
            _delete_organization(organization)
        assert code == 0, process.output[-5000:]
        assert not leftovers, leftovers
