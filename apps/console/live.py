"""Live console updates over WebSockets: the channel-layer group each deployment's watchers join, and the
subscribers that pass compute's events (apps/compute/events.py, delivered after commit) to it: a deployment or one of
its replicas changed state, and a replica's engine wrote new output lines. Likewise a vector store's group, which
hears of its files' ingestion progress (apps/knowledge/events.py).

A progress message carries only what happened; the consumer re-reads the deployment (through `.restrict()`) before
pushing, so a watcher never sees more than the page would show and a lost message is repaired by the next one; a
store's progress message likewise carries ids and counts only. A log message carries the lines themselves (already
redacted by apps/compute/replica_logs.py); the consumer checks that the watcher may still view the deployment before
passing them on.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps.compute.events import (
    DeploymentRolloutChanged,
    DeploymentStateChanged,
    ReplicaEndpointChanged,
    ReplicaOutputCaptured,
    ReplicaStateChanged,
)
from apps.knowledge.events import StoreFileProgressed
from inferia_runtime.events import event_subscribe

logger = logging.getLogger(__name__)

PROGRESS_MESSAGE = "deployment.progress"
LOGS_MESSAGE = "deployment.logs"
STORE_PROGRESS_MESSAGE = "store.progress"


def deployment_group(deployment_id: int) -> str:
    """The channel-layer group of a deployment's watchers."""
    return f"deployment-{deployment_id}"


def deployment_progress_publish(deployment_id: int, payload: dict[str, Any]) -> None:
    """Tell the console pages watching `deployment_id` that it changed (`payload` says how, e.g. a new state).

    Called after commit. Never raises: a channel layer that is down costs live updates, not the
    provisioning step that called it."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": PROGRESS_MESSAGE, "deployment_id": deployment_id, "payload": payload}
    try:
        async_to_sync(layer.group_send)(deployment_group(deployment_id), message)
    except Exception:
        logger.warning("could not publish progress of deployment %s", deployment_id, exc_info=True)


def deployment_logs_publish(deployment_id: int, replica_id: int, lines: list[str], *, skipped: int = 0) -> None:
    """Pass new (redacted) output lines of replica `replica_id` to the pages watching `deployment_id`; `skipped`
    says how many earlier new lines were left out to keep the message small. Never raises."""
    layer = get_channel_layer()
    if layer is None or not lines:
        return
    message = {
        "type": LOGS_MESSAGE,
        "deployment_id": deployment_id,
        "replica": replica_id,
        "lines": lines,
        "skipped": skipped,
    }
    try:
        async_to_sync(layer.group_send)(deployment_group(deployment_id), message)
    except Exception:
        logger.warning("could not publish output of replica %s", replica_id, exc_info=True)


def progress_on_deployment_state(event: DeploymentStateChanged) -> None:
    deployment_progress_publish(event.deployment_id, {"state": event.to_state, "reason": event.reason})


def progress_on_rollout(event: DeploymentRolloutChanged) -> None:
    deployment_progress_publish(event.deployment_id, {"rollout": event.state, "reason": event.reason})


def progress_on_replica_state(event: ReplicaStateChanged) -> None:
    deployment_progress_publish(event.deployment_id, {"replica": event.replica_id, "state": event.to_state})


def progress_on_replica_endpoint(event: ReplicaEndpointChanged) -> None:
    deployment_progress_publish(event.deployment_id, {"replica": event.replica_id})


def logs_on_replica_output(event: ReplicaOutputCaptured) -> None:
    deployment_logs_publish(event.deployment_id, event.replica_id, list(event.lines), skipped=event.skipped)


def vector_store_group(store_id: int) -> str:
    """The channel-layer group of a vector store's watchers (its page)."""
    return f"vector-store-{store_id}"


def progress_on_store_file(event: StoreFileProgressed) -> None:
    """Tell the pages watching the file's store that its ingestion moved on. Never raises (see above)."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {
        "type": STORE_PROGRESS_MESSAGE,
        "store_file": event.store_file_id,
        "status": event.status,
        "chunks_done": event.chunks_done,
        "chunks_total": event.chunks_total,
    }
    try:
        async_to_sync(layer.group_send)(vector_store_group(event.vector_store_id), message)
    except Exception:
        logger.warning("could not publish progress of vector store %s", event.vector_store_id, exc_info=True)


def knowledge_events_subscribe() -> None:
    """Pass ingestion progress on to the store pages watching it (called from ConsoleConfig.ready)."""
    event_subscribe(StoreFileProgressed, progress_on_store_file)


def compute_events_subscribe() -> None:
    """Pass compute's changes on to the pages watching them (called from ConsoleConfig.ready)."""
    event_subscribe(DeploymentStateChanged, progress_on_deployment_state)
    event_subscribe(DeploymentRolloutChanged, progress_on_rollout)
    event_subscribe(ReplicaStateChanged, progress_on_replica_state)
    event_subscribe(ReplicaEndpointChanged, progress_on_replica_endpoint)
    event_subscribe(ReplicaOutputCaptured, logs_on_replica_output)
