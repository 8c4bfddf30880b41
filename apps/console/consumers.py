"""The console's WebSocket consumers. `DeploymentProgressConsumer` streams one deployment's state, replicas and
history to its detail page while it provisions, scales or stops, and its replicas' engine output as the worker
captures it. `VectorStoreProgressConsumer` streams a vector store's files and their ingestion progress to the
store's page.

The socket is authenticated by the console session (Channels' AuthMiddlewareStack) and held to the same rules as the
pages: a session that has not passed the two-factor gate is refused, and the deployment must be one the user may
view through `.restrict()` (checked on connect and again before every push, so revoked access ends the stream)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.compute.models import ModelDeployment
from apps.console.auth_flow import SECOND_FACTOR_METHODS, SESSION_SECOND_FACTOR
from apps.console.deployment_selectors import deployment_log_entries, deployment_snapshot
from apps.console.knowledge_selectors import vector_store_snapshot
from apps.console.live import deployment_group, vector_store_group
from apps.knowledge.models import VectorStore, VectorStoreFile
from apps.rbac.twofactor_services import twofactor_enabled, twofactor_required

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


def session_passes_gate(*, user: Any, session: Any) -> bool:
    """The WebSocket twin of the console's two-factor gate: signed in, and with a second factor when the user has
    one or an organisation requires one (sessions that signed in through SSO trusted for 2FA count too)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    method = session.get(SESSION_SECOND_FACTOR) if session is not None else None
    if method in SECOND_FACTOR_METHODS or method == "sso":
        return True
    if method != "none":
        return False
    return not twofactor_enabled(user=user) and not twofactor_required(user=user)


def deployment_snapshot_for(*, user: Any, deployment_id: int) -> dict[str, Any] | None:
    """The deployment's live snapshot if `user` may view it, else None."""
    deployment = ModelDeployment.objects.restrict(user).filter(pk=deployment_id).first()
    if deployment is None:
        return None
    return deployment_snapshot(deployment=deployment)


def deployment_visible_to(*, user: Any, deployment_id: int) -> bool:
    """Whether `user` may (still) view the deployment: one query, before passing on its replicas' output."""
    return ModelDeployment.objects.restrict(user).filter(pk=deployment_id).exists()


class DeploymentProgressConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/console/deployments/<id>/`: a snapshot and the replicas' captured output on connect, then a snapshot
    after each change the compute plane announces on the group `deployment-<id>` (see apps/console/live.py) and
    the new output lines the worker announces there."""

    deployment_id: int
    group: str

    async def connect(self) -> None:
        user = self.scope.get("user")
        self.deployment_id = int(self.scope["url_route"]["kwargs"]["pk"])
        self.group = deployment_group(self.deployment_id)
        allowed = await database_sync_to_async(session_passes_gate)(user=user, session=self.scope.get("session"))
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        snapshot = await database_sync_to_async(deployment_snapshot_for)(user=user, deployment_id=self.deployment_id)
        if snapshot is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # The output captured so far comes with the first snapshot: the panel starts from it, then appends.
        logs = await sync_to_async(deployment_log_entries)(replica_ids=[row["id"] for row in snapshot["replicas"]])
        await self.send_json({"type": "snapshot", "deployment": snapshot, "logs": logs})

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None) and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The page may ask for a fresh snapshot (`{"type": "refresh"}`); anything else is ignored."""
        if isinstance(content, dict) and content.get("type") == "refresh":
            await self._push(None)

    async def deployment_progress(self, message: dict[str, Any]) -> None:
        """A change announced by the compute plane: push the deployment as it is now."""
        await self._push(message.get("payload"))

    async def deployment_logs(self, message: dict[str, Any]) -> None:
        """New output lines of one replica, captured and redacted by the worker: passed on while the user may view."""
        user = self.scope.get("user")
        if not await database_sync_to_async(deployment_visible_to)(user=user, deployment_id=self.deployment_id):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        entry = {"replica": message["replica"], "lines": message["lines"], "skipped": message.get("skipped", 0)}
        await self.send_json({"type": "logs", "entries": [entry]})

    async def _push(self, event: Any) -> None:
        user = self.scope.get("user")
        snapshot = await database_sync_to_async(deployment_snapshot_for)(user=user, deployment_id=self.deployment_id)
        if snapshot is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send_json({"type": "snapshot", "deployment": snapshot, "event": event})


def vector_store_snapshot_for(*, user: Any, store_id: int) -> dict[str, Any] | None:
    """The store's files and progress if `user` may view the store, else None (the files through `.restrict()`
    too)."""
    store = VectorStore.objects.restrict(user).filter(pk=store_id).first()
    if store is None:
        return None
    return vector_store_snapshot(store=store, store_files=VectorStoreFile.objects.restrict(user))


class VectorStoreProgressConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/console/knowledge/<id>/`: the store's files on connect, then again after each ingestion step that
    knowledge announces on the group `vector-store-<id>` (see apps/console/live.py)."""

    store_id: int
    group: str

    async def connect(self) -> None:
        user = self.scope.get("user")
        self.store_id = int(self.scope["url_route"]["kwargs"]["pk"])
        self.group = vector_store_group(self.store_id)
        allowed = await database_sync_to_async(session_passes_gate)(user=user, session=self.scope.get("session"))
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        snapshot = await database_sync_to_async(vector_store_snapshot_for)(user=user, store_id=self.store_id)
        if snapshot is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "snapshot", "store": snapshot})

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None) and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The page may ask for a fresh snapshot (`{"type": "refresh"}`, after an upload); anything else is
        ignored."""
        if isinstance(content, dict) and content.get("type") == "refresh":
            await self._push()

    async def store_progress(self, message: dict[str, Any]) -> None:
        """A file of the store moved on: push the store's files as they are now."""
        await self._push()

    async def _push(self) -> None:
        user = self.scope.get("user")
        snapshot = await database_sync_to_async(vector_store_snapshot_for)(user=user, store_id=self.store_id)
        if snapshot is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send_json({"type": "snapshot", "store": snapshot})
