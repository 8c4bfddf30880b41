"""Cache invalidation only: when deployments, replicas or shares change, every gateway reloads its catalog; when an
organisation is saved (deactivated or reactivated), every gateway forgets its keys.

Bulk `.update()` calls send no signals; services that use them call `apps.gateway.catalog.catalog_changed` after
commit themselves.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from apps.compute.models import ModelDeployment, Replica
from apps.gateway.catalog import catalog_changed
from apps.gateway.services import organization_keys_purge
from apps.orgs.models import Organization


@receiver(post_save, sender=ModelDeployment, dispatch_uid="gateway_catalog_deployment_saved")
@receiver(post_delete, sender=ModelDeployment, dispatch_uid="gateway_catalog_deployment_deleted")
@receiver(post_save, sender=Replica, dispatch_uid="gateway_catalog_replica_saved")
@receiver(post_delete, sender=Replica, dispatch_uid="gateway_catalog_replica_deleted")
@receiver(m2m_changed, sender=ModelDeployment.shared_with.through, dispatch_uid="gateway_catalog_shares_changed")
def catalog_invalidate_on_change(**kwargs: Any) -> None:
    if kwargs.get("update_fields") == frozenset({"last_heartbeat_at"}):
        return  # heartbeats change nothing the gateway routes on
    transaction.on_commit(catalog_changed)


@receiver(post_save, sender=Organization, dispatch_uid="gateway_keys_organization_saved")
def keys_purge_on_organization_change(instance: Organization, created: bool, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if created or (update_fields is not None and "is_active" not in update_fields):
        return
    organization_id, active = instance.pk, instance.is_active
    transaction.on_commit(lambda: organization_keys_purge(organization_id=organization_id, active=active))
