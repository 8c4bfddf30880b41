"""`external`: replicas are OpenAI-compatible servers the user already runs (vLLM, SGLang, TGI, a hosted API).

The provider's config lists their base URLs (`base_urls`); each replica of a deployment takes one of them.
Credentials may hold the upstream `api_key`, sent as a bearer token. The URLs are user input, so they are
SSRF-checked when provisioned and every health probe connects through the guarded connector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

from apps.compute.adapters.base import (
    AdapterError,
    ComputeAdapter,
    ProviderConfigError,
    ProvisionResult,
    ReplicaPhase,
    ReplicaStatus,
)
from apps.compute.adapters.http import http_call
from apps.compute.urlsafety import UnsafeUrlError, url_check

if TYPE_CHECKING:
    from apps.compute.credentials import Secrets
    from apps.compute.models import Replica

HEALTH_TIMEOUT_S = 5.0
# How many of a provider's endpoints a connection check asks.
CHECKED_URLS_MAX = 4


def external_base_urls_check(urls: Any) -> list[str]:
    """`urls` as a clean list of root URLs (no trailing slash, no `/v1`), each SSRF-checked; for forms and the API.

    Raises UnsafeUrlError naming the first bad one."""
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls or not all(isinstance(url, str) for url in urls):
        raise UnsafeUrlError("give one or more base URLs")
    cleaned = []
    for url in urls:
        base = url.strip().rstrip("/")
        base = base.removesuffix("/v1")
        url_check(base)
        cleaned.append(base)
    return list(dict.fromkeys(cleaned))


def external_upstream_headers(credentials: Secrets) -> dict[str, str]:
    """The headers every request to this provider's endpoints carries (the gateway adds them per replica)."""
    api_key = credentials.get("api_key")
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class ExternalAdapter(ComputeAdapter):
    """Adopts endpoints the user runs. Config: `base_urls` (list), `health_path` (default "/health"; a hosted API
    without one can use "/v1/models"). Provisioning starts nothing and teardown stops nothing."""

    kind = "external"

    def _base_urls(self) -> list[str]:
        try:
            return external_base_urls_check(self.config.get("base_urls"))
        except UnsafeUrlError as error:
            raise ProviderConfigError(f"provider {self.provider.name}: {error}") from None

    def connection_check(self, *, timeout_s: float) -> str:
        # The first few endpoints share the time: a long list must not make the check outlast its bound.
        urls = self._base_urls()[:CHECKED_URLS_MAX]
        for base in urls:
            status = self.status_at(base, timeout_s=timeout_s / len(urls))
            if status.phase != ReplicaPhase.READY:
                raise AdapterError(f"{base}: {status.detail}")
        return f"{len(urls)} endpoint(s) answer their health check."

    def provision(self, replica: Replica) -> ProvisionResult:
        urls = self._base_urls()
        held = set(
            replica.deployment.replicas.exclude(pk=replica.pk)
            .exclude(state__in=("stopped", "failed"))
            .values_list("provider_handle__base_url", flat=True)
        )
        current = (replica.provider_handle or {}).get("base_url")
        if current in urls:
            choice = current  # idempotent: a re-run keeps the endpoint it took
        else:
            free = [url for url in urls if url not in held]
            if not free:
                raise AdapterError(f"all {len(urls)} endpoint(s) of {self.provider.name} already serve this deployment")
            choice = free[0]
        return ProvisionResult(endpoint=choice, handle={"base_url": choice}, messages=(f"adopted {choice}",))

    def status(self, replica: Replica) -> ReplicaStatus:
        base = (replica.provider_handle or {}).get("base_url") or replica.endpoint
        if not base:
            return ReplicaStatus(ReplicaPhase.STOPPED, "not provisioned")
        return self.status_at(base, timeout_s=HEALTH_TIMEOUT_S)

    def status_at(self, base: str, *, timeout_s: float) -> ReplicaStatus:
        """Where the server at `base` stands, by its health path (through the SSRF guard)."""
        path = self.config.get("health_path", "/health")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ProviderConfigError("health_path must start with /")
        try:
            response = http_call(
                "GET",
                base + path,
                headers=external_upstream_headers(self.credentials()),
                timeout_s=timeout_s,
                ssrf_guard=True,
            )
        except aiohttp.InvalidUrlClientError as error:
            return ReplicaStatus(ReplicaPhase.FAILED, f"refused: {error}")
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            return ReplicaStatus(ReplicaPhase.STARTING, f"{path} not answering ({type(error).__name__})")
        if response.status == 200:
            return ReplicaStatus(ReplicaPhase.READY)
        return ReplicaStatus(ReplicaPhase.STARTING, f"{path} answered {response.status}")

    def logs(self, replica: Replica, tail: int = 200) -> str:
        return ""  # an external server's logs are its operator's; Inferia has no access to them

    def teardown(self, replica: Replica) -> None:
        return None  # Inferia did not start it and must not stop it; the replica row simply goes away
