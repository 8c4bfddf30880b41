"""The deployments pages: tenancy (404 outside, 403 for a viewer's forged POST), create/scale/stop through the
compute services with audit, pinned query counts, and the live WebSocket."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from apps.audit.models import AuditEvent
from apps.compute.models import ModelDeployment, Provider, Replica
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ProviderFactory, ReplicaFactory


@pytest.fixture(autouse=True)
def _no_worker(monkeypatch, redis_cache):
    """Writes ask the worker to reconcile after commit; no worker runs here."""
    monkeypatch.setattr("apps.compute.services.enqueue_reconcile", lambda deployment_id: None)


def _deployment(org, name="chat-small", state=ModelDeployment.State.READY, replicas=1):
    provider = ProviderFactory(organization=org, name=f"sim-{name}")
    pool = ComputePoolFactory(organization=org, provider=provider, name=f"pool-{name}", max_nodes=8)
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name=name, model_id="sim/tiny", state=state,
        min_replicas=1, max_replicas=4, desired_replicas=replicas,
    )  # fmt: skip
    ReplicaFactory.create_batch(
        replicas, deployment=deployment, state=Replica.State.READY, endpoint="http://127.0.0.1:9",
        last_metrics={"running": 2, "waiting": 1, "kv_cache": 0.25},
    )  # fmt: skip
    return deployment


def test_the_list_shows_state_and_load(client, owner, org):
    _deployment(org, replicas=2)
    client.force_login(owner)
    html = client.get("/console/deployments/").content.decode()
    assert 'data-testid="deployment-state">Ready' in html
    assert ">2/2<" in html
    assert '<td class="num">4</td>' in html  # running requests summed over the replicas
    assert 'data-testid="deployment-create-form"' in html


def test_an_outsider_gets_404_on_another_orgs_deployment(client, outsider, org):
    deployment = _deployment(org)
    client.force_login(outsider)
    assert client.get(f"/console/deployments/{deployment.pk}/").status_code == 404
    assert client.post(f"/console/deployments/{deployment.pk}/stop/").status_code == 404
    assert b'data-deployment="chat-small"' not in client.get("/console/deployments/").content


def test_a_viewer_sees_no_buttons_and_a_forged_post_is_refused(client, viewer, org):
    deployment = _deployment(org)
    client.force_login(viewer)
    html = client.get(f"/console/deployments/{deployment.pk}/").content.decode()
    assert 'data-testid="deployment-stop"' not in html
    assert 'data-testid="read-only-note"' in html
    assert 'data-testid="deployment-create-form"' not in client.get("/console/deployments/").content.decode()
    assert client.post(f"/console/deployments/{deployment.pk}/stop/").status_code == 403
    assert client.post(f"/console/deployments/{deployment.pk}/scale/", {"replicas": 2}).status_code == 403
    new = {"organization": org.pk, "pool": "simulator", "served_model_name": "x", "model_id": "sim/x", "replicas": 1}
    assert client.post("/console/deployments/new/", new).status_code == 403
    deployment.refresh_from_db()
    assert deployment.state == ModelDeployment.State.READY
    assert not ModelDeployment.objects.filter(served_model_name="x").exists()


def test_an_owner_scales_and_stops_with_audit(client, owner, org):
    deployment = _deployment(org)
    client.force_login(owner)
    response = client.post(f"/console/deployments/{deployment.pk}/scale/", {"replicas": 3})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 3
    client.post(f"/console/deployments/{deployment.pk}/stop/")
    deployment.refresh_from_db()
    assert deployment.state == ModelDeployment.State.STOPPING
    actions = set(AuditEvent.objects.filter(actor_user_id=owner.pk).values_list("action", flat=True))
    assert {"deployment.scale", "deployment.stop"} <= actions


def test_an_owner_deploys_on_the_simulator(client, owner, org):
    client.force_login(owner)
    new = {"organization": org.pk, "pool": "simulator", "served_model_name": "sim-chat", "model_id": "sim/tiny",
           "replicas": 1}  # fmt: skip
    response = client.post("/console/deployments/new/", new)
    deployment = ModelDeployment.objects.get(organization=org, served_model_name="sim-chat")
    assert response["Location"] == f"/console/deployments/{deployment.pk}/"
    assert AuditEvent.objects.filter(action="deployment.create", actor_user_id=owner.pk).exists()
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="deployment-state-badge" data-state="pending"' in page


def test_an_owner_places_replicas_on_other_pools_of_the_organisation_only(client, owner, org, viewer):
    deployment = _deployment(org)
    cheap = ComputePoolFactory(organization=org, provider=deployment.pool.provider, name="cheap", max_nodes=2)
    theirs = ComputePoolFactory(name="theirs")  # another organisation's
    client.force_login(owner)

    html = client.get(f"/console/deployments/{deployment.pk}/").content.decode()
    response = client.post(
        f"/console/deployments/{deployment.pk}/placement/", {"placement_pools": [cheap.pk, theirs.pk]}
    )

    assert f'data-testid="placement-pool-{cheap.pk}"' in html
    assert f'data-testid="placement-pool-{theirs.pk}"' not in html
    assert response.status_code == 302
    assert list(deployment.placement_pools.all()) == [cheap]
    event = AuditEvent.objects.get(action="deployment.placement")
    assert event.changes["placement_pools"] == {"before": [], "after": [cheap.pk]}
    client.force_login(viewer)
    assert client.post(f"/console/deployments/{deployment.pk}/placement/", {"placement_pools": []}).status_code == 403
    assert list(deployment.placement_pools.all()) == [cheap]


def test_only_pools_with_a_working_adapter_are_offered(client, owner, org):
    ComputePoolFactory(organization=org, provider__kind=Provider.Kind.AKASH, name="akash-pool")
    _deployment(org)
    client.force_login(owner)
    html = client.get("/console/deployments/").content.decode()
    assert "pool-chat-small" in html
    assert "akash-pool" not in html


@pytest.mark.parametrize("count", [1, 12])
def test_list_query_count_is_pinned(client, owner, org, count, django_assert_num_queries):
    for i in range(count):
        _deployment(org, name=f"m{i}", replicas=2)
    client.force_login(owner)
    with django_assert_num_queries(LIST_QUERIES):
        assert client.get("/console/deployments/").status_code == 200


def test_detail_query_count_is_pinned(client, owner, org, django_assert_num_queries):
    deployment = _deployment(org, replicas=3)
    client.force_login(owner)
    with django_assert_num_queries(DETAIL_QUERIES):
        assert client.get(f"/console/deployments/{deployment.pk}/").status_code == 200


# Session, user, two-factor gate; then the list, the organisation scope, may add there, may register an external
# endpoint there, its pools (list); or the deployment, may change, replicas, events, recent errors, latency from its
# rollups, its engines' load over time, the teams its GPUs may be charged to, the pools it may be placed on and those
# it is (detail); and the top bar's organisations.
LIST_QUERIES = 9
DETAIL_QUERIES = 15


def _communicator(user, deployment_id):
    from django.contrib.auth.models import AnonymousUser

    from apps.console.consumers import DeploymentProgressConsumer
    from inferia_site.asgi import application  # noqa: F401 - the real routing, imported for its side effects

    app = DeploymentProgressConsumer.as_asgi()
    communicator = WebsocketCommunicator(app, f"/ws/console/deployments/{deployment_id}/")
    communicator.scope["user"] = user or AnonymousUser()
    communicator.scope["session"] = {"inferia_second_factor": "none"}
    communicator.scope["url_route"] = {"kwargs": {"pk": deployment_id}}
    return communicator


@pytest.mark.django_db(transaction=True)
def test_the_websocket_pushes_state_changes_to_who_may_view(org, owner, outsider):
    from apps.compute.services import deployment_transition
    from apps.console.live import deployment_progress_publish

    deployment = _deployment(org, state=ModelDeployment.State.PENDING, replicas=0)

    async def scenario():
        watcher = _communicator(owner, deployment.pk)
        connected, _ = await watcher.connect()
        assert connected
        first = await watcher.receive_json_from(timeout=5)
        assert first["deployment"]["state"] == "pending"
        await database_sync(deployment_transition)(
            deployment_id=deployment.pk, to_state=ModelDeployment.State.PROVISIONING, reason="test"
        )
        pushed = await watcher.receive_json_from(timeout=5)
        assert pushed["deployment"]["state"] == "provisioning"
        assert pushed["event"] == {"state": "provisioning", "reason": "test"}
        await watcher.disconnect()

        stranger = _communicator(outsider, deployment.pk)
        connected, code = await stranger.connect()
        assert not connected
        assert code == 4404
        anonymous = _communicator(None, deployment.pk)
        connected, code = await anonymous.connect()
        assert not connected
        assert code == 4403

    async_to_sync(scenario)()
    deployment_progress_publish(deployment.pk, {"nobody": "listening"})  # never raises


@pytest.mark.django_db(transaction=True)
def test_the_websocket_pushes_a_replicas_new_state(org, owner):
    from apps.compute.replica_states import replica_transition

    deployment = _deployment(org)
    replica = deployment.replicas.get()

    async def scenario():
        watcher = _communicator(owner, deployment.pk)
        connected, _ = await watcher.connect()
        assert connected
        first = await watcher.receive_json_from(timeout=5)
        assert [row["state"] for row in first["deployment"]["replicas"]] == ["ready"]
        await database_sync(replica_transition)(replica=replica, to_state=Replica.State.UNHEALTHY)
        pushed = await watcher.receive_json_from(timeout=5)
        assert pushed["event"] == {"replica": replica.pk, "state": "unhealthy"}
        assert [row["state"] for row in pushed["deployment"]["replicas"]] == ["unhealthy"]
        await watcher.disconnect()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_the_websocket_pushes_a_rollouts_progress(org, owner):
    from apps.compute.inventory_services import deployment_update
    from apps.compute.rollout import deployment_rollout_pause

    deployment = _deployment(org)

    def roll_then_pause():
        rolled = deployment_update(deployment=deployment, changes={"image": "vllm/vllm-openai:v0.9.0"}, actor=owner)
        deployment_rollout_pause(deployment=rolled, actor=owner)

    async def scenario():
        watcher = _communicator(owner, deployment.pk)
        connected, _ = await watcher.connect()
        assert connected
        first = await watcher.receive_json_from(timeout=5)
        assert first["deployment"]["rollout"]["state"] == ""
        await database_sync(roll_then_pause)()
        started = await watcher.receive_json_from(timeout=5)
        paused = await watcher.receive_json_from(timeout=5)
        assert started["event"] == {"rollout": "progressing", "reason": "image changed"}
        assert paused["event"]["rollout"] == "paused"
        rollout = paused["deployment"]["rollout"]
        assert (rollout["state"], rollout["state_label"]) == ("paused", "Paused")
        assert sum(rollout["new_replicas"].values()) + sum(rollout["old_replicas"].values()) == 1
        await watcher.disconnect()

    async_to_sync(scenario)()


def database_sync(function):
    from channels.db import database_sync_to_async

    return database_sync_to_async(function)


def test_the_list_shows_the_current_organisations_deployments_and_the_platforms_shared_with_it(
    client, owner, org, roles
):
    from tests.factories import MembershipFactory, OrganizationFactory

    demo = OrganizationFactory(name="Demo", slug="demo")
    MembershipFactory(user=owner, organization=demo, role=roles["owner"])
    _deployment(org, name="acme-chat")
    _deployment(demo, name="demo-chat")
    shared = _deployment(None, name="platform-chat")
    shared.shared_with.add(demo)
    client.force_login(owner)

    acme = client.get("/console/deployments/").content.decode()
    assert 'data-deployment="acme-chat"' in acme
    assert 'data-deployment="demo-chat"' not in acme
    assert 'data-deployment="platform-chat"' not in acme

    client.post("/console/organisation/", {"org": "demo", "next": "/console/deployments/"})
    in_demo = client.get("/console/deployments/").content.decode()
    assert 'data-deployment="demo-chat"' in in_demo
    assert 'data-deployment="platform-chat"' in in_demo
    assert 'data-deployment="acme-chat"' not in in_demo


def test_an_empty_list_names_the_organisation_and_the_switcher(client, owner, org, roles):
    from tests.factories import MembershipFactory, OrganizationFactory

    MembershipFactory(user=owner, organization=OrganizationFactory(name="Demo", slug="demo"), role=roles["owner"])
    client.force_login(owner)
    html = client.get("/console/deployments/").content.decode()
    assert "No deployments in Acme yet." in html
    assert "Nothing in Acme: switch organisation in the top bar" in html
