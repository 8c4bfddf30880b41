"""Administrative writes on the compute inventory, as the REST API and console make them: create, edit and delete
providers, pools and deployments, and share platform deployments. Each records an audit event with a
before/after diff (credentials never appear in it).

Provisioning, scaling and the deployment state machine belong to `apps/compute/services.py` and the worker; the
writes here only change what is desired, never what runs.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import models, transaction

from apps.audit.services import AuditContext, audit_diff, audit_record, audit_snapshot
from apps.compute.models import ComputePool, ModelDeployment, Provider

PROVIDER_FIELDS = ("name", "kind", "config")
POOL_FIELDS = ("name", "provider", "region", "gpu_type", "gpus_per_node", "max_nodes", "cost_per_gpu_hour_micros")
DEPLOYMENT_FIELDS = (
    "name",
    "pool",
    "model_id",
    "served_model_name",
    "engine",
    "engine_args",
    "min_replicas",
    "max_replicas",
    "desired_replicas",
    "price_input_per_mtok_micros",
    "price_output_per_mtok_micros",
    "connect_timeout_s",
    "first_byte_timeout_s",
    "idle_timeout_s",
)


def credentials_encrypt(credentials: dict[str, Any]) -> str:
    """Encrypt provider credentials with the first of INFERIA_FERNET_KEYS (the others still decrypt)."""
    fernet = MultiFernet([Fernet(key.encode()) for key in settings.INFERIA_FERNET_KEYS])
    return fernet.encrypt(json.dumps(credentials).encode()).decode()


_AUDIT_NOUNS = {"provider": "provider", "computepool": "pool", "modeldeployment": "deployment"}


def _kind(obj: models.Model) -> str:
    return _AUDIT_NOUNS[obj._meta.model_name or ""]


def _created(obj: models.Model, fields: tuple[str, ...], actor: Any, context: AuditContext | None) -> None:
    audit_record(
        action=f"{_kind(obj)}.create",
        actor=actor,
        target=obj,
        changes=audit_diff(before=None, after=audit_snapshot(obj, fields)),
        context=context,
    )


def _changed(
    obj: models.Model, changes: dict[str, Any], fields: tuple[str, ...], actor: Any, context: AuditContext | None
) -> None:
    unknown = set(changes) - set(fields)
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    before = audit_snapshot(obj, fields)
    for name, value in changes.items():
        setattr(obj, name, value)
    obj.full_clean(exclude=[f.name for f in obj._meta.fields if f.name not in changes])
    obj.save()
    audit_record(
        action=f"{_kind(obj)}.update",
        actor=actor,
        target=obj,
        changes=audit_diff(before=before, after=audit_snapshot(obj, fields)),
        context=context,
    )


def _deleted(obj: models.Model, fields: tuple[str, ...], actor: Any, context: AuditContext | None) -> None:
    audit_record(
        action=f"{_kind(obj)}.delete",
        actor=actor,
        target=obj,
        changes=audit_diff(before=audit_snapshot(obj, fields), after=None),
        context=context,
    )
    obj.delete()


def _same_owner(child_org: int | None, parent: models.Model, what: str) -> None:
    if getattr(parent, "organization_id", None) != child_org:
        raise ValueError(f"the {what} belongs to another owner")


@transaction.atomic
def provider_create(
    *,
    organization: Any,
    name: str,
    kind: str,
    actor: Any,
    config: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
    context: AuditContext | None = None,
) -> Provider:
    """A provider of `organization` (None: the platform), its credentials encrypted at rest."""
    provider = Provider(organization=organization, name=name, kind=kind, config=config or {})
    if credentials:
        provider.credentials_encrypted = credentials_encrypt(credentials)
    provider.full_clean(exclude=["credentials_encrypted"])
    provider.save()
    _created(provider, PROVIDER_FIELDS, actor, context)
    return provider


@transaction.atomic
def provider_update(
    *,
    provider: Provider,
    changes: dict[str, Any],
    actor: Any,
    credentials: dict[str, Any] | None = None,
    context: AuditContext | None = None,
) -> Provider:
    """Edit a provider; new `credentials` replace the old ones (the audit event says only that they changed)."""
    if credentials is not None:
        provider.credentials_encrypted = credentials_encrypt(credentials)
    _changed(provider, changes, PROVIDER_FIELDS, actor, context)
    if credentials is not None:
        audit_record(action="provider.credentials_replace", actor=actor, target=provider, context=context)
    return provider


@transaction.atomic
def provider_delete(*, provider: Provider, actor: Any, context: AuditContext | None = None) -> None:
    """Delete a provider no pool uses."""
    if provider.pools.exists():
        raise ValueError("pools still use this provider")
    _deleted(provider, PROVIDER_FIELDS, actor, context)


@transaction.atomic
def pool_create(
    *, organization: Any, provider: Provider, name: str, actor: Any, context: AuditContext | None = None, **fields: Any
) -> ComputePool:
    """A pool on one of the owner's providers."""
    _same_owner(getattr(organization, "pk", None), provider, "provider")
    pool = ComputePool(organization=organization, provider=provider, name=name, **fields)
    pool.full_clean()
    pool.save()
    _created(pool, POOL_FIELDS, actor, context)
    return pool


