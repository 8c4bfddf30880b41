"""A tenant model rbac has never heard of: declaring `tenant_path` and the tenant manager on the model is all it takes
for `.restrict()` to keep each organisation's rows (and a team key's team) to itself."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection, models
from django.test.utils import isolate_apps

from apps.keys.services import api_key_create
from apps.orgs.models import Membership, Organization, Team, User
from apps.rbac.models import Role
from inferia_runtime.tenancy import TenantManager, TenantPath


@pytest.fixture
def notebook_model(db):
    """A made-up tenant model with its table, declared only in this test."""
    with isolate_apps("apps.rbac"):

        class Notebook(models.Model):
            tenant_path = TenantPath(org="organization_id", team="team_id")

            organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
            team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, related_name="+")
            title = models.CharField(max_length=100)

            objects = TenantManager()

            class Meta:
                app_label = "rbac"

            def __str__(self) -> str:
                return self.title

    with connection.schema_editor() as editor:
        editor.create_model(Notebook)  # inside the test's transaction: rolled back with it
    yield Notebook
    ContentType.objects.clear_cache()  # the made-up content type's row is rolled back too


def _reader(org: Organization, email: str, view_notebook: Permission) -> User:
    """A member of `org` whose custom role may view notebooks there, and nothing else."""
    role = Role.objects.create(organization=org, slug="notebook-readers", name="Notebook readers")
    role.permissions.add(view_notebook)
    user = User.objects.create_user(email, "correct horse battery")
    Membership.objects.create(user=user, organization=org, role=role)
    return user


@pytest.fixture
def notebooks(notebook_model, org, other_org):
    ct = ContentType.objects.get_for_model(notebook_model)
    view_notebook = Permission.objects.create(codename="view_notebook", name="Can view notebook", content_type=ct)
    team = Team.objects.create(organization=org, name="Research", slug="research")
    return {
        "team": team,
        "acme_reader": _reader(org, "reader@acme.test", view_notebook),
        "globex_reader": _reader(other_org, "reader@globex.test", view_notebook),
        "acme_team": notebook_model.objects.create(organization=org, team=team, title="acme research"),
        "acme_org": notebook_model.objects.create(organization=org, title="acme all hands"),
        "globex": notebook_model.objects.create(organization=other_org, title="globex plans"),
    }


def _titles(queryset) -> set[str]:
    return set(queryset.values_list("title", flat=True))


def test_a_member_sees_their_organisations_rows_of_an_undeclared_model_and_none_of_another(notebook_model, notebooks):
    assert _titles(notebook_model.objects.restrict(notebooks["acme_reader"])) == {"acme research", "acme all hands"}
    assert _titles(notebook_model.objects.restrict(notebooks["globex_reader"])) == {"globex plans"}


def test_the_role_decides_the_action(notebook_model, notebooks):
    assert not notebook_model.objects.restrict(notebooks["acme_reader"], "change").exists()


def test_the_owner_of_another_organisation_sees_none_of_its_rows(notebook_model, notebooks, outsider):
    assert _titles(notebook_model.objects.restrict(outsider, "delete")) <= {"globex plans"}


def test_keys_stay_in_their_organisation_and_team_keys_in_their_team(notebook_model, notebooks, org):
    service_key = api_key_create(organization=org, name="svc", scopes=["read"]).key
    team_key = api_key_create(organization=org, name="team", scopes=["read"], team=notebooks["team"]).key
    inference_key = api_key_create(organization=org, name="inf", scopes=["inference"]).key
    assert _titles(notebook_model.objects.restrict(service_key)) == {"acme research", "acme all hands"}
    assert _titles(notebook_model.objects.restrict(team_key)) == {"acme research"}
    assert not notebook_model.objects.restrict(inference_key).exists()
