"""Gateway test fixtures: one inferia-sim engine and one web server (uvicorn, the real ASGI app) per session, and
per test an organisation with an inference key and a deployment served by the engine.

The web server is another process, so it sees only committed data: tests that call it use `transactional_db`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.factories import OrganizationFactory, api_key_issue, deployment_serving
from tests.kit.processes import TestProcess, child_database_url, sim_start, web_start
from tests.kit.waiting import eventually

MAX_BODY_BYTES = 1024 * 1024
METRICS_TOKEN = "test-scrape-token"
SOCKET_ORIGIN = "https://app.example"  # the one origin a browser may open /v1/chat/socket from
# The names every test engine serves; deployments in the tests use them.
SIM_MODELS = ("gw-chat", "gw-shared", "gw-other")


@pytest.fixture(scope="session")
def sim() -> Iterator[TestProcess]:
    process = sim_start(models=SIM_MODELS)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def test_database_url(django_db_setup: Any) -> str:
    return child_database_url()


@pytest.fixture(scope="session")
def gateway(test_database_url: str) -> Iterator[TestProcess]:
    """The web process every test talks to over HTTP (torn down before the test database is dropped)."""
    # A small body limit keeps the 413 test light; the flush interval of the catalog is the default.
    process = web_start(
        test_database_url,
        extra_env={
            "INFERIA_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "INFERIA_METRICS_TOKEN": METRICS_TOKEN,
            "INFERIA_SOCKET_ALLOWED_ORIGINS": SOCKET_ORIGIN,
        },
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def private_gateway(test_database_url: str) -> Iterator[TestProcess]:
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
    """A READY deployment of `name` (committed at once: the web process reads it) with a READY replica per endpoint."""
    from django.db import transaction

    with transaction.atomic():
        return deployment_serving(organization, name, endpoints, **fields)


def make_key(organization: Any, scopes: tuple[str, ...] = ("inference",)) -> tuple[Any, str]:
    issued = api_key_issue(organization=organization, scopes=scopes)
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


def wait_until_served(gateway: TestProcess, secret: str, model: str, timeout: float = 5.0) -> None:
    """Until the gateway routes `model` for this key: catalog changes reach it through Redis, a moment later."""
    eventually(
        lambda: http("GET", f"{gateway.url}/v1/models/{model}", secret=secret)[0] == 200,
        timeout=timeout,
        what=f"the gateway serving {model}",
    )


@pytest.fixture
def tenant(transactional_db: Any, sim: TestProcess, gateway: TestProcess) -> Tenant:
    organization = OrganizationFactory(name="Acme", slug="acme")
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
