"""Cache invalidation only: when deployments, replicas, shares or model routes change, every gateway reloads its
catalog; when an organisation is saved (deactivated or reactivated, or its prompt capture switched), every gateway
forgets its keys.

Model saves arrive as Django signals. Compute's conditional `.update()` writes send none: compute publishes what
they changed as events (apps/compute/events.py), to which `compute_events_subscribe` subscribes the catalog.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from apps.compute.events import ReplicaAdaptersSynced, ReplicaEndpointChanged, ReplicaStateChanged
from apps.compute.models import ModelDeployment, ModelRoute, ModelRouteTarget, Replica
from apps.gateway.catalog import catalog_changed
from apps.gateway.services import organization_keys_purge
from apps.orgs.models import Organization
from inferia_runtime.events import event_subscribe


@receiver(post_save, sender=ModelDeployment, dispatch_uid="gateway_catalog_deployment_saved")
@receiver(post_delete, sender=ModelDeployment, dispatch_uid="gateway_catalog_deployment_deleted")
@receiver(post_save, sender=Replica, dispatch_uid="gateway_catalog_replica_saved")
@receiver(post_delete, sender=Replica, dispatch_uid="gateway_catalog_replica_deleted")
@receiver(m2m_changed, sender=ModelDeployment.shared_with.through, dispatch_uid="gateway_catalog_shares_changed")
@receiver(post_save, sender=ModelRoute, dispatch_uid="gateway_catalog_route_saved")
@receiver(post_delete, sender=ModelRoute, dispatch_uid="gateway_catalog_route_deleted")
@receiver(post_save, sender=ModelRouteTarget, dispatch_uid="gateway_catalog_route_target_saved")
@receiver(post_delete, sender=ModelRouteTarget, dispatch_uid="gateway_catalog_route_target_deleted")
def catalog_invalidate_on_change(**kwargs: Any) -> None:
    if kwargs.get("update_fields") == frozenset({"last_heartbeat_at"}):
        return  # heartbeats change nothing the gateway routes on
    transaction.on_commit(catalog_changed)


@receiver(post_save, sender=Organization, dispatch_uid="gateway_keys_organization_saved")
def keys_purge_on_organization_change(instance: Organization, created: bool, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    # The key principals the gateways cache carry both (see `KeyPrincipal.capture`).
    if created or (update_fields is not None and not {"is_active", "capture_prompts"} & set(update_fields)):
        return
    organization_id, active = instance.pk, instance.is_active
    transaction.on_commit(lambda: organization_keys_purge(organization_id=organization_id, active=active))


def catalog_invalidate_on_replica_state(event: ReplicaStateChanged) -> None:
    if event.routing_changed:
        catalog_changed()


def catalog_invalidate_on_replica_endpoint(event: ReplicaEndpointChanged) -> None:
    if event.serving:
        catalog_changed()


def catalog_invalidate_on_adapters(event: ReplicaAdaptersSynced) -> None:
    catalog_changed()


def compute_events_subscribe() -> None:
    """Reload every gateway's catalog when compute changes what it routes to (called from GatewayConfig.ready)."""
    event_subscribe(ReplicaStateChanged, catalog_invalidate_on_replica_state)
    event_subscribe(ReplicaEndpointChanged, catalog_invalidate_on_replica_endpoint)
    event_subscribe(ReplicaAdaptersSynced, catalog_invalidate_on_adapters)
