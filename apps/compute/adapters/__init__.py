"""Compute adapters by provider kind: the registry the worker, the REST API and the console look adapters up in.

Only adapters that pass their tests are registered; a provider kind with no adapter here is not offered.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import connections

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
from apps.compute.credentials import CredentialsError

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


# The longest a "test connection" keeps the person waiting: each adapter is given this, and the caller stops waiting
# a little after it whatever the adapter does.
CONNECTION_CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ConnectionCheck:
    """What testing a provider's connection found: whether it worked, and a message safe to show (never a secret)."""

    ok: bool
    message: str


def provider_connection_check(provider: Provider, *, timeout_s: float = CONNECTION_CHECK_TIMEOUT_S) -> ConnectionCheck:
    """Ask `provider`'s adapter to reach it (reading only), waiting at most about `timeout_s`. Failures are answers,
    not exceptions; an unexpected error is named by its type only, since its text may quote what was sent."""

    def run() -> str:
        try:
            return adapter_for(provider).connection_check(timeout_s=timeout_s)
        finally:
            connections.close_all()  # the adapter reads nothing, but this thread's connections end with it

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="connection-check")
    try:
        return ConnectionCheck(True, pool.submit(run).result(timeout=timeout_s + 2))
    except FutureTimeout:
        return ConnectionCheck(False, f"No answer within {timeout_s:g} s.")
    except (AdapterError, CredentialsError) as error:
        return ConnectionCheck(False, str(error))
    except Exception as error:  # any library's failure is an outcome to show, named safely
        return ConnectionCheck(False, f"The check failed ({type(error).__name__}).")
    finally:
        pool.shutdown(wait=False)  # a stuck adapter call finishes in the background, past its own timeout


__all__ = [
    "ADAPTERS",
    "CONNECTION_CHECK_TIMEOUT_S",
    "SPEC_ONLY_KINDS",
    "AdapterError",
    "ComputeAdapter",
    "ConnectionCheck",
    "ProviderConfigError",
    "ProvisionResult",
    "ReplicaPhase",
    "ReplicaStatus",
    "UnsupportedProviderError",
    "adapter_for",
    "provider_connection_check",
    "supported_kinds",
]
