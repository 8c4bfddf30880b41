"""Gateway test fixtures: one inferia-sim engine and one web server (uvicorn, the real ASGI app) per session, and
per test an organisation with an inference key and a deployment served by the engine.

The web server is another process, so it sees only committed data: tests that call it use `transactional_db`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings

from tests.gateway.servers import Process, sim_start, web_start

MAX_BODY_BYTES = 1024 * 1024
METRICS_TOKEN = "test-scrape-token"


@pytest.fixture(scope="session")
def sim() -> Iterator[Process]:
    process = sim_start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def test_database_url(django_db_setup: Any) -> str:
    from django.db import connection

    base = settings.DATABASE_URL.rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


@pytest.fixture(scope="session")
def gateway(test_database_url: str) -> Iterator[Process]:
    """The web process every test talks to over HTTP (torn down before the test database is dropped)."""
    # A small body limit keeps the 413 test light; the flush interval of the catalog is the default.
    process = web_start(
        test_database_url,
        extra_env={"INFERIA_MAX_BODY_BYTES": str(MAX_BODY_BYTES), "INFERIA_METRICS_TOKEN": METRICS_TOKEN},
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def private_gateway(test_database_url: str) -> Iterator[Process]:
    """A web process that may call private addresses (the stand-in engines listen on loopback), as `make run` sets."""
    process = web_start(test_database_url, extra_env={"INFERIA_UPSTREAM_ALLOW_PRIVATE": "1"})
    yield process
    process.stop()


@dataclass
class Tenant:
    """An organisation with an inference key and a deployment of `gw-chat` on the session's engine."""

    organization: Any
    key: Any
    secret: str
    deployment: Any
    replica: Any


def make_deployment(organization: Any, name: str, endpoints: list[str], **fields: Any) -> tuple[Any, list[Any]]:
    from django.db import transaction

    with transaction.atomic():
        return _make_deployment(organization, name, endpoints, **fields)


def _make_deployment(organization: Any, name: str, endpoints: list[str], **fields: Any) -> tuple[Any, list[Any]]:
    from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica

    provider = Provider.objects.create(organization=organization, name=f"sim-{name}", kind=Provider.Kind.SIMULATOR)
    pool = ComputePool.objects.create(organization=organization, provider=provider, name=f"pool-{name}")
    deployment = ModelDeployment.objects.create(
        organization=organization,
        pool=pool,
        name=name,
        model_id=f"sim/{name}",
        served_model_name=name,
        state=ModelDeployment.State.READY,
        **fields,
    )
    replicas = [
        Replica.objects.create(deployment=deployment, endpoint=endpoint, state=Replica.State.READY)
        for endpoint in endpoints
    ]
    return deployment, replicas


def make_key(organization: Any, scopes: tuple[str, ...] = ("inference",)) -> tuple[Any, str]:
    from apps.keys.services import api_key_create

    issued = api_key_create(organization=organization, name="test key", scopes=list(scopes))
    return issued.key, issued.secret


def http(
    method: str, url: str, *, body: Any = None, secret: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain request: (status, lower-cased headers, body)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback test server)
    request.add_header("content-type", "application/json")
    if secret is not None:
        request.add_header("authorization", f"Bearer {secret}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def wait_until_served(gateway: Process, secret: str, model: str, timeout: float = 5.0) -> None:
    """Until the gateway routes `model` for this key: catalog changes reach it through Redis, a moment later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, _ = http("GET", f"{gateway.url}/v1/models/{model}", secret=secret)
        if status == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"the gateway never served {model}")


@pytest.fixture
def tenant(transactional_db: Any, sim: Process, gateway: Process) -> Tenant:
    from apps.orgs.models import Organization

    organization = Organization.objects.create(name="Acme", slug="acme")
    key, secret = make_key(organization)
    deployment, replicas = make_deployment(
        organization,
        "gw-chat",
        [sim.url],
        price_input_per_mtok_micros=1_000_000,
        price_output_per_mtok_micros=2_000_000,
    )
    wait_until_served(gateway, secret, "gw-chat")
    return Tenant(organization, key, secret, deployment, replicas[0])
