"""Administrative writes on the compute inventory, as the REST API and console make them: create, edit and delete
providers, pools and deployments, and share platform deployments. Each records an audit event with a
before/after diff (credentials never appear in it).

Provisioning, scaling and the deployment state machine belong to `apps/compute/services.py` and the worker; the
writes here only change what is desired, never what runs: after commit they ask the worker to reconcile.
"""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.db.models import Q

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, ModelT, audit_diff, audit_record, audit_snapshot, update_begin
from apps.compute.adapters import supported_kinds
from apps.compute.adapters.external import external_base_urls_check
from apps.compute.capacity import ASKING_STATES, deployment_capacity_check
from apps.compute.credentials import credentials_encrypt
from apps.compute.engine import engine_spec_build, image_reference_check
from apps.compute.models import ComputePool, ModelDeployment, ModelRoute, Provider, Replica
from apps.compute.rollout import deployment_rollout_begin_locked, deployment_spec
from apps.compute.services import State, deployment_transition_locked, enqueue_reconcile
from apps.orgs.models import Organization
from inferia_runtime.errors import DomainRefusal

PROVIDER_FIELDS = ("name", "kind", "config")
POOL_FIELDS = ("name", "provider", "region", "gpu_type", "gpus_per_node", "max_nodes", "cost_per_gpu_hour_micros")
DEPLOYMENT_FIELDS = (
    "name",
    "pool",
    "model_id",
    "served_model_name",
    "engine",
    "engine_args",
    "image",
    "max_surge",
    "max_unavailable",
    "drain_timeout_s",
    "rollout_deadline_s",
    "min_replicas",
    "max_replicas",
    "desired_replicas",
    "team",
    "price_input_per_mtok_micros",
    "price_output_per_mtok_micros",
    "connect_timeout_s",
    "first_byte_timeout_s",
    "idle_timeout_s",
    "stream_interval_ms",
    "stream_interval_chunks",
)


# The most replicas one deployment may ask for: a typo (1000 for 10) must not order a fleet. Larger fleets are
# several deployments, or a raised cap.
REPLICAS_CAP = 64
# The longest an upstream timeout may be set to: past an hour a request is a stuck request.
TIMEOUT_CAP_S = 3600.0
# A stream interval holds tokens back from users: past a second it reads as a stall, past 256 tokens as no stream.
STREAM_INTERVAL_MS_CAP = 1000
STREAM_INTERVAL_CHUNKS_CAP = 256

# A rollout's progress deadline: long enough for a model to download and load, short enough to notice a stuck one
# within a day.
ROLLOUT_DEADLINE_MIN_S = 1.0
ROLLOUT_DEADLINE_CAP_S = 86400.0

# In the config of a provider `external_deployment_create` made for one deployment: deleting that deployment
# deletes the provider and its pool too, while nothing else uses them.
REGISTRATION_MARK = "registered_with_deployment"

# How many of the pools or deployments that block a delete its refusal names.
USERS_NAMED = 5

_AUDIT_NOUNS = {"provider": "provider", "computepool": "pool", "modeldeployment": "deployment"}


class NameTakenError(DomainRefusal):
    """A name its owner already uses (a served model name, a provider's or a pool's): the REST API answers 409,
    naming what holds it; other callers show it like any refusal."""

    def __init__(self, message: str, *, existing: models.Model) -> None:
        super().__init__(message)
        self.existing = existing


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:USERS_NAMED])
    return shown + (" and more" if len(names) > USERS_NAMED else "")


def _owner_label(organization_id: int | None) -> str:
    return "The platform" if organization_id is None else "This organisation"


def owner_name_check(
    model: type[models.Model], *, organization_id: int | None, field: str, value: str, pk: Any
) -> None:
    """Refuse a name the owner already uses, with a message naming the holder, before the unique constraint does
    (its own message names no one)."""
    existing = model._default_manager.filter(organization_id=organization_id, **{field: value}).exclude(pk=pk).first()
    if existing is None and model is ModelDeployment and field == "served_model_name" and organization_id is not None:
        # Model routes share the organisation's served-name namespace: a deployment cannot take a route's name.
        route = ModelRoute.objects.filter(organization_id=organization_id, name=value).first()
        if route is not None:
            message = f"This organisation already routes {value!r}: model route (id {route.pk})"
            raise NameTakenError(message, existing=route)
    if existing is None:
        return
    owner = _owner_label(organization_id)
    if isinstance(existing, ModelDeployment):
        message = f"{owner} already serves {value!r}: deployment {existing.name!r} (id {existing.pk})"
    else:
        message = f"{owner} already has a {_kind(existing)} named {value!r} (id {existing.pk})"
    raise NameTakenError(message, existing=existing)


def _kind(obj: models.Model) -> str:
    return _AUDIT_NOUNS[obj._meta.model_name or ""]


