"""The deployments pages' reads: the list with replica counts and load summed in SQL, one deployment's replicas,
history and recent errors, the snapshot the live WebSocket pushes, and the replicas' engine output the worker
captured (from Redis). Callers pass querysets already narrowed by `.restrict()`; every read is a fixed number of
queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import redis
from django.db.models import Count, F, FloatField, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from apps.compute.adapters import supported_kinds
from apps.compute.models import ComputePool, DeploymentEvent, ModelDeployment, Replica
from apps.compute.replica_logs import replica_logs_recent
from apps.compute.rollout import rollout_progress
from apps.usage.models import UsageRecord

RState = Replica.State
LIVE_REPLICA_STATES = (
    RState.PENDING, RState.PROVISIONING, RState.STARTING, RState.READY, RState.UNHEALTHY, RState.DRAINING,
)  # fmt: skip
# Deployments at rest: nothing will change until someone acts, so the page stops expecting live progress.
AT_REST = (ModelDeployment.State.READY, ModelDeployment.State.STOPPED, ModelDeployment.State.FAILED)
# Output lines the page's log panel keeps per replica (deployment_live.js keeps as many in the DOM in all).
LOG_PANEL_LINES = 300


def _metric(name: str) -> Coalesce:
    return Coalesce(
        Sum(
            Cast(KeyTextTransform(name, "replicas__last_metrics"), FloatField()), filter=Q(replicas__state=RState.READY)
        ),
        0.0,
    )


def deployment_list(*, deployments: QuerySet[ModelDeployment]) -> QuerySet[ModelDeployment]:
    """Deployments with their pool and provider, replica counts (ready / live) and the engines' last reported load
    (running and waiting requests summed over READY replicas): one query, however many rows."""
    return (
        deployments.select_related("organization", "pool__provider")
        .annotate(
            replicas_ready=Count("replicas", filter=Q(replicas__state=RState.READY)),
            replicas_live=Count("replicas", filter=Q(replicas__state__in=LIVE_REPLICA_STATES)),
            load_running=_metric("running"),
            load_waiting=_metric("waiting"),
        )
        .order_by("organization__name", "served_model_name")
    )


def replica_rows(*, deployment: ModelDeployment) -> list[dict[str, Any]]:
    """The deployment's replicas that are not long gone, newest first, as plain values (one query)."""
    recent = timezone.now() - timedelta(hours=1)
    replicas = (
        Replica.objects.filter(deployment=deployment)
        .filter(Q(state__in=LIVE_REPLICA_STATES) | Q(updated_at__gte=recent))
        .select_related("pool")
        .order_by("-id")[:50]
    )
    rows = []
    for replica in replicas:
        metrics = replica.last_metrics or {}
        rows.append(
            {
                "id": replica.pk,
                "state": replica.state,
                "state_label": replica.get_state_display(),
                "pool": replica.pool.name,
                "endpoint": replica.endpoint,
                "running": metrics.get("running"),
                "waiting": metrics.get("waiting"),
                "kv_cache": metrics.get("kv_cache"),
                "last_heartbeat_at": replica.last_heartbeat_at.isoformat() if replica.last_heartbeat_at else None,
                "last_error": replica.last_error[:500],
                "failed_checks": replica.failed_checks,
                "spec_hash": replica.spec_hash,
            }
        )
    return rows


def deployment_events(*, deployment: ModelDeployment, limit: int = 20) -> list[dict[str, Any]]:
    """The deployment's latest state transitions, newest first (one query, on the deployment's index)."""
    events = DeploymentEvent.objects.filter(deployment=deployment).order_by("-id")[:limit]
    return [
        {
            "id": e.pk,
            "from_state": e.from_state,
            "to_state": e.to_state,
            "reason": e.reason,
            "created_at": e.created_at.isoformat(),
        }
        for e in events
    ]


def deployment_recent_errors(*, records: QuerySet[UsageRecord], deployment: ModelDeployment) -> list[UsageRecord]:
    """The deployment's last failed requests of the past day (one query, on the organisation's time index)."""
    since = timezone.now() - timedelta(days=1)
    in_organization = (
        records.filter(organization__isnull=True)
        if deployment.organization_id is None
        else records.filter(organization_id=deployment.organization_id)
    )
    return list(
        in_organization.filter(
            deployment_id=deployment.pk,
            started_at__gte=since,
            outcome=UsageRecord.Outcome.ERROR,
        )
        .only("request_id", "started_at", "status_code", "error_code", "model")
        .order_by("-started_at")[:10]
    )


def deployment_snapshot(*, deployment: ModelDeployment) -> dict[str, Any]:
    """What the live page shows of a deployment: its state, replicas, rollout and history (two queries)."""
    replicas = replica_rows(deployment=deployment)
    rollout = rollout_progress(deployment, replicas=[(row["state"], row["spec_hash"]) for row in replicas])
    return {
        "id": deployment.pk,
        "state": deployment.state,
        "state_label": deployment.get_state_display(),
        "state_reason": deployment.state_reason,
        "state_changed_at": deployment.state_changed_at.isoformat(),
        "desired_replicas": deployment.desired_replicas,
        "at_rest": deployment.state in AT_REST,
        "replicas": replicas,
        "rollout": {**rollout, "state_label": deployment.get_rollout_state_display()},
        "events": deployment_events(deployment=deployment, limit=10),
    }


def deployment_log_entries(*, replica_ids: list[int], tail: int = LOG_PANEL_LINES) -> list[dict[str, Any]]:
    """The captured (redacted) output of the given replicas, oldest replica first, in the shape the page's log
    panel takes: one Redis round trip, no query."""
    try:
        logs = replica_logs_recent(replica_ids=replica_ids, tail=tail)
    except redis.RedisError:  # the page and its live updates work without the output panel
        return []
    return [{"replica": replica_id, "lines": lines, "skipped": 0} for replica_id, lines in sorted(logs.items())]


def deployable_pools(*, pools: QuerySet[ComputePool]) -> list[ComputePool]:
    """Pools a deployment can be created on: their provider's kind has a working adapter (one query)."""
    return list(
        pools.filter(provider__kind__in=supported_kinds())
        .select_related("provider", "organization")
        .order_by("organization__name", "name")
    )


def deployment_priciest(*, organization_id: int, prompt_tokens: int, completion_tokens: int) -> ModelDeployment | None:
    """Of the deployments an organisation's keys can reach (its own and those shared with it), the one for which a
    request of `prompt_tokens` + `completion_tokens` costs most; None when none has a price. One query."""
    cost = F("price_input_per_mtok_micros") * prompt_tokens + F("price_output_per_mtok_micros") * completion_tokens
    reachable = ModelDeployment.objects.filter(Q(organization_id=organization_id) | Q(shared_with__id=organization_id))
    return (
        reachable.annotate(reference_cost=cost)
        .filter(reference_cost__gt=0)
        .order_by("-reference_cost", "pk")
        .only("name", "served_model_name", "price_input_per_mtok_micros", "price_output_per_mtok_micros")
        .first()
    )
