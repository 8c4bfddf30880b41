"""Fixtures of the management pages' tests (keys, policies, templates, usage, audit, members): two complete tenants
and clients signed in as each persona."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import MembershipFactory
from tests.tenancy import tenant_build


@pytest.fixture
def acme(org, owner):
    return tenant_build(org=org, owner=owner, tag="acme")


@pytest.fixture
def globex(other_org, outsider):
    return tenant_build(org=other_org, owner=outsider, tag="globex")


@pytest.fixture
def signed_in():
    """A test client signed in (by session) as the given user."""

    def make(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def admin(org, roles):
    return MembershipFactory(user__email="admin@acme.test", organization=org, role=roles["admin"]).user
