"""The isolation walk: every REST endpoint (found by walking the URL resolver, not listed by hand) and every admin
changelist, called by a person or key of another organisation, must answer 401/403/404 (or an empty, clean list)
and never show, change or create anything of the organisation under attack.

Endpoints added by later issues join the walk by being routed under `/api/` or registered in the admin."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from apps.keys.services import api_key_create
from apps.orgs.models import Organization, User
from apps.rbac.restrict import TENANT_MODELS
from tests.tenancy import tenant_build

MARKER = "acme"  # every row of the attacked organisation carries it in a name, slug, e-mail or model name


@dataclass(frozen=True)
class Route:
    path: str  # with `{id}` where a detail route takes the object's key
    methods: tuple[str, ...]
    model: type | None
    detail: bool
    action_names: tuple[str, ...]

    def __str__(self) -> str:
        return f"{'/'.join(self.methods)} {self.path}"


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def api_routes() -> list[Route]:
    """Every route under /api/, with the HTTP methods its view answers."""
    routes = []
    for raw, pattern in _walk(get_resolver().url_patterns):
        if not raw.startswith("api/") or "(?P<format>" in raw or "<drf_format_suffix" in raw:
            continue
        path = "/" + raw.replace("^", "").replace("$", "")
        detail = "(?P<" in path
        if detail:
            path = path[: path.index("(?P<")] + "{id}" + path[path.index(")") + 1 :]
        callback = pattern.callback
        actions = getattr(callback, "actions", None)
        cls = getattr(callback, "cls", None)
        if actions:
            methods = tuple(sorted(m.upper() for m in actions))
            names = tuple(actions[m] for m in sorted(actions))
        else:
            methods, names = ("GET",), ()
        routes.append(Route(path, methods, getattr(cls, "model", None), detail, names))
    return routes


ROUTES = api_routes()


def test_the_walk_finds_the_api():
    paths = {route.path for route in ROUTES}
    for expected in ["/api/keys/", "/api/keys/{id}/rotate/", "/api/deployments/{id}/", "/api/audit-events/export/"]:
        assert expected in paths
    assert len(ROUTES) >= 30


@pytest.fixture
def world(org, other_org, owner, outsider, roles):
    acme = tenant_build(org=org, owner=owner, tag=MARKER)
    tenant_build(org=other_org, owner=outsider, tag="globex")
    return acme


def _attackers(other_org, outsider):
    """A person, a user's key and a service key of the other organisation, all as strong as they get there."""
    person = APIClient()
    person.force_login(outsider)
    user_key = api_key_create(organization=other_org, name="atk", scopes=["read", "manage"], owner=outsider)
    service_key = api_key_create(organization=other_org, name="svc", scopes=["read", "manage"])
    clients = {"person": person}
    for name, issued in [("user key", user_key), ("service key", service_key)]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
        clients[name] = client
    return clients


def _target_id(route: Route, acme) -> str:
    rows = {row._meta.label: row for row in acme.rows().values()}
    if route.model is None or route.model._meta.label not in rows:
        pytest.fail(f"{route}: add a row of this model to tests/tenancy.py so the walk can attack it")
    row = rows[route.model._meta.label]
    return str(row.seq if route.model._meta.label == "audit.AuditEvent" else row.pk)


def _state(acme) -> str:
    """Everything about the attacked organisation's rows, to compare before and after an attack."""
    snapshot = {}
    for name, row in acme.rows().items():
        fresh = type(row)._default_manager.filter(pk=row.pk).values().first()
        snapshot[name] = fresh
    snapshot["counts"] = {
        label: apps.get_model(label)._default_manager.filter(**{path.org: acme.org.pk}).count()
        for label, path in TENANT_MODELS.items()
    }
    return json.dumps(snapshot, default=str, sort_keys=True)