def _created(obj: models.Model, fields: tuple[str, ...], actor: Actor, context: AuditContext | None) -> None:
    audit_record(
        action=f"{_kind(obj)}.create",
        actor=actor,
        target=obj,
        changes=audit_diff(before=None, after=audit_snapshot(obj, fields)),
        context=context,
    )


def _changed(
    obj: ModelT, changes: dict[str, Any], fields: tuple[str, ...], actor: Actor, context: AuditContext | None
) -> ModelT:
    obj, before = update_begin(obj, changes=changes, allowed=fields)
    obj.full_clean(exclude=[f.name for f in obj._meta.fields if f.name not in changes])
    obj.save()
    audit_record(
        action=f"{_kind(obj)}.update",
        actor=actor,
        target=obj,
        changes=audit_diff(before=before, after=audit_snapshot(obj, fields)),
        context=context,
    )
    return obj


def _deleted(obj: models.Model, fields: tuple[str, ...], actor: Actor, context: AuditContext | None) -> None:
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
        raise DomainRefusal(f"the {what} belongs to another owner")


def _provider_config_check(kind: str, config: dict[str, Any]) -> None:
    if kind not in supported_kinds():
        raise DomainRefusal(
            f"provider kind {kind!r} has no working adapter yet; supported: {', '.join(supported_kinds())}"
        )
    if kind == Provider.Kind.EXTERNAL:
        external_base_urls_check(config.get("base_urls"))  # UnsafeUrlError is a ValueError: a 400


def _deployment_check(deployment: ModelDeployment) -> None:
    """Refuse what the worker could not run: engine arguments vLLM would refuse, sizes out of bounds, a provider
    kind without an adapter, an external provider whose URLs fail the SSRF check."""
    if deployment.engine == "vllm" or deployment.engine_args:
        engine_spec_build(
            model_id=deployment.model_id,
            served_model_name=deployment.served_model_name,
            engine_args=deployment.engine_args,
        )
    image_reference_check(deployment.image)
    if not 0 <= deployment.max_surge <= REPLICAS_CAP or not 0 <= deployment.max_unavailable <= REPLICAS_CAP:
        raise DomainRefusal(f"max_surge and max_unavailable must be from 0 to {REPLICAS_CAP}")
    if deployment.max_surge == 0 and deployment.max_unavailable == 0:
        raise DomainRefusal("max_surge and max_unavailable cannot both be 0: a rollout could not replace a replica")
    if not 0 < deployment.drain_timeout_s <= TIMEOUT_CAP_S:  # also refuses NaN
        raise DomainRefusal(f"drain_timeout_s must be more than 0 and at most {TIMEOUT_CAP_S:g} s")
    if not ROLLOUT_DEADLINE_MIN_S <= deployment.rollout_deadline_s <= ROLLOUT_DEADLINE_CAP_S:  # also refuses NaN
        raise DomainRefusal(
            f"rollout_deadline_s must be from {ROLLOUT_DEADLINE_MIN_S:g} to {ROLLOUT_DEADLINE_CAP_S:g} s"
        )
    if not 0 <= deployment.min_replicas <= deployment.max_replicas <= REPLICAS_CAP:
        raise DomainRefusal(f"replicas must satisfy 0 <= min_replicas <= max_replicas <= {REPLICAS_CAP}")
    if deployment.desired_replicas > deployment.max_replicas:
        raise DomainRefusal(f"desired_replicas cannot exceed max_replicas ({deployment.max_replicas})")
    if deployment.price_input_per_mtok_micros < 0 or deployment.price_output_per_mtok_micros < 0:
        raise DomainRefusal("prices cannot be negative")
    for name in ("connect_timeout_s", "first_byte_timeout_s", "idle_timeout_s"):
        seconds = getattr(deployment, name)
        if seconds is not None and not 0 < seconds <= TIMEOUT_CAP_S:  # also refuses NaN
            raise DomainRefusal(f"{name} must be empty (the default) or more than 0 and at most {TIMEOUT_CAP_S:g} s")
    if not 0 <= deployment.stream_interval_ms <= STREAM_INTERVAL_MS_CAP:
        raise DomainRefusal(f"stream_interval_ms must be from 0 to {STREAM_INTERVAL_MS_CAP}")
    if not 0 <= deployment.stream_interval_chunks <= STREAM_INTERVAL_CHUNKS_CAP:
        raise DomainRefusal(f"stream_interval_chunks must be from 0 to {STREAM_INTERVAL_CHUNKS_CAP}")
    if deployment.team is not None and deployment.team.organization_id != deployment.organization_id:
        raise DomainRefusal("the team belongs to another organisation")
    provider = deployment.pool.provider
    _provider_config_check(provider.kind, provider.config or {})


