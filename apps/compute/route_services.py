"""Writes on model routes (traffic splits and fallbacks, see `apps/compute/route_models.py`): create, change and
delete, each audited with a before/after of its name, splits and fallbacks.

A route's targets are named by served model name and resolved as the gateway resolves them for the route's
organisation: its own deployment first, then a platform deployment shared with it. Any other deployment (another
organisation's, or a platform one not shared) is refused as unknown, so a route never crosses a tenant boundary.
The gateways reload on commit (the catalog subscribes to these models' saves, apps/gateway/signals.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_diff, audit_record
from apps.compute.inventory_services import NameTakenError
from apps.compute.models import ModelDeployment, ModelRoute, ModelRouteTarget
from apps.orgs.models import Organization
from inferia_runtime.errors import DomainRefusal

# Bounds on what one route holds: every request draws among the splits and may walk the fallbacks, and a client's
# input must not make either unbounded.
SPLIT_TARGETS_MAX = 16
FALLBACKS_MAX = 8
WEIGHT_MAX = 1_000_000
DESCRIPTION_MAX = 500
# The shape of a served model name (engine.py's, which vLLM's `--served-model-name` takes).
_NAME_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./:@+-]{0,199}$")


@dataclass(frozen=True)
class SplitTarget:
    """A deployment, by served model name, and its integer weight in the split."""

    deployment: str
    weight: int


def _deployments_visible(organization_id: int) -> QuerySet[ModelDeployment]:
    return ModelDeployment.objects.filter(
        Q(organization_id=organization_id) | Q(organization__isnull=True, shared_with__pk=organization_id)
    )


def _deployment_resolve(organization_id: int, name: Any) -> ModelDeployment:
    """The deployment `name` means for the organisation: its own first, then a platform one shared with it."""
    if not isinstance(name, str) or not name:
        raise DomainRefusal("each target names a deployment by its served model name")
    found = sorted(
        _deployments_visible(organization_id).filter(served_model_name=name).distinct(),
        key=lambda deployment: deployment.organization_id is None,
    )
    if not found:
        raise DomainRefusal(f"no deployment this organisation may use serves {name!r}")
    return found[0]


def _name_check(organization_id: int, name: Any, pk: int | None) -> str:
    """Refuse a route name that is not a served-name shape, or that the organisation already uses for a deployment
    (its own, or a platform one shared with it, which the route would shadow) or another route."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise DomainRefusal(f"route name {name!r} must be a name without spaces or '='")
    held = _deployments_visible(organization_id).filter(served_model_name=name).first()
    if held is not None:
        owner = "This organisation" if held.organization_id is not None else "A platform deployment shared with it"
        message = f"{owner} already serves {name!r}: deployment {held.name!r} (id {held.pk})"
        raise NameTakenError(message, existing=held)
    taken = ModelRoute.objects.filter(organization_id=organization_id, name=name)
    route = (taken.exclude(pk=pk) if pk is not None else taken).first()
    if route is not None:
        raise NameTakenError(f"This organisation already routes {name!r}: model route (id {route.pk})", existing=route)
    return name


def _weight_check(weight: Any) -> int:
    # bool is an int to Python; `true` as a weight is a client's mistake, not 1.
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= WEIGHT_MAX:
        raise DomainRefusal(f"each weight is a whole number from 0 to {WEIGHT_MAX}")
    return weight


def _targets_resolve(
    organization_id: int, splits: Sequence[SplitTarget], fallbacks: Sequence[str]
) -> tuple[list[tuple[ModelDeployment, int]], list[ModelDeployment]]:
    if not 1 <= len(splits) <= SPLIT_TARGETS_MAX:
        raise DomainRefusal(f"a route splits over 1 to {SPLIT_TARGETS_MAX} deployments")
    if len(fallbacks) > FALLBACKS_MAX:
        raise DomainRefusal(f"a route has at most {FALLBACKS_MAX} fallbacks")
    weights = [_weight_check(target.weight) for target in splits]
    if not any(weights):
        raise DomainRefusal("at least one weight must be positive")
    resolved = [(_deployment_resolve(organization_id, t.deployment), w) for t, w in zip(splits, weights, strict=True)]
    if len({deployment.pk for deployment, _ in resolved}) != len(resolved):
        raise DomainRefusal("a deployment appears once among a route's splits")
    backups = [_deployment_resolve(organization_id, name) for name in fallbacks]
    if len({deployment.pk for deployment in backups}) != len(backups):
        raise DomainRefusal("a deployment appears once among a route's fallbacks")
    return resolved, backups


