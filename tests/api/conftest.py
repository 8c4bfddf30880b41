from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.tenancy import tenant_build


@pytest.fixture
def acme(org, owner):
    return tenant_build(org=org, owner=owner, tag="acme")


@pytest.fixture
def globex(other_org, outsider):
    return tenant_build(org=other_org, owner=outsider, tag="globex")


@pytest.fixture
def as_key():
    """A client presenting the given secret as `Authorization: Bearer ...`."""

    def make(secret):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    return make
