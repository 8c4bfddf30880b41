"""Changes that must reach every web process at once: with two web processes serving the same keys, a revocation
and an organisation's deactivation are refused by both within a second, and a reactivation serves again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.conftest import http
from tests.kit.processes import TestProcess, web_start
from tests.kit.waiting import eventually


@pytest.fixture
def second_gateway(test_database_url: str) -> Iterator[TestProcess]:
    process = web_start(test_database_url)
    yield process
    process.stop()


def status_of(gateway: TestProcess, secret: str) -> int:
    return http("GET", f"{gateway.url}/v1/models", secret=secret)[0]


def until_every_process_answers(gateways: list[TestProcess], secret: str, status: int, within_s: float = 1.0) -> None:
    eventually(
        lambda: all(status_of(gateway, secret) == status for gateway in gateways),
        timeout=within_s,
        interval=0.01,
        what=f"{status} on every process",
    )


def test_a_revoked_key_is_refused_by_every_process_within_a_second(tenant, gateway, second_gateway):
    from apps.keys.services import api_key_revoke

    both = [gateway, second_gateway]
    assert [status_of(process, tenant.secret) for process in both] == [200, 200]  # cached in both

    api_key_revoke(key=tenant.key, reason="test")

    until_every_process_answers(both, tenant.secret, 401)


def test_a_deactivated_organisation_is_refused_everywhere_and_comes_back(tenant, gateway, second_gateway):
    both = [gateway, second_gateway]
    assert [status_of(process, tenant.secret) for process in both] == [200, 200]

    tenant.organization.is_active = False
    tenant.organization.save(update_fields=["is_active"])
    until_every_process_answers(both, tenant.secret, 401)

    tenant.organization.is_active = True
    tenant.organization.save()
    until_every_process_answers(both, tenant.secret, 200)
