"""The database reads behind the gateway's in-process catalog. Called off the hot path (cold start, invalidation)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from apps.compute.models import ModelDeployment, Replica

# Deployments that no longer serve do not appear to clients at all.
_GONE_STATES = (ModelDeployment.State.STOPPED, ModelDeployment.State.FAILED)


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    """What the gateway needs of one deployment, read in one go with its READY replicas and share list."""

    id: int
    organization_id: int | None
    served_model_name: str
    created: int
    price_input_per_mtok_micros: int
    price_output_per_mtok_micros: int
    connect_timeout_s: float | None
    first_byte_timeout_s: float | None
    idle_timeout_s: float | None
    replicas: tuple[tuple[int, str, dict[str, object]], ...]  # (id, endpoint, last_metrics)
    shared_with: tuple[int, ...]


def deployment_rows_list() -> list[DeploymentRow]:
    """Every serving deployment with its READY replicas and the organisations it is shared with (3 queries)."""
    deployments = list(
        ModelDeployment.objects.exclude(state__in=_GONE_STATES).values(
            "id",
            "organization_id",
            "served_model_name",
            "created_at",
            "price_input_per_mtok_micros",
            "price_output_per_mtok_micros",
            "connect_timeout_s",
            "first_byte_timeout_s",
            "idle_timeout_s",
        )
    )
    ids = [row["id"] for row in deployments]
    replicas: dict[int, list[tuple[int, str, dict[str, object]]]] = defaultdict(list)
    for replica in (
        Replica.objects.filter(deployment_id__in=ids, state=Replica.State.READY)
        .exclude(endpoint="")
        .order_by("id")
        .values("id", "deployment_id", "endpoint", "last_metrics")
    ):
        replicas[replica["deployment_id"]].append((replica["id"], replica["endpoint"], replica["last_metrics"] or {}))
    shares: dict[int, list[int]] = defaultdict(list)
    for share in ModelDeployment.shared_with.through.objects.filter(modeldeployment_id__in=ids).values(
        "modeldeployment_id", "organization_id"
    ):
        shares[share["modeldeployment_id"]].append(share["organization_id"])
    return [
        DeploymentRow(
            id=row["id"],
            organization_id=row["organization_id"],
            served_model_name=row["served_model_name"],
            created=int(row["created_at"].timestamp()),
            price_input_per_mtok_micros=row["price_input_per_mtok_micros"],
            price_output_per_mtok_micros=row["price_output_per_mtok_micros"],
            connect_timeout_s=row["connect_timeout_s"],
            first_byte_timeout_s=row["first_byte_timeout_s"],
            idle_timeout_s=row["idle_timeout_s"],
            replicas=tuple(replicas.get(row["id"], ())),
            shared_with=tuple(shares.get(row["id"], ())),
        )
        for row in deployments
    ]