def _targets_write(
    route: ModelRoute, splits: list[tuple[ModelDeployment, int]], fallbacks: list[ModelDeployment]
) -> None:
    route.targets.all().delete()
    ModelRouteTarget.objects.bulk_create(
        [
            *(
                ModelRouteTarget(route=route, deployment=deployment, role=ModelRouteTarget.Role.SPLIT, weight=weight,
                                 position=position)
                for position, (deployment, weight) in enumerate(splits)
            ),
            *(
                ModelRouteTarget(route=route, deployment=deployment, role=ModelRouteTarget.Role.FALLBACK,
                                 position=position)
                for position, deployment in enumerate(fallbacks)
            ),
        ]
    )  # fmt: skip


def model_route_snapshot(route: ModelRoute) -> dict[str, Any]:
    """What the audit log and the API show of a route: its name, splits (served name, id, weight) and fallbacks."""
    prefetched = "targets" in getattr(route, "_prefetched_objects_cache", {})
    targets = sorted(
        route.targets.all() if prefetched else route.targets.select_related("deployment"),
        key=lambda target: (target.role, target.position),
    )
    return {
        "name": route.name,
        "description": route.description,
        "splits": [
            {"deployment": t.deployment.served_model_name, "deployment_id": t.deployment_id, "weight": t.weight}
            for t in targets
            if t.role == ModelRouteTarget.Role.SPLIT
        ],
        "fallbacks": [
            {"deployment": t.deployment.served_model_name, "deployment_id": t.deployment_id}
            for t in targets
            if t.role == ModelRouteTarget.Role.FALLBACK
        ],
    }


def _description_check(description: Any) -> str:
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
        raise DomainRefusal(f"the description is text of at most {DESCRIPTION_MAX} characters")
    return description


@transaction.atomic
def model_route_create(
    *,
    organization: Organization,
    name: str,
    splits: Sequence[SplitTarget],
    fallbacks: Sequence[str] = (),
    description: str = "",
    actor: Actor,
    context: AuditContext | None = None,
) -> ModelRoute:
    """A served model name of `organization` that splits its requests over deployments by weight, with fallbacks."""
    name = _name_check(organization.pk, name, None)
    resolved, backups = _targets_resolve(organization.pk, splits, fallbacks)
    route = ModelRoute.objects.create(organization=organization, name=name, description=_description_check(description))
    _targets_write(route, resolved, backups)
    audit_record(
        action="model_route.create",
        actor=actor,
        target=route,
        changes=audit_diff(before=None, after=model_route_snapshot(route)),
        context=context,
    )
    return route


@transaction.atomic
def model_route_update(
    *,
    route: ModelRoute,
    actor: Actor,
    name: str | None = None,
    splits: Sequence[SplitTarget] | None = None,
    fallbacks: Sequence[str] | None = None,
    description: str | None = None,
    context: AuditContext | None = None,
) -> ModelRoute:
    """Change a route's name, weights, targets or fallbacks (the ones given; the others stay as they are)."""
    locked = ModelRoute.objects.select_for_update().get(pk=route.pk)
    before = model_route_snapshot(locked)
    if name is not None and name != locked.name:
        locked.name = _name_check(locked.organization_id, name, locked.pk)
    if description is not None:
        locked.description = _description_check(description)
    if splits is not None or fallbacks is not None:
        current = [SplitTarget(t["deployment"], t["weight"]) for t in before["splits"]]
        resolved, backups = _targets_resolve(
            locked.organization_id,
            splits if splits is not None else current,
            fallbacks if fallbacks is not None else [t["deployment"] for t in before["fallbacks"]],
        )
        _targets_write(locked, resolved, backups)
    locked.save()
    audit_record(
        action="model_route.update",
        actor=actor,
        target=locked,
        changes=audit_diff(before=before, after=model_route_snapshot(locked)),
        context=context,
    )
    return locked


@transaction.atomic
def model_route_delete(*, route: ModelRoute, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a route: its name stops being served at once (the deployments it pointed at are untouched)."""
    before = model_route_snapshot(route)
    audit_record(
        action="model_route.delete",
        actor=actor,
        target=route,
        changes=audit_diff(before=before, after=None),
        context=context,
    )
    route.delete()
