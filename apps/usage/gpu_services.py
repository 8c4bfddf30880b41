"""Writes of GPU time: a span opens when a replica first serves and closes when it stops (`GpuUsageSpan`). The
compute plane's replica state machine calls these inside the transaction of the move, so a span never disagrees
with the replica's state; no person changes them, so they are not audited (like usage records)."""

from __future__ import annotations

from datetime import datetime

from apps.usage.models import GpuUsageSpan


def gpu_span_open(
    *,
    replica_id: int,
    deployment_id: int,
    organization_id: int | None,
    team_id: int | None,
    gpus: int,
    cost_per_gpu_hour_micros: int,
    at: datetime,
) -> None:
    """Start counting a replica's GPU time at `at`; a replica that serves again after a lapse keeps its first span
    (its GPUs were held meanwhile)."""
    GpuUsageSpan.objects.get_or_create(
        replica_id=replica_id,
        defaults={
            "deployment_id": deployment_id,
            "organization_id": organization_id,
            "team_id": team_id,
            "gpus": gpus,
            "cost_per_gpu_hour_micros": cost_per_gpu_hour_micros,
            "started_at": at,
        },
    )


def gpu_span_close(*, replica_id: int, at: datetime) -> None:
    """Stop counting a replica's GPU time at `at` (nothing when it never served)."""
    GpuUsageSpan.objects.filter(replica_id=replica_id, ended_at__isnull=True).update(ended_at=at)
