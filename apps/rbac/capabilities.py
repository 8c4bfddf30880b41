"""What people can do, in words: each capability names the Django permissions (`app_label.codename`) it grants.

Roles are stored as permissions (what `.restrict()` and django-guardian check); the console composes and shows them
as capabilities instead of ~100 codenames. Capabilities never share a permission, so a role's capabilities read back
exactly from its permissions; a capability that only makes sense with another (changing keys needs seeing them)
names it in `requires`, and composing adds it. Permissions no capability grants (changing audit rows, platform
user accounts, ...) stay possible through the REST API and show as "advanced" on the roles page."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Capability:
    """One thing a role lets its members do, the permissions that make it, and the capabilities it needs."""

    slug: str
    label: str
    description: str
    permissions: frozenset[str]
    requires: tuple[str, ...] = ()


def _crud(app: str, *models: str, actions: tuple[str, ...] = ("add", "change", "delete")) -> frozenset[str]:
    return frozenset(f"{app}.{action}_{model}" for model in models for action in actions)


CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "view_organization", "See the organisation", "See the organisation, its members, teams, roles and invitations.",
        frozenset({
            "orgs.view_organization", "orgs.view_team", "orgs.view_membership", "orgs.view_invitation",
            "orgs.view_user", "rbac.view_role", "rbac.view_teamgroup",
        }),
    ),
    Capability(
        "manage_members", "Manage members", "Invite people, change members' roles and remove members.",
        _crud("orgs", "membership", "invitation"), requires=("view_organization",),
    ),
    Capability(
        "manage_teams", "Manage teams", "Create and delete teams and choose who is in them.",
        _crud("orgs", "team") | _crud("rbac", "teamgroup"), requires=("view_organization",),
    ),
    Capability(
        "manage_roles", "Manage roles", "Compose, change and delete custom roles.",
        _crud("rbac", "role"), requires=("view_organization",),
    ),
    Capability(
        "manage_organization", "Change organisation settings",
        "Rename the organisation, require two-factor sign-in, keep prompts and answers.",
        frozenset({"orgs.change_organization"}), requires=("view_organization",),
    ),
    Capability(
        "delete_organization", "Delete the organisation", "Delete the organisation and everything it owns.",
        frozenset({"orgs.delete_organization"}), requires=("view_organization",),
    ),
    Capability(
        "view_security", "See sign-in methods", "See members' two-factor devices, recovery codes and SSO identities.",
        _crud("rbac", "totpdevice", "recoverycode", "oidcidentity", actions=("view",)),
    ),
    Capability(
        "view_keys", "See API keys", "See the organisation's API keys (their prefixes, never the secrets).",
        frozenset({"keys.view_apikey"}),
    ),
    Capability(
        "use_keys", "Create API keys", "Create API keys and manage the ones they own.",
        frozenset({"keys.add_apikey"}), requires=("view_keys",),
    ),
    Capability(
        "manage_keys", "Manage all API keys", "Change, rotate and revoke every API key of the organisation.",
        _crud("keys", "apikey", actions=("change", "delete")), requires=("use_keys",),
    ),
    Capability(
        "view_deployments", "See deployments", "See providers, compute pools, deployments and their replicas.",
        _crud("compute", "provider", "computepool", "modeldeployment", "replica", "deploymentevent",
              "deploymentloadsample", "modelroute", "modelroutetarget", actions=("view",)),
    ),
    Capability(
        "deploy_models", "Deploy models",
        "Create, scale, restart and delete model deployments, and split traffic between them.",
        _crud("compute", "modeldeployment", "replica", "deploymentevent", "deploymentloadsample", "modelroute",
              "modelroutetarget"),
        requires=("view_deployments",),
    ),
    Capability(
        "manage_compute", "Manage compute", "Add and change providers (with their credentials) and compute pools.",
        _crud("compute", "provider", "computepool"), requires=("view_deployments",),
    ),
    Capability(
        "view_policies", "See policies", "See limits, budgets, guardrail profiles and prompt templates.",
        _crud("policies", "policy", "guardrailprofile", "prompttemplate", "prompttemplateversion", actions=("view",)),
    ),
    Capability(
        "manage_policies", "Manage policies", "Change rate limits, quotas, budgets and guardrail profiles.",
        _crud("policies", "policy", "guardrailprofile"), requires=("view_policies",),
    ),
    Capability(
        "manage_templates", "Manage prompt templates", "Create prompt templates and publish their versions.",
        _crud("policies", "prompttemplate", "prompttemplateversion"), requires=("view_policies",),
    ),
    Capability(
        "view_knowledge", "See knowledge bases", "See files, vector stores, their ingestion and their chunks.",
        _crud("knowledge", "knowledgefile", "vectorstore", "vectorstorefile", "vectorstorefilebatch", "chunk",
              actions=("view",)),
    ),
    Capability(
        "manage_knowledge", "Manage knowledge bases", "Upload and delete files, and create, fill and delete stores.",
        _crud("knowledge", "knowledgefile", "vectorstore", "vectorstorefile", "vectorstorefilebatch", "chunk"),
        requires=("view_knowledge",),
    ),
    Capability(
        "read_usage", "Read usage", "See usage, costs and the dashboards, and export them.",
        _crud("usage", "usagerecord", "usagerollup", "usagekeyrollup", "usagemodelrollup", "usagemodeldayrollup",
              "usagedeploymentrollup", "gpuusagespan", actions=("view",)),
    ),
    Capability(
        "read_captures", "Read prompts and answers",
        "See the prompts and answers kept with requests, where the organisation keeps them (masked).",
        frozenset({"usage.view_requestcapture"}), requires=("read_usage",),
    ),
    Capability(
        "view_notifications", "See notifications", "See notification channels and what was delivered to them.",
        _crud("notifications", "channel", "delivery", actions=("view",)),
    ),
    Capability(
        "manage_notifications", "Manage notifications",
        "Add, change, test and delete notification channels (webhooks, e-mail, Slack).",
        _crud("notifications", "channel", "delivery"), requires=("view_notifications",),
    ),
    Capability(
        "view_audit", "View the audit log", "Read the audit log and verify its chain.",
        _crud("audit", "auditevent", "auditchainhead", "auditcheckpoint", actions=("view",)),
    ),
)  # fmt: skip

CAPABILITIES_BY_SLUG: dict[str, Capability] = {capability.slug: capability for capability in CAPABILITIES}


def capabilities_closure(slugs: Iterable[str]) -> list[str]:
    """`slugs` with every capability they require, in `CAPABILITIES` order. Raises KeyError for an unknown slug."""
    wanted: set[str] = set()
    pending = list(slugs)
    while pending:
        slug = pending.pop()
        if slug not in wanted:
            wanted.add(slug)
            pending.extend(CAPABILITIES_BY_SLUG[slug].requires)
    return [capability.slug for capability in CAPABILITIES if capability.slug in wanted]


def capability_permissions(slugs: Iterable[str]) -> set[str]:
    """The permission names (`app_label.codename`) that the capabilities `slugs` and those they require grant."""
    return {name for slug in capabilities_closure(slugs) for name in CAPABILITIES_BY_SLUG[slug].permissions}


def capabilities_held(permissions: Iterable[str]) -> tuple[list[str], set[str]]:
    """What a set of permission names amounts to: the capabilities it holds in full (in `CAPABILITIES` order), and
    the permissions left over (held outside any capability, or part of a capability not held in full)."""
    held = set(permissions)
    full = [capability.slug for capability in CAPABILITIES if capability.permissions <= held]
    covered = {name for slug in full for name in CAPABILITIES_BY_SLUG[slug].permissions}
    return full, held - covered