@transaction.atomic
def provider_create(
    *,
    organization: Organization | None,
    name: str,
    kind: str,
    actor: Actor,
    config: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
    context: AuditContext | None = None,
) -> Provider:
    """A provider of `organization` (None: the platform), its credentials encrypted at rest. Only kinds with a
    working adapter are accepted; an external provider's URLs are SSRF-checked."""
    _provider_config_check(kind, config or {})
    owner_name_check(Provider, organization_id=getattr(organization, "pk", None), field="name", value=name, pk=None)
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
    actor: Actor,
    credentials: dict[str, Any] | None = None,
    context: AuditContext | None = None,
) -> Provider:
    """Edit a provider; new `credentials` replace the old ones (the audit event says only that they changed)."""
    if "config" in changes or "kind" in changes:  # a new kind must have an adapter that takes the settings too
        _provider_config_check(changes.get("kind", provider.kind), changes.get("config", provider.config) or {})
    if "name" in changes:
        owner_name_check(
            Provider, organization_id=provider.organization_id, field="name", value=changes["name"], pk=provider.pk
        )
    if changes:  # new credentials alone are one event of their own, not an empty update beside it
        provider = _changed(provider, changes, PROVIDER_FIELDS, actor, context)
    if credentials is not None:
        provider.credentials_encrypted = credentials_encrypt(credentials)
        provider.save(update_fields=["credentials_encrypted"])
        audit_record(action="provider.credentials_replace", actor=actor, target=provider, context=context)
    return provider


