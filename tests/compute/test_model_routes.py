"""Model routes through the REST API: one served name split over deployments by weight, with fallbacks. Route and
deployment names share the organisation's namespace (409 both ways), targets stay inside the tenant, weights are
bounded whole numbers, and every change is audited."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.compute.models import ModelRoute, ModelRouteTarget
from apps.compute.route_services import FALLBACKS_MAX, SPLIT_TARGETS_MAX, WEIGHT_MAX
from tests.factories import ComputePoolFactory, ModelDeploymentFactory

ROUTES = "/api/model-routes/"


@pytest.fixture
def client(owner, as_user):
    return as_user(owner)


@pytest.fixture
def pool(org):
    return ComputePoolFactory(organization=org, provider__name="sim", name="sim-pool", max_nodes=8)


@pytest.fixture
def stable(org, pool):
    return ModelDeploymentFactory(organization=org, pool=pool, name="chat v1", served_model_name="chat-v1")


@pytest.fixture
def canary(org, pool):
    return ModelDeploymentFactory(organization=org, pool=pool, name="chat v2", served_model_name="chat-v2")


def route_body(org, **fields):
    return {
        "organization": org.pk,
        "name": "chat",
        "splits": [{"deployment": "chat-v1", "weight": 90}, {"deployment": "chat-v2", "weight": 10}],
        **fields,
    }


def test_it_creates_a_canary_split_with_a_fallback_and_audits_it(org, client, stable, canary):
    response = client.post(ROUTES, route_body(org, fallbacks=["chat-v1"]), format="json")

    assert response.status_code == 201, response.data
    assert [(s["deployment"], s["weight"]) for s in response.data["splits"]] == [("chat-v1", 90), ("chat-v2", 10)]
    assert [f["deployment_id"] for f in response.data["fallbacks"]] == [stable.pk]
    route = ModelRoute.objects.get()
    assert route.targets.filter(role=ModelRouteTarget.Role.FALLBACK).count() == 1
    event = AuditEvent.objects.get(action="model_route.create")
    assert event.changes["name"]["after"] == "chat"


def test_it_changes_weights_at_run_time_and_audits_before_and_after(org, client, stable, canary):
    created = client.post(ROUTES, route_body(org), format="json").data

    response = client.patch(
        f"{ROUTES}{created['id']}/",
        {"splits": [{"deployment": "chat-v1", "weight": 50}, {"deployment": "chat-v2", "weight": 50}]},
        format="json",
    )

    assert response.status_code == 200, response.data
    assert [s["weight"] for s in response.data["splits"]] == [50, 50]
    change = AuditEvent.objects.get(action="model_route.update").changes["splits"]
    assert [s["weight"] for s in change["before"]] == [90, 10]
    assert [s["weight"] for s in change["after"]] == [50, 50]


def test_deleting_a_route_leaves_its_deployments_and_is_audited(org, client, stable, canary):
    created = client.post(ROUTES, route_body(org), format="json").data

    response = client.delete(f"{ROUTES}{created['id']}/")

    assert response.status_code == 204
    assert not ModelRoute.objects.exists()
    assert not ModelRouteTarget.objects.exists()
    assert stable.__class__.objects.filter(pk__in=[stable.pk, canary.pk]).count() == 2
    assert AuditEvent.objects.filter(action="model_route.delete").exists()


def test_a_route_under_a_deployments_served_name_is_a_409_naming_it(org, client, stable, canary):
    response = client.post(ROUTES, route_body(org, name="chat-v1"), format="json")

    assert response.status_code == 409, response.data
    assert f"deployment 'chat v1' (id {stable.pk})" in response.data["detail"]
    assert not ModelRoute.objects.exists()


def test_renaming_a_route_onto_a_served_name_is_a_409(org, client, stable, canary):
    created = client.post(ROUTES, route_body(org), format="json").data

    response = client.patch(f"{ROUTES}{created['id']}/", {"name": "chat-v2"}, format="json")

    assert response.status_code == 409
    assert ModelRoute.objects.get().name == "chat"


def test_a_second_route_of_the_same_name_is_a_409(org, client, stable, canary):
    client.post(ROUTES, route_body(org), format="json")

    response = client.post(ROUTES, route_body(org), format="json")

    assert response.status_code == 409
    assert ModelRoute.objects.count() == 1


def test_a_deployment_created_or_renamed_onto_a_route_name_is_a_409(org, client, pool, stable, canary):
    route = client.post(ROUTES, route_body(org), format="json").data
    body = {
        "organization": org.pk,
        "pool": pool.pk,
        "name": "clash",
        "model_id": "org/m",
        "served_model_name": "chat",
    }

    created = client.post("/api/deployments/", body, format="json")
    renamed = client.patch(f"/api/deployments/{canary.pk}/", {"served_model_name": "chat"}, format="json")

    assert created.status_code == 409, created.data
    assert created.data["detail"] == f"This organisation already routes 'chat': model route (id {route['id']})"
    assert renamed.status_code == 409
    canary.refresh_from_db()
    assert canary.served_model_name == "chat-v2"


def test_another_organisations_deployment_is_not_a_target(org, other_org, client, stable):
    other_pool = ComputePoolFactory(organization=other_org, provider__name="theirs", name="theirs")
    ModelDeploymentFactory(organization=other_org, pool=other_pool, name="theirs", served_model_name="secret-model")

    response = client.post(ROUTES, route_body(org, splits=[{"deployment": "secret-model", "weight": 1}]), format="json")
    fallback = client.post(ROUTES, route_body(org, name="chat2", fallbacks=["secret-model"]), format="json")

    assert response.status_code == 400
    assert "no deployment this organisation may use serves 'secret-model'" in str(response.data)
    assert fallback.status_code == 400
    assert not ModelRoute.objects.exists()


def test_an_outsider_neither_sees_nor_changes_a_route(org, client, outsider, as_user, stable, canary):
    created = client.post(ROUTES, route_body(org), format="json").data
    stranger = as_user(outsider)

    listed = stranger.get(ROUTES).data
    assert (listed["results"] if isinstance(listed, dict) else listed) == []
    assert stranger.get(f"{ROUTES}{created['id']}/").status_code == 404
    assert stranger.patch(f"{ROUTES}{created['id']}/", {"name": "x"}, format="json").status_code == 404
    assert stranger.delete(f"{ROUTES}{created['id']}/").status_code == 404
    assert stranger.post(ROUTES, route_body(org), format="json").status_code in (400, 403)


def test_a_viewer_sees_routes_but_cannot_change_them(org, client, viewer, as_user, stable, canary):
    created = client.post(ROUTES, route_body(org), format="json").data
    reader = as_user(viewer)

    assert reader.get(f"{ROUTES}{created['id']}/").status_code == 200
    assert reader.patch(f"{ROUTES}{created['id']}/", {"name": "x"}, format="json").status_code == 403
    assert reader.post(ROUTES, route_body(org, name="other"), format="json").status_code == 403


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ([{"deployment": "chat-v1", "weight": -1}], "greater than or equal to 0"),
        ([{"deployment": "chat-v1", "weight": 1.5}], "valid integer"),
        ([{"deployment": "chat-v1", "weight": "ten"}], "valid integer"),
        ([{"deployment": "chat-v1", "weight": WEIGHT_MAX + 1}], "less than or equal to"),
        ([{"deployment": "chat-v1", "weight": 0}, {"deployment": "chat-v2", "weight": 0}], "at least one weight"),
        ([], "at least 1"),
        ([{"deployment": "chat-v1", "weight": 1}] * (SPLIT_TARGETS_MAX + 1), "no more than"),
        ([{"deployment": "chat-v1", "weight": 1}, {"deployment": "chat-v1", "weight": 2}], "appears once"),
    ],
)
def test_weights_and_targets_are_validated(org, client, stable, canary, splits, message):
    response = client.post(ROUTES, route_body(org, splits=splits), format="json")

    assert response.status_code == 400
    assert message in str(response.data)
    assert not ModelRoute.objects.exists()


def test_fallbacks_are_bounded(org, client, stable, canary):
    response = client.post(ROUTES, route_body(org, fallbacks=["chat-v1"] * (FALLBACKS_MAX + 1)), format="json")

    assert response.status_code == 400
    assert not ModelRoute.objects.exists()


def test_a_zero_weight_target_is_kept_for_a_later_change(org, client, stable, canary):
    response = client.post(
        ROUTES,
        route_body(org, splits=[{"deployment": "chat-v1", "weight": 100}, {"deployment": "chat-v2", "weight": 0}]),
        format="json",
    )

    assert response.status_code == 201
    assert [s["weight"] for s in response.data["splits"]] == [100, 0]
