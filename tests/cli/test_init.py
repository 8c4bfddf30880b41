"""`inferia init`: a working platform from an empty database, and nothing changed when run again."""

from __future__ import annotations

import pytest
from django.apps import apps

from apps.orgs.models import Membership, Organization, User
from inferia_cli.bootstrap import platform_init


def row_counts() -> dict[str, int]:
    return {model._meta.label: model._default_manager.count() for model in apps.get_models()}


@pytest.fixture
def superadmin_env(settings, db):
    settings.INFERIA_SUPERADMIN_EMAIL = "Root@Example.test"
    settings.INFERIA_SUPERADMIN_PASSWORD = "a long enough password"
    settings.INFERIA_DEFAULT_ORG = "acme-default"
    return settings


def test_it_creates_roles_the_default_organisation_and_the_superadmin(superadmin_env):
    result = platform_init(verbosity=0)

    admin = User.objects.get(email="root@example.test")
    assert result.changed
    assert admin.is_superuser
    assert admin.is_staff
    assert admin.check_password("a long enough password")
    assert result.organization == Organization.objects.get(slug="acme-default")
    assert Membership.objects.get(user=admin, organization=result.organization).role.slug == "owner"


def test_running_it_twice_changes_nothing(superadmin_env):
    platform_init(verbosity=0)
    before = row_counts()

    again = platform_init(verbosity=0)

    assert not again.changed
    assert row_counts() == before


def test_it_keeps_a_password_changed_since(superadmin_env):
    platform_init(verbosity=0)
    admin = User.objects.get(email="root@example.test")
    admin.set_password("changed in the console")
    admin.save()

    platform_init(verbosity=0)

    admin.refresh_from_db()
    assert admin.check_password("changed in the console")


def test_it_needs_both_superadmin_variables_or_neither(settings, db):
    settings.INFERIA_SUPERADMIN_EMAIL = "root@example.test"
    settings.INFERIA_SUPERADMIN_PASSWORD = ""

    with pytest.raises(ValueError, match="both"):
        platform_init(verbosity=0)


def test_without_a_superadmin_it_still_creates_the_default_organisation(settings, db):
    settings.INFERIA_SUPERADMIN_EMAIL = settings.INFERIA_SUPERADMIN_PASSWORD = ""

    result = platform_init(verbosity=0)

    assert result.superadmin is None
    assert Organization.objects.filter(slug=settings.INFERIA_DEFAULT_ORG).exists()
