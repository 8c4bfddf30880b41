"""Query-count pins: every list endpoint costs the same number of queries for 1 row as for many (no N+1)."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.tenancy import tenant_build

LISTS = {
    "/api/organizations/": 4,
    "/api/teams/": 4,
    "/api/members/": 5,
    "/api/invitations/": 5,  # + the teams each invitation joins (one prefetch)
    "/api/roles/": 6,
    "/api/keys/": 4,
    "/api/providers/": 4,
    "/api/pools/": 4,
    "/api/deployments/": 5,  # + their placement pools (a prefetch)
    "/api/replicas/": 4,
    "/api/model-routes/": 6,  # + their targets and the targets' deployments (two prefetches)
    "/api/usage/": 4,
    "/api/audit-events/": 4,
}


@pytest.fixture
def grown(org, owner, roles):
    """The owner's organisation with one of everything, then more of everything (a second tenant's worth)."""
    tenant_build(org=org, owner=owner, tag="one")
    ContentType.objects.clear_cache()
    return lambda: tenant_build(org=org, owner=owner, tag="two")


@pytest.mark.parametrize(("url", "expected"), LISTS.items())
def test_list_endpoints_have_a_fixed_query_count(url, expected, grown, owner, as_user, django_assert_num_queries):
    client = as_user(owner)
    client.get(url)  # warm the content-type cache, as any running process has
    with django_assert_num_queries(expected):
        assert client.get(url).status_code == 200
    grown()
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    assert len(queries) == expected, [q["sql"][:120] for q in queries]
