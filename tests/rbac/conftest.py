from __future__ import annotations

import pytest

from tests.tenancy import tenant_build


@pytest.fixture
def acme(org, owner):
    return tenant_build(org=org, owner=owner, tag="acme")


@pytest.fixture
def globex(other_org, outsider):
    return tenant_build(org=other_org, owner=outsider, tag="globex")
