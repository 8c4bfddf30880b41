"""Writes on the compute plane. For now only what a simulated node needs; provisioning through adapters
and the worker comes with the compute issue."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.services import AuditContext, audit_record
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.orgs.models import Organization

# How `inferia start all` marks the replica it runs itself, so that each start refreshes that one row.
LOCAL_NODE_HANDLE = {"kind": "simulator", "node": "inferia-start-all"}


@transaction.atomic
def simulator_deployment_ensure(
    *,
    organization: Organization,
    served_model_name: str,
    model_id: str,
    actor: Any = None,
    context: AuditContext | None = None,
) -> tuple[ModelDeployment, bool]:
    """A deployment of `organization` served by simulated nodes (a simulator provider and pool, created when
    missing). Returns it and whether anything was created; running it again changes nothing."""
    provider, provider_created = Provider.objects.get_or_create(
        organization=organization, name="Local simulator", defaults={"kind": Provider.Kind.SIMULATOR}
    )
    if provider_created:
        audit_record(action="provider.create", actor=actor, target=provider, changes={"kind": provider.kind})
    pool, pool_created = ComputePool.objects.get_or_create(
        organization=organization,
        name="local-sim",
        defaults={"provider": provider, "region": "local", "gpu_type": "simulated", "max_nodes": 1},
    )
    if pool_created:
        audit_record(action="pool.create", actor=actor, target=pool, changes={"provider": provider.pk})
    deployment, created = ModelDeployment.objects.get_or_create(
        organization=organization,
        served_model_name=served_model_name,
        defaults={"pool": pool, "name": served_model_name, "model_id": model_id, "engine": "inferia-sim"},
    )
    if created:
        audit_record(
            action="deployment.create",
            actor=actor,
            target=deployment,
            changes={"served_model_name": served_model_name, "model_id": model_id, "pool": pool.pk},
            context=context,
        )
    return deployment, provider_created or pool_created or created


@transaction.atomic
def replica_record_local_node(*, deployment: ModelDeployment, endpoint: str) -> Replica:
    """Record that the simulated node `inferia start all` runs is serving `deployment` at `endpoint`, now.

    Called at each start: the node's port may differ from the last run, so the row is refreshed rather than
    added to. The deployment becomes READY with it. (A later issue moves this to the worker's provisioning.)
    """
    now = timezone.now()
    replica = (
        Replica.objects.select_for_update()
        .filter(deployment=deployment, provider_handle__contains=LOCAL_NODE_HANDLE)
        .order_by("pk")
        .first()
    )
    if replica is None:
        replica = Replica(deployment=deployment, provider_handle=dict(LOCAL_NODE_HANDLE))
    replica.endpoint = endpoint
    replica.state = Replica.State.READY
    replica.last_heartbeat_at = now
    replica.last_error = ""
    replica.save()
    if deployment.state != ModelDeployment.State.READY:
        deployment.state = ModelDeployment.State.READY
        deployment.state_reason = "simulated node started by inferia start all"
        deployment.state_changed_at = now
        deployment.save(update_fields=["state", "state_reason", "state_changed_at", "updated_at"])
    return replica
