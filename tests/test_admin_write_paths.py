"""Django admin is no way around the services: every registered model admin, its inlines and its actions (bulk
delete included) is either closed to the platform superadmin or proven, by a real POST through the admin as a
browser would send it, to write the service's audit event.

The walk reads `admin.site._registry`, so a newly registered admin fails here until each of its open write paths
has a case in `WRITE_CASES` that proves it audited."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib import admin
from django.test import RequestFactory
from guardian.admin import GuardedModelAdmin

from apps.audit.models import AuditEvent
from apps.compute import inventory_services
from apps.keys.cache import principal_cache_key
from apps.keys.services import api_key_create
from apps.orgs import services as org_services
from apps.orgs.models import Membership, User
from apps.policies.prompts.services import prompt_template_create
from apps.policies.services import guardrail_profile_create, policy_create
from apps.rbac.services import role_create
from tests.admin_forms import page_form


@dataclass
class World:
    """One of each thing the admin shows, made through the services, in one organisation."""

    org: Any
    roles: dict[str, Any]
    objects: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.objects[name]


@pytest.fixture
def world(org, roles, root):
    person = User.objects.create_user("ada@example.com", "correct horse battery")
    org_services.membership_create(organization=org, user=person, role=roles["member"], actor=None)
    provider = inventory_services.provider_create(organization=org, name="sim", kind="simulator", actor=None)
    # Room for the deployment the admin adds beside the one already there (a pool enforces its max_nodes).
    pool = inventory_services.pool_create(organization=org, provider=provider, name="gpus", actor=None, max_nodes=4)
    objects = {
        "org": org,
        "user": person,
        "membership": Membership.objects.get(user=person),
        "team": org_services.team_create(organization=org, name="Search", slug="search", actor=None),
        "spare_team": org_services.team_create(organization=org, name="Spare", slug="spare", actor=None),
        "spare_provider": inventory_services.provider_create(
            organization=org, name="idle", kind="simulator", actor=None
        ),
        "spare_pool": inventory_services.pool_create(organization=org, provider=provider, name="idle", actor=None),
        "role": role_create(
            organization=org, slug="auditor", name="Auditor", permissions=["audit.view_auditevent"], actor=None
        ),
        "key": api_key_create(organization=org, name="ci", scopes=["inference"]).key,
        "invitation": org_services.invitation_create(
            organization=org, email="bob@example.com", role=roles["viewer"], actor=None
        )[0],
        "provider": provider,
        "pool": pool,
        "deployment": inventory_services.deployment_create(
            organization=org, pool=pool, name="chat", model_id="m", served_model_name="chat", actor=None
        ),
        "profile": guardrail_profile_create(organization=org, name="strict", actor=None),
        "template": prompt_template_create(
            organization=org, name="greeting", messages=[{"role": "user", "content": "hi"}], actor=None
        ).template,
    }
    objects["policy"] = policy_create(organization=org, team=objects["team"], actor=None)
    return World(org=org, roles=roles, objects=objects)


@dataclass(frozen=True)
class Case:
    """One write path of one admin and the audit event that proves it went through the service."""

    audit_action: str
    target: str = ""  # the world's object the path acts on (empty: an add)
    changes: Callable[[World], dict[str, Any]] = lambda world: {}


def _url(label: str) -> str:
    app_label, model = label.lower().split(".")
    return f"/admin/{app_label}/{model}/"


def _post(client: Any, label: str, path: str, case: Case, world: World) -> Any:
    """Send what a browser sends for `path` ("add", "change", "delete", "inline:<prefix>:<add|change|delete>" on
    the target's page, or "action:<name>" on the changelist)."""
    changelist = _url(label)
    target = world[case.target] if case.target else None
    if path == "add":
        data = {**page_form(client, f"{changelist}add/"), **case.changes(world), "_save": "Save"}
        return client.post(f"{changelist}add/", data)
    if path == "delete":
        return client.post(f"{changelist}{target.pk}/delete/", {"post": "yes"})
    if path.startswith("action:"):
        selected = {"action": path.removeprefix("action:"), "_selected_action": [target.pk], "post": "yes"}
        return client.post(changelist, selected)
    url = f"{changelist}{target.pk}/change/"
    data = {**page_form(client, url), "_save": "Save"}
    if path.startswith("inline:"):
        _, prefix, verb = path.split(":")
        rows = int(data[f"{prefix}-TOTAL_FORMS"])
        if verb == "add":
            data[f"{prefix}-TOTAL_FORMS"] = str(rows + 1)
            data.update({f"{prefix}-{rows}-{name}": value for name, value in case.changes(world).items()})
        elif verb == "change":
            data.update({f"{prefix}-0-{name}": value for name, value in case.changes(world).items()})
        else:
            data[f"{prefix}-0-DELETE"] = "on"
        return client.post(url, data)
    return client.post(url, {**data, **case.changes(world)})


def _deletes(noun: str, target: str) -> dict[str, Case]:
    return {
        "delete": Case(f"{noun}.delete", target),
        "action:delete_selected": Case(f"{noun}.delete", target),
    }


WRITE_CASES: dict[str, dict[str, Case]] = {
    "orgs.User": {"change": Case("user.update", "user", lambda w: {"full_name": "Ada L."})},
    "orgs.Organization": {
        "add": Case("org.create", changes=lambda w: {"name": "Initech", "slug": "initech"}),
        "change": Case("org.update", "org", lambda w: {"require_2fa": "on"}),
        "inline:teams:add": Case("team.create", "org", lambda w: {"name": "Ops", "slug": "ops"}),
        "inline:teams:change": Case("team.update", "org", lambda w: {"name": "Search and Rescue"}),
        "inline:teams:delete": Case("team.delete", "org"),
    },
    "orgs.Team": {
        "add": Case("team.create", changes=lambda w: {"organization": w.org.pk, "name": "Ops", "slug": "ops"}),
        "change": Case("team.update", "team", lambda w: {"name": "Search and Rescue"}),
        **_deletes("team", "spare_team"),
    },
    "orgs.Membership": {
        "change": Case("membership.update", "membership", lambda w: {"role": w.roles["viewer"].pk}),
        **_deletes("membership", "membership"),
    },
    "orgs.Invitation": {"action:revoke_selected": Case("invitation.revoke", "invitation")},
    "rbac.Role": {
        "add": Case(
            "role.create",
            changes=lambda w: {"organization": w.org.pk, "slug": "reader", "name": "Reader", "permissions": []},
        ),
        "change": Case("role.update", "role", lambda w: {"name": "Chief auditor"}),
        **_deletes("role", "role"),
    },
    "keys.ApiKey": {
        "change": Case("key.update", "key", lambda w: {"name": "ci-renamed"}),
        "action:revoke_selected": Case("key.revoke", "key"),
    },
    "policies.Policy": {
        "add": Case("policy.create", changes=lambda w: {"organization": w.org.pk, "requests_per_minute": "60"}),
        "change": Case("policy.update", "policy", lambda w: {"requests_per_minute": "30"}),
        **_deletes("policy", "policy"),
    },
    "policies.GuardrailProfile": {
        "add": Case("guardrail_profile.create", changes=lambda w: {"organization": w.org.pk, "name": "lenient"}),
        "change": Case("guardrail_profile.update", "profile", lambda w: {"description": "no PII"}),
        **_deletes("guardrail_profile", "profile"),
    },
    "policies.PromptTemplate": {
        "add": Case(
            "prompt_template.create",
            changes=lambda w: {
                "organization": w.org.pk,
                "name": "farewell",
                "messages": '[{"role": "user", "content": "bye"}]',
            },
        ),
        "change": Case("prompt_template.update", "template", lambda w: {"description": "says hi"}),
        **_deletes("prompt_template", "template"),
    },
    "compute.Provider": {
        "add": Case(
            "provider.create", changes=lambda w: {"organization": w.org.pk, "name": "sim2", "kind": "simulator"}
        ),
        "change": Case("provider.update", "provider", lambda w: {"name": "simulated"}),
        **_deletes("provider", "spare_provider"),
    },
    "compute.ComputePool": {
        "add": Case(
            "pool.create", changes=lambda w: {"organization": w.org.pk, "provider": w["provider"].pk, "name": "more"}
        ),
        "change": Case("pool.update", "pool", lambda w: {"region": "eu-west"}),
        **_deletes("pool", "spare_pool"),
    },
    "compute.ModelDeployment": {
        "add": Case(
            "deployment.create",
            changes=lambda w: {
                "organization": w.org.pk,
                "pool": w["pool"].pk,
                "name": "embed",
                "model_id": "e",
                "served_model_name": "embed",
            },
        ),
        "change": Case("deployment.update", "deployment", lambda w: {"price_input_per_mtok_micros": "7"}),
        **_deletes("deployment", "deployment"),
    },
}


def _open_paths(model_admin: admin.ModelAdmin, request: Any) -> set[str]:
    """What the superadmin may write through this admin: its own add/change/delete, its actions and its inlines'."""
    paths = {
        verb
        for verb, allowed in (
            ("add", model_admin.has_add_permission(request)),
            ("change", model_admin.has_change_permission(request)),
            ("delete", model_admin.has_delete_permission(request)),
        )
        if allowed
    }
    paths |= {f"action:{name}" for name in model_admin.get_actions(request)}
    for inline in model_admin.get_inline_instances(request):
        formset = inline.get_formset(request)
        prefix = formset.get_default_prefix()
        for verb in ("add", "change", "delete"):
            allowed = getattr(inline, f"has_{verb}_permission")(request, None)
            if allowed and (verb != "delete" or inline.can_delete):
                paths.add(f"inline:{prefix}:{verb}")
    return paths


REGISTERED = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


@pytest.mark.parametrize(
    "model_admin", [admin_ for _, admin_ in REGISTERED], ids=[model._meta.label for model, _ in REGISTERED]
)
def test_every_open_write_path_of_every_admin_is_proven_to_audit(model_admin, root):
    request = RequestFactory().get("/admin/")
    request.user = root

    open_paths = _open_paths(model_admin, request)

    assert open_paths <= set(WRITE_CASES.get(model_admin.model._meta.label, {})), (
        "open in admin without a case proving it goes through an audited service"
    )
    # django-guardian's object-permission pages would grant rights without the audited grant service.
    assert not isinstance(model_admin, GuardedModelAdmin)


@pytest.mark.parametrize(
    ("label", "path"), [(label, path) for label, cases in WRITE_CASES.items() for path in cases], ids=str
)
def test_each_write_path_goes_through_its_service(client, root, world, label, path):
    case = WRITE_CASES[label][path]
    before = AuditEvent.objects.filter(action=case.audit_action, actor_user_id=root.pk).count()

    response = _post(client, label, path, case, world)

    assert response.status_code == 302, response.content.decode()[:3000]
    after = AuditEvent.objects.filter(action=case.audit_action, actor_user_id=root.pk).count()
    assert after == before + 1


def test_a_key_changed_in_admin_leaves_every_gateways_cache(
    client, root, world, redis_cache, django_capture_on_commit_callbacks
):
    key = world["key"]
    redis_cache.set(principal_cache_key(key.secret_hash), "cached principal")

    with django_capture_on_commit_callbacks(execute=True):
        _post(client, "keys.ApiKey", "change", WRITE_CASES["keys.ApiKey"]["change"], world)

    assert redis_cache.get(principal_cache_key(key.secret_hash)) is None
