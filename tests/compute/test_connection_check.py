"""A provider's "test connection": each adapter reaches its provider reading only and says what it found; failures
are outcomes with a message that never quotes the credentials, and the wait is bounded whatever the provider does."""

from __future__ import annotations

import time

import asyncssh
import pytest

from apps.compute.adapters import provider_connection_check
from apps.compute.models import Provider
from tests.compute.fakes import FakeServer
from tests.compute.test_adapters_ssh import FakeDockerHost
from tests.factories import ProviderFactory

pytestmark = pytest.mark.django_db

TOKEN = "sky-token-connection-check-51"


@pytest.fixture
def server():
    def health(exchange):
        if exchange.headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {"detail": "bad token"}
        return 200, {"status": "healthy"}

    def slow(exchange):
        time.sleep(3)
        return 200, ""

    fake = FakeServer({("GET", "/api/health"): health, ("GET", "/health"): health, ("GET", "/slow/health"): slow})
    yield fake
    fake.close()


def test_skypilot_answers_with_the_token_and_refuses_a_wrong_one(server):
    good = ProviderFactory(kind=Provider.Kind.SKYPILOT, config={"api_server": server.url}, credentials={"token": TOKEN})
    bad = ProviderFactory(kind=Provider.Kind.SKYPILOT, config={"api_server": server.url}, credentials={"token": "nope"})

    assert provider_connection_check(good).ok
    refused = provider_connection_check(bad)
    assert not refused.ok
    assert "refused the token (401)" in refused.message
    assert all(exchange.path == "/api/health" for exchange in server.exchanges)  # it read, it changed nothing


def test_external_endpoints_are_asked_their_health_path(server, settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    provider = ProviderFactory(kind="external", config={"base_urls": [server.url]}, credentials={"api_key": TOKEN})
    outcome = provider_connection_check(provider)
    assert outcome.ok, outcome.message
    assert outcome.message == "1 endpoint(s) answer their health check."


def test_a_provider_that_does_not_answer_in_time_is_a_failure_within_the_bound(server, settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    provider = ProviderFactory(kind="external", config={"base_urls": [f"{server.url}/slow"]})
    started = time.monotonic()
    outcome = provider_connection_check(provider, timeout_s=0.5)
    assert time.monotonic() - started < 2.5
    assert not outcome.ok


def test_missing_credentials_are_said_without_reaching_anything():
    provider = ProviderFactory(kind="kubernetes", config={"namespace": "inferia"})
    outcome = provider_connection_check(provider)
    assert not outcome.ok
    assert "kubernetes credentials need" in outcome.message


def test_an_unreachable_ssh_host_is_a_failure_that_names_no_secret():
    provider = ProviderFactory(
        kind="ssh",
        config={"host": "127.0.0.1", "port": 9, "username": "gpu"},
        credentials={
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            "password": "pw-9f8e7d",
        },
    )
    outcome = provider_connection_check(provider, timeout_s=3)
    assert not outcome.ok
    assert "pw-9f8e7d" not in outcome.message


VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.2",
    "gitCommit": "abc",
    "gitTreeState": "clean",
    "buildDate": "2024-06-11T00:00:00Z",
    "goVersion": "go1.22.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@pytest.fixture
def cluster():
    def authorised(answer):
        def route(exchange):
            if exchange.headers.get("authorization") != "Bearer cluster-token":
                return 403, {"kind": "Status", "code": 403, "reason": "Forbidden"}
            return 200, answer

        return route

    services = {"kind": "ServiceList", "apiVersion": "v1", "metadata": {}, "items": []}
    fake = FakeServer(
        {
            ("GET", "/version/"): authorised(VERSION),
            ("GET", "/api/v1/namespaces/inferia/services"): authorised(services),
        }
    )
    yield fake
    fake.close()


def test_kubernetes_reads_the_version_and_the_namespace_and_names_a_refusal(cluster):
    def provider(token):
        return ProviderFactory(
            kind="kubernetes", config={"namespace": "inferia"}, credentials={"host": cluster.url, "token": token}
        )

    works = provider_connection_check(provider("cluster-token"))
    refused = provider_connection_check(provider("wrong"))

    assert works.ok, works.message
    assert works.message == "Kubernetes v1.30.2 answers; namespace 'inferia' is readable."
    assert not refused.ok
    assert "answered 403" in refused.message
    assert {exchange.method for exchange in cluster.exchanges} == {"GET"}
    assert "limit=1" in cluster.exchanges[1].path


class DockerHostWithVersion(FakeDockerHost):
    def docker(self, argv, env=None):
        if argv[:2] == ["docker", "version"]:
            return "27.1.1\n", "", 0
        return super().docker(argv, env)


def _ssh_provider(host, **credentials):
    return ProviderFactory(
        kind="ssh",
        config={"host": "127.0.0.1", "port": host.port, "username": "gpu"},
        credentials={
            "private_key": host.client_key.export_private_key().decode(),
            "host_key": host.public_host_key(),
            **credentials,
        },
    )


def test_ssh_signs_in_and_asks_docker_its_version_changing_nothing():
    host = DockerHostWithVersion(health_port=9)
    try:
        outcome = provider_connection_check(_ssh_provider(host))
        foreign_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
        stranger = provider_connection_check(_ssh_provider(host, host_key=foreign_key))
    finally:
        host.close()
    assert outcome.ok, outcome.message
    assert outcome.message == "Signed in to 127.0.0.1; Docker 27.1.1 answers."
    assert host.containers == {}
    assert not stranger.ok  # a host whose key is not the one stored is refused, as provisioning would refuse it