@transaction.atomic
def provider_delete(*, provider: Provider, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a provider no pool uses (the refusal names the pools that do)."""
    users = list(provider.pools.order_by("name").values_list("name", flat=True)[: USERS_NAMED + 1])
    if users:
        raise DomainRefusal(f"pools still use this provider: {_names(users)}; delete or move them first")
    _deleted(provider, PROVIDER_FIELDS, actor, context)


@transaction.atomic
def pool_create(
    *,
    organization: Organization | None,
    provider: Provider,
    name: str,
    actor: Actor,
    context: AuditContext | None = None,
    **fields: Any,
) -> ComputePool:
    """A pool on one of the owner's providers."""
    _same_owner(getattr(organization, "pk", None), provider, "provider")
    owner_name_check(ComputePool, organization_id=getattr(organization, "pk", None), field="name", value=name, pk=None)
    pool = ComputePool(organization=organization, provider=provider, name=name, **fields)
    pool.full_clean()
    pool.save()
    _created(pool, POOL_FIELDS, actor, context)
    return pool


@transaction.atomic
def pool_update(
    *, pool: ComputePool, changes: dict[str, Any], actor: Actor, context: AuditContext | None = None
) -> ComputePool:
    """Edit a pool (its provider must stay the owner's)."""
    if "provider" in changes:
        _same_owner(pool.organization_id, changes["provider"], "provider")
    if "name" in changes:
        owner_name_check(
            ComputePool, organization_id=pool.organization_id, field="name", value=changes["name"], pk=pool.pk
        )
    return _changed(pool, changes, POOL_FIELDS, actor, context)


@transaction.atomic
def pool_delete(*, pool: ComputePool, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a pool no deployment uses, as its own pool or a placement pool, and no replica runs on (the refusal
    names the deployments). The stopped replicas it keeps for their history go with it."""
    running_here = Replica.objects.filter(pool=pool).exclude(state=Replica.State.STOPPED)
    users = ModelDeployment.objects.filter(
        Q(pool=pool) | Q(placement_pools=pool) | Q(pk__in=running_here.values("deployment_id"))
    )
    names = list(
        users.distinct().order_by("served_model_name").values_list("served_model_name", flat=True)[: USERS_NAMED + 1]
    )
    if names:
        raise DomainRefusal(f"deployments still use this pool: {_names(names)}; delete them first")
    Replica.objects.filter(pool=pool, state=Replica.State.STOPPED).delete()
    _deleted(pool, POOL_FIELDS, actor, context)


@transaction.atomic
def deployment_create(
    *,
    organization: Organization | None,
    pool: ComputePool,
    actor: Actor,
    context: AuditContext | None = None,
    **fields: Any,
) -> ModelDeployment:
    """A deployment on one of the owner's pools. It starts PENDING; the worker brings it up (reconcile after commit).

    Without `desired_replicas` it starts with `min_replicas` (at least one)."""
    _same_owner(getattr(organization, "pk", None), pool, "pool")
    if "desired_replicas" not in fields:
        fields["desired_replicas"] = max(1, fields.get("min_replicas", 1))
    fields.setdefault("max_replicas", max(fields["desired_replicas"], fields.get("min_replicas", 1)))
    owner_name_check(
        ModelDeployment,
        organization_id=getattr(organization, "pk", None),
        field="served_model_name",
        value=fields.get("served_model_name", ""),
        pk=None,
    )
    deployment = ModelDeployment(organization=organization, pool=pool, **fields)
    deployment.full_clean()
    _deployment_check(deployment)
    deployment_capacity_check(deployment=deployment, replicas=deployment.desired_replicas)
    deployment.save()
    _created(deployment, DEPLOYMENT_FIELDS, actor, context)
    transaction.on_commit(lambda: enqueue_reconcile(deployment.pk))
    return deployment


@transaction.atomic
def deployment_update(
    *, deployment: ModelDeployment, changes: dict[str, Any], actor: Actor, context: AuditContext | None = None
) -> ModelDeployment:
    """Edit what a deployment should be (size, prices, timeouts, team, ...); the worker reconciles what runs. An edit
    that asks for more (replicas, GPUs per replica, another pool or team) is checked against the pool's nodes and
    the GPU quotas."""
    if "pool" in changes:
        _same_owner(deployment.organization_id, changes["pool"], "pool")
    deployment = ModelDeployment.objects.select_for_update().get(pk=deployment.pk)
    changes = _desired_within_bounds(deployment, changes)
    asked_before = deployment.desired_replicas if deployment.state in ASKING_STATES else 0
    charged_before = (deployment.pool_id, deployment.team_id, deployment.engine_args)
    if "served_model_name" in changes:
        owner_name_check(
            ModelDeployment,
            organization_id=deployment.organization_id,
            field="served_model_name",
            value=changes["served_model_name"],
            pk=deployment.pk,
        )
    before = deployment_spec(deployment)
    deployment = _changed(deployment, changes, DEPLOYMENT_FIELDS, actor, context)
    _deployment_check(deployment)
    asks = deployment.state in (*ASKING_STATES, State.FAILED)  # a failed one is tried again below
    moved = (deployment.pool_id, deployment.team_id, deployment.engine_args) != charged_before
    if asks and (moved or deployment.desired_replicas > asked_before):
        deployment_capacity_check(deployment=deployment, replicas=deployment.desired_replicas)
    # A new model, engine arguments or image rolls the replicas over to it (apps/compute/rollout.py).
    deployment_rollout_begin_locked(deployment=deployment, before=before, actor=actor, context=context)
    if deployment.state == State.FAILED:
        deployment_transition_locked(deployment=deployment, to_state=State.PENDING, reason="changed; trying again")
    transaction.on_commit(lambda: enqueue_reconcile(deployment.pk))
    return deployment


def _desired_within_bounds(deployment: ModelDeployment, changes: dict[str, Any]) -> dict[str, Any]:
    """New replica bounds that leave the desired count outside them bring it to the nearest bound (and say so in
    the same audited diff), so that narrowing the bounds is one act, not a refusal to scale first."""
    if "desired_replicas" in changes or not {"min_replicas", "max_replicas"} & changes.keys():
        return changes
    low = changes.get("min_replicas", deployment.min_replicas)
    high = changes.get("max_replicas", deployment.max_replicas)
    if not isinstance(low, int) or not isinstance(high, int) or low > high:
        return changes  # _deployment_check refuses them
    desired = min(max(deployment.desired_replicas, low), high)
    return changes if desired == deployment.desired_replicas else {**changes, "desired_replicas": desired}


@transaction.atomic
def deployment_delete(*, deployment: ModelDeployment, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a deployment that runs nothing (stop it first: the worker tears its replicas down). The provider and
    pool that `external_deployment_create` made for it go too, unless something else uses them."""
    running = deployment.replicas.exclude(state__in=(Replica.State.STOPPED,)).exists()
    if running:
        raise DomainRefusal("the deployment still has replicas; stop it and wait until it is stopped")
    pool = deployment.pool
    _deleted(deployment, DEPLOYMENT_FIELDS, actor, context)
    _registration_leftovers_delete(pool=pool, actor=actor, context=context)


def _registration_leftovers_delete(*, pool: ComputePool, actor: Actor, context: AuditContext | None) -> None:
    """Delete (audited) the pool a one-call registration made, once no deployment uses it, then its provider once
    no pool does. Providers and pools made any other way, or shared since, are left alone."""
    provider = pool.provider
    made_for_one = (provider.config or {}).get(REGISTRATION_MARK) is True and pool.name == provider.name
    if not made_for_one or pool.deployments.exists():
        return
    _deleted(pool, POOL_FIELDS, actor, context)
    if not provider.pools.exists():
        _deleted(provider, PROVIDER_FIELDS, actor, context)


@transaction.atomic
def deployment_share(
    *, deployment: ModelDeployment, organizations: list[Any], actor: Actor, context: AuditContext | None = None
) -> ModelDeployment:
    """Set which organisations may use a platform deployment (the superadmin's act)."""
    if deployment.organization_id is not None:
        raise DomainRefusal("only platform deployments are shared")
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
