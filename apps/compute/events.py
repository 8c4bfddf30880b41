"""What the compute plane announces, after commit, to whoever subscribes (see inferia_runtime/events.py): the
gateway's catalog reloads when the replicas it routes to change, the console's live page pushes progress and engine
output. Compute imports neither of them."""

from __future__ import annotations

from dataclasses import dataclass

from apps.compute.models import Replica


@dataclass(frozen=True)
class ReplicaStateChanged:
    """A replica moved from one state to another (`replica_transition`)."""

    deployment_id: int
    replica_id: int
    from_state: str
    to_state: str

    @property
    def routing_changed(self) -> bool:
        """Whether the set of replicas the gateway routes to changed: only READY replicas serve."""
        return Replica.State.READY in (self.from_state, self.to_state)


@dataclass(frozen=True)
class ReplicaEndpointChanged:
    """A replica's engine is now at another address (an adapter learnt it after provisioning, or the node moved)."""

    deployment_id: int
    replica_id: int
    serving: bool  # it was READY, so routing must follow the new address


@dataclass(frozen=True)
class ReplicaAdaptersSynced:
    """A deployment's running replicas loaded or unloaded LoRA adapters (each one a model name of its own)."""

    deployment_id: int


@dataclass(frozen=True)
class DeploymentStateChanged:
    """A deployment's state machine moved (`deployment_transition_locked`), with the reason it records."""

    deployment_id: int
    from_state: str
    to_state: str
    reason: str


@dataclass(frozen=True)
class DeploymentRolloutChanged:
    """A deployment's rollout moved (progressing, paused, complete, failed), with the reason it records."""

    deployment_id: int
    state: str
    reason: str


@dataclass(frozen=True)
class ReplicaOutputCaptured:
    """New (already redacted) output lines of a replica's engine; `skipped` earlier new lines were left out to keep
    the announcement small."""

    deployment_id: int
    replica_id: int
    lines: tuple[str, ...]
    skipped: int = 0
