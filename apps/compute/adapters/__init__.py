"""Compute adapters by provider kind: the registry the worker, the REST API and the console look adapters up in.

Only adapters that pass their tests are registered; a provider kind with no adapter here is not offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from apps.compute.adapters.base import (
    AdapterError,
    ComputeAdapter,
    ProviderConfigError,
    ProvisionResult,
    ReplicaPhase,
    ReplicaStatus,
)
from apps.compute.adapters.external import ExternalAdapter
from apps.compute.adapters.kubernetes import KubernetesAdapter
from apps.compute.adapters.local import LocalVllmAdapter
from apps.compute.adapters.simulator import SimulatorAdapter
from apps.compute.adapters.skypilot import SkyPilotAdapter
from apps.compute.adapters.ssh import SshDockerAdapter

if TYPE_CHECKING:
    from apps.compute.models import Provider

ADAPTERS: dict[str, type[ComputeAdapter]] = {
    adapter.kind: adapter
    for adapter in (
        SimulatorAdapter,
        LocalVllmAdapter,
        ExternalAdapter,
        KubernetesAdapter,
        SshDockerAdapter,
        SkyPilotAdapter,
    )
}


# Kinds whose specs Inferia builds and validates against the platform's published schema (tests/compute), but
# that it cannot run: the live network needs a transaction signed with the tenant's wallet. They have no adapter,
# are never in supported_kinds(), and the console does not offer them; the docs call them spec-validated, not run
# live.
SPEC_ONLY_KINDS: dict[str, str] = {
    "akash": "Akash SDL is spec-validated, not run live: deployments need a wallet-signed transaction",
    "nosana": "Nosana job definitions are spec-validated, not run live: posting a job needs a wallet-signed "
    "transaction",
}


class UnsupportedProviderError(AdapterError):
    """A provider kind that has no working adapter."""


def supported_kinds() -> list[str]:
    """Provider kinds with an adapter, the only ones the console and API should offer."""
    return list(ADAPTERS)


def adapter_for(provider: Provider) -> ComputeAdapter:
    """The adapter that runs `provider`'s replicas."""
    try:
        return ADAPTERS[provider.kind](provider)
    except KeyError:
        reason = SPEC_ONLY_KINDS.get(provider.kind, "")
        raise UnsupportedProviderError(
            f"provider kind {provider.kind!r} is not supported{': ' + reason if reason else ''}"
        ) from None


__all__ = [
    "ADAPTERS",
    "SPEC_ONLY_KINDS",
    "AdapterError",
    "ComputeAdapter",
    "ProviderConfigError",
    "ProvisionResult",
    "ReplicaPhase",
    "ReplicaStatus",
    "UnsupportedProviderError",
    "adapter_for",
    "supported_kinds",
]
