"""The deployment page's engine output panel: rendered from what the worker captured, sent with the live socket's
first snapshot, then appended to as the worker announces new lines, to who may view the deployment only."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from apps.compute.adapters.process import replica_key, replicas_dir
from apps.compute.models import ModelDeployment, Replica
from apps.compute.replica_logs import replica_logs_capture
from apps.console.live import deployment_logs_publish
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ReplicaFactory

SECRET = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


@pytest.fixture
def starting(org, redis_cache):
    """A simulator deployment with one STARTING replica whose output (a file the test writes) was captured."""
    pool = ComputePoolFactory(organization=org, provider__name="sim", name="pool", max_nodes=2)
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="d", model_id="sim/tiny", state=ModelDeployment.State.PROVISIONING
    )
    replica = ReplicaFactory(deployment=deployment, state=Replica.State.STARTING)
    replica.provider_handle = {"key": replica_key(replica)}
    replica.save()
    path = replicas_dir() / f"{replica_key(replica)}.log"
    path.write_text(f"INFO loading weights\nINFO token {SECRET}\n")
    replica_logs_capture(Replica.objects.select_related("deployment__pool__provider").get(pk=replica.pk))
    yield deployment, replica
    path.unlink(missing_ok=True)


def test_the_page_shows_the_captured_output_in_a_live_log_region(client, owner, starting):
    deployment, replica = starting
    client.force_login(owner)

    html = client.get(f"/console/deployments/{deployment.pk}/").content.decode()

    assert 'role="log" aria-live="polite"' in html
    assert f'<span class="log-line" data-replica="{replica.pk}">#{replica.pk} | INFO loading weights' in html
    assert SECRET not in html
    assert "INFO token [redacted]" in html


def _communicator(user, deployment_id):
    from apps.console.consumers import DeploymentProgressConsumer

    communicator = WebsocketCommunicator(
        DeploymentProgressConsumer.as_asgi(), f"/ws/console/deployments/{deployment_id}/"
    )
    communicator.scope["user"] = user
    communicator.scope["session"] = {"inferia_second_factor": "none"}
    communicator.scope["url_route"] = {"kwargs": {"pk": deployment_id}}
    return communicator


@pytest.mark.django_db(transaction=True)
def test_the_socket_sends_captured_output_first_then_new_lines_to_who_may_view(starting, owner, outsider):
    deployment, replica = starting

    async def scenario():
        watcher = _communicator(owner, deployment.pk)
        connected, _ = await watcher.connect()
        assert connected
        first = await watcher.receive_json_from(timeout=5)
        assert first["type"] == "snapshot"
        assert first["logs"] == [
            {"replica": replica.pk, "lines": ["INFO loading weights", "INFO token [redacted]"], "skipped": 0}
        ]
        await database_sync_to_async(deployment_logs_publish)(deployment.pk, replica.pk, ["INFO ready soon"])
        pushed = await watcher.receive_json_from(timeout=5)
        assert pushed == {"type": "logs", "entries": [{"replica": replica.pk, "lines": ["INFO ready soon"],
                                                       "skipped": 0}]}  # fmt: skip
        await watcher.disconnect()

        stranger = _communicator(outsider, deployment.pk)
        connected, code = await stranger.connect()
        assert (connected, code) == (False, 4404)

    async_to_sync(scenario)()
