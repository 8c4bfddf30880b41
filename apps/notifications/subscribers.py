"""How the domains' events become notifications. Each handler runs after the publishing transaction committed (in
whichever process published: a worker, or a web request's after-commit) and only writes deliveries; sending is a
Celery task. The domains never import this app: it subscribes to what they publish."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from apps.compute.events import DeploymentRolloutChanged, DeploymentStateChanged, ReplicaStateChanged
from apps.compute.models import ModelDeployment, Replica
from apps.keys.events import ApiKeyExpiringSoon
from apps.notifications.models import EventKind
from apps.notifications.services import notification_dispatch
from apps.policies.events import BudgetThresholdCrossed
from inferia_runtime.events import event_subscribe
from inferia_runtime.money import money_format


def _deployment(deployment_id: int) -> ModelDeployment | None:
    return (
        ModelDeployment.objects.filter(pk=deployment_id, organization__isnull=False)
        .only("pk", "name", "organization_id", "served_model_name")
        .first()
    )


def on_budget_threshold(event: BudgetThresholdCrossed) -> None:
    kind = EventKind.BUDGET_100 if event.percent >= 100 else EventKind.BUDGET_80
    notification_dispatch(
        organization_id=event.organization_id,
        kind=kind,
        key=f"budget:{event.policy_id}:{event.period}:{event.period_id}:{event.percent}",
        summary=(
            f"{event.target}: {event.percent}% of the {event.period}ly budget reached "
            f"({money_format(event.used_micros)} of {money_format(event.budget_micros)})"
        ),
        payload={
            "policy_id": event.policy_id,
            "target": event.target,
            "period": event.period,
            "period_id": event.period_id,
            "percent": event.percent,
            "budget_micros": event.budget_micros,
            "used_micros": event.used_micros,
        },
    )


def on_deployment_state(event: DeploymentStateChanged) -> None:
    if event.to_state == ModelDeployment.State.FAILED:
        _deployment_failure(
            event.deployment_id, EventKind.DEPLOYMENT_FAILED, "deployment-failed", "Deployment", event.reason
        )


def on_rollout_state(event: DeploymentRolloutChanged) -> None:
    if event.state == ModelDeployment.RolloutState.FAILED:
        _deployment_failure(
            event.deployment_id, EventKind.ROLLOUT_FAILED, "rollout-failed", "Rollout of deployment", event.reason
        )


def _deployment_failure(deployment_id: int, kind: str, key: str, what: str, reason: str) -> None:
    """Tell the deployment's organisation that it (or its rollout) failed; each failure is an event of its own."""
    deployment = _deployment(deployment_id)
    if deployment is None or deployment.organization_id is None:
        return
    notification_dispatch(
        organization_id=deployment.organization_id,
        kind=kind,
        key=f"{key}:{deployment.pk}:{timezone.now().timestamp():.3f}",
        summary=f"{what} {deployment.name} failed: {reason}"[:500],
        payload={"deployment_id": deployment.pk, "deployment": deployment.name, "reason": reason},
    )


def on_replica_state(event: ReplicaStateChanged) -> None:
    """A replica that turned unhealthy is looked at again after INFERIA_NOTIFY_UNHEALTHY_AFTER_S: a blip that
    recovered by then tells nobody."""
    if event.to_state != Replica.State.UNHEALTHY:
        return
    from apps.notifications.tasks import replica_unhealthy_check

    since = timezone.now().isoformat()
    replica_unhealthy_check.apply_async((event.replica_id, since), countdown=settings.INFERIA_NOTIFY_UNHEALTHY_AFTER_S)


def replica_still_unhealthy_notify(*, replica_id: int, since: str) -> int:
    """Deliveries for a replica unhealthy since `since`, if it still is (none otherwise)."""
    replica = (
        Replica.objects.select_related("deployment")
        .filter(pk=replica_id, state=Replica.State.UNHEALTHY, deployment__organization__isnull=False)
        .first()
    )
    if replica is None:
        return 0
    deployment = replica.deployment
    assert deployment.organization_id is not None  # filtered above
    return len(
        notification_dispatch(
            organization_id=deployment.organization_id,
            kind=EventKind.REPLICA_UNHEALTHY,
            key=f"replica-unhealthy:{replica.pk}:{since}",
            summary=f"A replica of deployment {deployment.name} has been unhealthy since {since[:19]}",
            payload={
                "deployment_id": deployment.pk,
                "replica_id": replica.pk,
                "since": since,
                "last_error": replica.last_error[:300],
            },
        )
    )


def on_key_expiring(event: ApiKeyExpiringSoon) -> None:
    notification_dispatch(
        organization_id=event.organization_id,
        kind=EventKind.KEY_EXPIRING,
        key=f"key-expiring:{event.key_id}:{int(event.expires_at.timestamp())}",
        summary=f"API key {event.name} ({event.prefix}…) expires at {event.expires_at:%Y-%m-%d %H:%M} UTC",
        payload={
            "key_id": event.key_id,
            "name": event.name,
            "prefix": event.prefix,
            "expires_at": event.expires_at.isoformat(),
        },
    )


def subscribers_connect() -> None:
    """Subscribe to the events notifications are made of (called from the app's `ready`)."""
    event_subscribe(BudgetThresholdCrossed, on_budget_threshold)
    event_subscribe(DeploymentStateChanged, on_deployment_state)
    event_subscribe(DeploymentRolloutChanged, on_rollout_state)
    event_subscribe(ReplicaStateChanged, on_replica_state)
    event_subscribe(ApiKeyExpiringSoon, on_key_expiring)
