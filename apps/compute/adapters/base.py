"""The one interface every compute provider implements: provision, status, logs and teardown of a replica.

Adapters are synchronous (Celery tasks call them) and idempotent: provisioning a replica that already runs
returns the existing one, tearing down a replica that is gone succeeds, so a task killed half-way can simply run
again. An adapter never writes the database; it returns what the caller (apps/compute/services.py) stores:
`ProvisionResult.handle` goes into `Replica.provider_handle` and is handed back on every later call.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp

from apps.compute.adapters.http import http_call
from apps.compute.credentials import Secrets, provider_credentials
from apps.compute.engine import EngineSpec, deployment_engine_spec

if TYPE_CHECKING:
    from apps.compute.models import ModelDeployment, Provider, Replica


class AdapterError(Exception):
    """A provider refused or failed an operation; the message is safe to show and store as the replica's error."""


class ProviderConfigError(AdapterError):
    """The provider's config or credentials lack something the adapter needs."""


class ReplicaPhase(enum.StrEnum):
    """Where a replica stands, as the provider sees it."""

    STARTING = "starting"  # created, not answering /health yet
    READY = "ready"  # answers /health
    FAILED = "failed"  # gone or crashed: the reconciler replaces it
    STOPPED = "stopped"  # torn down, or never provisioned


@dataclass(frozen=True)
class ProvisionResult:
    """What provisioning created: where the engine will answer, and the handle to find it again."""

    endpoint: str
    handle: dict[str, Any]
    # Human-readable steps for the console's live progress.
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplicaStatus:
    """A replica's phase, with a reason, and its endpoint where provisioning could not know it yet."""

    phase: ReplicaPhase
    detail: str = ""
    endpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Set by `node_status` when the node runs and its engine's `GET /health` (at this server root) decides the rest.
    engine: str = ""


class ComputeAdapter(ABC):
    """Runs replicas of deployments on one provider. Subclasses set `kind` and implement the four operations."""

    kind: ClassVar[str]
    # "live": exercised against the real thing in tests (a process, an SSH server) or a contract-checked fake of
    # its HTTP API; "spec": its specs are validated but it has not run against the live platform.
    verified: ClassVar[str] = "live"

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.config: dict[str, Any] = dict(provider.config or {})

    def credentials(self) -> Secrets:
        """The provider's decrypted credentials."""
        return provider_credentials(self.provider)

    def engine_spec(self, deployment: ModelDeployment) -> EngineSpec:
        """The deployment's validated engine spec (raises EngineArgsError on bad arguments)."""
        return deployment_engine_spec(deployment)

    def config_str(self, key: str, default: str | None = None) -> str:
        """A required (or defaulted) string from the provider's config."""
        value = self.config.get(key, default)
        if not isinstance(value, str) or not value:
            raise ProviderConfigError(f"provider {self.provider.name}: config needs {key!r}")
        return value

    @abstractmethod
    def provision(self, replica: Replica) -> ProvisionResult:
        """Start `replica` (or find it already started); returns at once, without waiting for it to be ready."""

    @abstractmethod
    def status(self, replica: Replica) -> ReplicaStatus:
        """Where `replica` stands now."""

    def node_status(self, replica: Replica) -> ReplicaStatus:
        """Where `replica` stands as its provider sees it, leaving the engine's `/health` to the caller: a status
        with `engine` set means the node runs and that engine's answer decides between READY and STARTING. The
        health checker calls this so that it can ask every engine at once on one event loop; an adapter whose
        `status` asks nothing of the engine (or asks it in its own way) keeps this default."""
        return self.status(replica)

    @abstractmethod
    def logs(self, replica: Replica, tail: int = 200) -> str:
        """The last `tail` lines of the engine's output."""

    @abstractmethod
    def teardown(self, replica: Replica) -> None:
        """Stop `replica` and release what it held; succeeds when it is already gone."""

    def connection_check(self, *, timeout_s: float) -> str:
        """Reach the provider with its config and credentials, changing nothing there, within about `timeout_s`;
        returns what was found (safe to show). Raises AdapterError (ProviderConfigError for a config or credentials
        the adapter cannot use) with a message safe to show. An adapter with nothing to reach says so instead."""
        raise AdapterError(f"{self.kind} providers offer no connection check")


def engine_pending(base: str, detail: str = "") -> ReplicaStatus:
    """A `node_status` answer: the node runs and the engine at `base` decides; `detail` is kept if it answers."""
    return ReplicaStatus(ReplicaPhase.STARTING, detail, engine=base)


def engine_health_judge(pending: ReplicaStatus, *, answered: int | None, error: str = "") -> ReplicaStatus:
    """What an engine's `/health` answer (its status code, or None and the transport error) makes of `pending`."""
    if answered == 200:
        return ReplicaStatus(ReplicaPhase.READY, pending.detail, endpoint=pending.endpoint, extra=pending.extra)
    reason = f"/health answered {answered}" if answered is not None else f"/health not answering yet ({error})"
    return ReplicaStatus(ReplicaPhase.STARTING, reason, endpoint=pending.endpoint, extra=pending.extra)


def engine_status_settle(pending: ReplicaStatus, *, timeout_s: float = 2.0) -> ReplicaStatus:
    """A `node_status` made whole by asking its engine's `/health` here (for `status`, one replica at a time)."""
    if not pending.engine:
        return pending
    try:
        response = http_call("GET", f"{pending.engine.rstrip('/')}/health", timeout_s=timeout_s)
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        return engine_health_judge(pending, answered=None, error=type(error).__name__)
    return engine_health_judge(pending, answered=response.status)


def engine_health(base: str, detail: str = "", *, timeout_s: float = 2.0) -> ReplicaStatus:
    """READY if the engine at `base` answers `GET /health` with 200, STARTING otherwise (for trusted endpoints
    Inferia started itself; user-supplied ones go through the SSRF guard, see the external adapter)."""
    return engine_status_settle(engine_pending(base, detail), timeout_s=timeout_s)
