"""Fixtures shared by every test package: tenants, personas and clean Redis databases."""

from __future__ import annotations

import pytest
from django.conf import settings

from inferia_runtime.redis_clients import sync_redis
from tests.factories import MembershipFactory, OrganizationFactory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `e2e` drive real processes (the platform, a browser's server) that commit rows no test
    transaction rolls back; they run after the transactional tests, so that each of those sees only its own rows
    whatever the order of the files. Among themselves the e2e tests keep their order and need none."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)  # a stable sort


@pytest.fixture(scope="session", autouse=True)
def _flush_may_truncate_audit_tables():
    """Transactional tests end with Django's flush, a TRUNCATE of every table. The audit tables refuse TRUNCATE
    unless the session opts in (migration audit 0005), so the flush opts in, and nothing else does."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT set_config('inferia.audit_allow_truncate', 'on', false)")
        try:
            original(self, sql_list)
        finally:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT set_config('inferia.audit_allow_truncate', '', false)")

    DatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    DatabaseOperations.execute_sql_flush = original


@pytest.fixture(autouse=True)
def _beat_lease_free():
    """A beat an earlier test killed holds the schedule's lease until it runs out (celery_app.beat_lock): the beats
    a test starts must not stand by waiting for it."""
    from celery_app.beat_lock import BEAT_LOCK_KEY

    sync_redis().delete(BEAT_LOCK_KEY)


@pytest.fixture
def redis_cache():
    """The cache/counters Redis database, emptied before and after the test."""
    client = sync_redis()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def roles(db):
    from apps.rbac.services import roles_ensure_builtin

    return roles_ensure_builtin()


@pytest.fixture
def org(db):
    return OrganizationFactory(name="Acme", slug="acme")


@pytest.fixture
def other_org(db):
    return OrganizationFactory(name="Globex", slug="globex")


def _member(org, roles, email: str, role: str):
    return MembershipFactory(user__email=email, organization=org, role=roles[role]).user


@pytest.fixture
def owner(org, roles):
    return _member(org, roles, "owner@acme.test", "owner")


@pytest.fixture
def member(org, roles):
    return _member(org, roles, "member@acme.test", "member")


@pytest.fixture
def viewer(org, roles):
    return _member(org, roles, "viewer@acme.test", "viewer")


@pytest.fixture
def outsider(other_org, roles):
    return _member(other_org, roles, "outsider@globex.test", "owner")


@pytest.fixture(scope="session")
def data_dir():
    return settings.DATA_DIR


@pytest.fixture
def as_user():
    """A REST API client signed in (by session) as the given user."""
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def root(db, client):
    """The platform superadmin, signed in on `client` with the second factor done (Django admin's pages)."""
    from apps.orgs.models import User

    user = User.objects.create_superuser("root@inferia.test", "correct horse battery")
    client.force_login(user)
    session = client.session
    session["inferia_second_factor"] = "none"
    session.save()
    return user
