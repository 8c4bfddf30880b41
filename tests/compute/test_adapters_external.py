"""The external adapter: user-run endpoints, SSRF-checked, health-probed with the upstream key."""

from __future__ import annotations

import pytest

from apps.compute.adapters import ReplicaPhase, adapter_for
from apps.compute.adapters.base import AdapterError, ProviderConfigError
from apps.compute.adapters.external import external_base_urls_check, external_upstream_headers
from apps.compute.credentials import Secrets
from apps.compute.models import Provider, Replica
from apps.compute.urlsafety import UnsafeUrlError
from tests.compute.fakes import FakeServer
from tests.factories import ReplicaFactory


@pytest.fixture
def upstream():
    def health(exchange):
        assert exchange.headers.get("authorization") == "Bearer sk-upstream", "missing upstream key"
        return 200, {}

    server = FakeServer({("GET", "/health"): health, ("GET", "/v1/models"): lambda e: (200, {"data": []})})
    yield server
    server.close()


def test_base_urls_are_normalised_and_ssrf_checked(settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False
    assert external_base_urls_check(["https://8.8.8.8/v1/", "https://8.8.8.8"]) == ["https://8.8.8.8"]
    for bad in (["http://169.254.169.254/"], ["http://localhost:8000"], ["ftp://8.8.8.8"], [], "", [1]):
        with pytest.raises(UnsafeUrlError):
            external_base_urls_check(bad)


def test_the_upstream_key_becomes_a_bearer_header():
    assert external_upstream_headers(Secrets({"api_key": "k"})) == {"Authorization": "Bearer k"}
    assert external_upstream_headers(Secrets()) == {}


@pytest.mark.django_db
def test_private_endpoints_are_refused_unless_allowed(make_replica, settings, upstream):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False
    replica = make_replica(Provider.Kind.EXTERNAL, config={"base_urls": [upstream.url]})
    with pytest.raises(ProviderConfigError, match="non-public"):
        adapter_for(replica.deployment.pool.provider).provision(replica)


@pytest.mark.django_db
def test_each_replica_takes_its_own_endpoint_and_keeps_it(make_replica, settings, upstream):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    other = upstream.url.replace("127.0.0.1", "localhost")
    first = make_replica(Provider.Kind.EXTERNAL, config={"base_urls": [upstream.url + "/v1", other]})
    adapter = adapter_for(first.deployment.pool.provider)
    result = adapter.provision(first)
    assert result.endpoint == upstream.url
    Replica.objects.filter(pk=first.pk).update(provider_handle=result.handle, endpoint=result.endpoint, state="ready")
    first.refresh_from_db()
    assert adapter.provision(first).endpoint == upstream.url  # idempotent

    second = ReplicaFactory(deployment=first.deployment)
    assert adapter.provision(second).endpoint == other
    Replica.objects.filter(pk=second.pk).update(provider_handle={"base_url": other}, state="ready")
    third = ReplicaFactory(deployment=first.deployment)
    with pytest.raises(AdapterError, match="already serve"):
        adapter.provision(third)


@pytest.mark.django_db
def test_health_is_probed_with_the_upstream_key_and_through_the_ssrf_guard(make_replica, settings, upstream):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    replica = make_replica(
        Provider.Kind.EXTERNAL, config={"base_urls": [upstream.url]}, credentials={"api_key": "sk-upstream"}
    )
    adapter = adapter_for(replica.deployment.pool.provider)
    replica.provider_handle = adapter.provision(replica).handle
    assert adapter.status(replica).phase == ReplicaPhase.READY
    assert upstream.errors == []

    # The URL was fine when saved; a later check at connection time refuses it all the same.
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False
    status = adapter.status(replica)
    assert status.phase == ReplicaPhase.FAILED
    assert "non-public" in status.detail
    assert len(upstream.exchanges) == 1


@pytest.mark.django_db
def test_a_wrong_upstream_key_keeps_the_replica_out_of_routing(make_replica, settings, upstream):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    replica = make_replica(Provider.Kind.EXTERNAL, config={"base_urls": [upstream.url]}, credentials={"api_key": "x"})
    adapter = adapter_for(replica.deployment.pool.provider)
    replica.provider_handle = adapter.provision(replica).handle
    assert adapter.status(replica).phase == ReplicaPhase.STARTING
    adapter.teardown(replica)  # starts and stops nothing
    assert adapter.logs(replica) == ""