@transaction.atomic
def pool_update(
    *, pool: ComputePool, changes: dict[str, Any], actor: Any, context: AuditContext | None = None
) -> ComputePool:
    """Edit a pool (its provider must stay the owner's)."""
    if "provider" in changes:
        _same_owner(pool.organization_id, changes["provider"], "provider")
    _changed(pool, changes, POOL_FIELDS, actor, context)
    return pool


@transaction.atomic
def pool_delete(*, pool: ComputePool, actor: Any, context: AuditContext | None = None) -> None:
    """Delete a pool no deployment uses."""
    if pool.deployments.exists():
        raise ValueError("deployments still use this pool")
    _deleted(pool, POOL_FIELDS, actor, context)


@transaction.atomic
def deployment_create(
    *, organization: Any, pool: ComputePool, actor: Any, context: AuditContext | None = None, **fields: Any
) -> ModelDeployment:
    """A deployment on one of the owner's pools. It starts PENDING; the worker brings it up."""
    _same_owner(getattr(organization, "pk", None), pool, "pool")
    deployment = ModelDeployment(organization=organization, pool=pool, **fields)
    deployment.full_clean()
    deployment.save()
    _created(deployment, DEPLOYMENT_FIELDS, actor, context)
    return deployment


@transaction.atomic
def deployment_update(
    *, deployment: ModelDeployment, changes: dict[str, Any], actor: Any, context: AuditContext | None = None
) -> ModelDeployment:
    """Edit what a deployment should be (size, prices, timeouts, ...); the worker reconciles what runs."""
    if "pool" in changes:
        _same_owner(deployment.organization_id, changes["pool"], "pool")
    _changed(deployment, changes, DEPLOYMENT_FIELDS, actor, context)
    return deployment


@transaction.atomic
def deployment_delete(*, deployment: ModelDeployment, actor: Any, context: AuditContext | None = None) -> None:
    """Delete a deployment and its replica records (the worker tears the nodes down)."""
    _deleted(deployment, DEPLOYMENT_FIELDS, actor, context)


@transaction.atomic
def deployment_share(
    *, deployment: ModelDeployment, organizations: list[Any], actor: Any, context: AuditContext | None = None
) -> ModelDeployment:
    """Set which organisations may use a platform deployment (the superadmin's act)."""
    if deployment.organization_id is not None:
        raise ValueError("only platform deployments are shared")
    before = sorted(deployment.shared_with.values_list("pk", flat=True))
    deployment.shared_with.set(organizations)
    audit_record(
        action="deployment.share",
        actor=actor,
        target=deployment,
        changes=audit_diff(before={"shared_with": before}, after={"shared_with": sorted(o.pk for o in organizations)}),
        context=context,
    )
    return deployment