def _payload(acme) -> dict:
    """A create body aimed at the attacked organisation, with every reference it might need."""
    return {
        "organization": acme.org.pk,
        "name": "intruder",
        "slug": "intruder",
        "email": "intruder@globex.test",
        "role": acme.role.pk,
        "team": acme.team.pk,
        "teams": [acme.team.pk],
        "scopes": ["read", "manage"],
        "kind": "simulator",
        "provider": acme.provider.pk,
        "pool": acme.pool.pk,
        "model_id": "x",
        "served_model_name": "intruder",
        "permissions": [],
        "actions": ["change"],
        "user": "outsider@globex.test",
        "organizations": [acme.org.pk],
        "token": "x",
        "reason": "x",
        "grace_seconds": 0,
    }


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_another_organisation_can_neither_see_nor_touch(route, world, other_org, outsider):
    acme = world
    before = _state(acme)
    for who, client in _attackers(other_org, outsider).items():
        for method in route.methods:
            url = route.path.replace("{id}", _target_id(route, acme)) if route.detail else route.path
            response = client.generic(
                method, url, json.dumps(_payload(acme)) if method != "GET" else "", content_type="application/json"
            )
            body = b"".join(response.streaming_content) if response.streaming else response.content
            where = f"{who}: {method} {url} -> {response.status_code}"
            if route.detail:
                assert response.status_code in (401, 403, 404), where
            else:
                assert response.status_code in (200, 400, 401, 403, 404, 405), where
            assert MARKER.encode() not in body.lower(), f"{where} leaks: {body[:300]!r}"
    assert _state(acme) == before, f"{route} changed the attacked organisation"


def admin_changelists() -> list[str]:
    return [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist") for model in admin.site._registry
    ]


def _staff(outsider, *, with_global_permissions: bool) -> User:
    """The outsider made staff; at worst also given every model permission globally, the biggest mistake an
    operator could make short of making them superadmin."""
    User.objects.filter(pk=outsider.pk).update(is_staff=True)
    user = User.objects.get(pk=outsider.pk)
    if with_global_permissions:
        user.user_permissions.set(Permission.objects.all())
    return User.objects.get(pk=outsider.pk)


@pytest.mark.parametrize("with_global_permissions", [False, True], ids=["staff", "staff+global-perms"])
@pytest.mark.parametrize("url", admin_changelists())
def test_admin_changelists_show_nothing_to_another_organisation(url, with_global_permissions, world, outsider, client):
    client.force_login(_staff(outsider, with_global_permissions=with_global_permissions))
    response = client.get(url)
    assert response.status_code in (200, 302, 403), f"{url} -> {response.status_code}"
    assert MARKER.encode() not in response.content.lower(), f"{url} leaks"


@pytest.mark.parametrize(
    "name",
    [
        "organization",
        "team",
        "role",
        "provider",
        "pool",
        "deployment",
        "replica",
        "key",
        "event",
        "usage",
        "membership",
        "invitation",
    ],
)
def test_admin_object_pages_of_another_organisation_are_out_of_reach(name, world, outsider, client):
    client.force_login(_staff(outsider, with_global_permissions=True))
    row = world.rows()[name]
    for view in ("change", "delete", "history"):
        url = reverse(f"admin:{row._meta.app_label}_{row._meta.model_name}_{view}", args=[row.pk])
        response = client.get(url, follow=True)
        assert MARKER.encode() not in response.content.lower(), f"{url} leaks"
    assert type(row)._default_manager.filter(pk=row.pk).exists()


def test_a_foreign_filter_value_reads_like_an_unknown_one(world, other_org, outsider):
    client = _attackers(other_org, outsider)["person"]
    foreign = client.get(f"/api/deployments/?organization={world.org.pk}")
    unknown = client.get(f"/api/deployments/?organization={Organization.objects.order_by('-pk').first().pk + 1000}")
    assert (foreign.status_code, foreign.data["count"]) == (unknown.status_code, unknown.data["count"]) == (200, 0)
