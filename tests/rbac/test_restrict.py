"""The tenancy door: every tenant model, every persona, and the ways a key or a grant could widen access."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.keys.models import ApiKey
from apps.keys.services import api_key_create, api_key_revoke
from apps.orgs.models import Membership, Organization, Team, User
from apps.rbac.models import Role
from apps.rbac.restrict import TENANT_MODELS, organizations_allowing, principal_can, queryset_restrict
from apps.rbac.services import object_grant, object_grant_revoke
from apps.usage.models import UsageRecord
from tests.factories import MembershipFactory, ModelDeploymentFactory, UserFactory
from tests.tenancy import platform_deployment

MODELS = [
    Organization,
    Team,
    Membership,
    Role,
    ApiKey,
    Provider,
    ComputePool,
    ModelDeployment,
    Replica,
    AuditEvent,
    UsageRecord,
]


def _visible(model, who, action="view"):
    return set(model.objects.restrict(who, action).values_list("pk", flat=True))


def test_every_tenant_model_is_known_to_the_door():
    assert {m._meta.label for m in MODELS} <= set(TENANT_MODELS)


def test_it_refuses_models_that_declare_no_tenant_path(db, owner):
    with pytest.raises(ImproperlyConfigured):
        queryset_restrict(User.objects.all(), principal=owner, action="view")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_an_owner_sees_their_organisations_rows_and_none_of_another(model, acme, globex, owner):
    visible = _visible(model, owner)
    foreign = _visible(model, User.objects.get(email="outsider@globex.test"))
    assert visible, f"owner sees no {model.__name__}"
    own_rows = set(
        model.objects.filter(**{TENANT_MODELS[model._meta.label].org: acme.org.pk}).values_list("pk", flat=True)
    )
    assert own_rows <= visible
    globex_rows = set(
        model.objects.filter(**{TENANT_MODELS[model._meta.label].org: globex.org.pk}).values_list("pk", flat=True)
    )
    assert globex_rows
    assert not (visible & globex_rows)
    assert not (foreign & own_rows)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("action", ["add", "change", "delete"])
def test_a_viewer_can_change_nothing(model, action, acme, viewer):
    assert _visible(model, viewer, action) == set()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_user_without_membership_sees_nothing(model, acme, db):
    nobody = UserFactory(email="nobody@nowhere.test", password="correct horse battery")
    assert _visible(model, nobody) == set()


def test_the_superadmin_sees_everything_including_platform_rows(acme, globex, db):
    admin = User.objects.create_superuser("root@inferia.test", "correct horse battery")
    shared = platform_deployment(shared_with=[])
    assert shared.pk in _visible(ModelDeployment, admin)
    assert _visible(Organization, admin) == {acme.org.pk, globex.org.pk}


def test_a_platform_deployment_is_visible_only_where_it_is_shared(acme, globex, owner, outsider):
    shared = platform_deployment(shared_with=[acme.org])
    assert shared.pk in _visible(ModelDeployment, owner)
    assert shared.pk not in _visible(ModelDeployment, outsider)
    assert shared.pk not in _visible(ModelDeployment, owner, "change")
    assert shared.pool_id not in _visible(ComputePool, owner)


def test_built_in_roles_are_readable_by_members_and_changeable_by_nobody_but_the_superadmin(acme, owner):
    builtin = set(Role.objects.filter(organization=None).values_list("pk", flat=True))
    assert builtin <= _visible(Role, owner)
    assert not (builtin & _visible(Role, owner, "change"))


def test_a_member_manages_their_own_keys_but_not_their_colleagues(acme, member, owner):
    mine = api_key_create(organization=acme.org, name="mine", scopes=["read"], owner=member, actor=member).key
    assert mine.pk in _visible(ApiKey, member, "delete")
    assert acme.key.key.pk not in _visible(ApiKey, member, "delete")
    assert acme.key.key.pk in _visible(ApiKey, member, "view")


def test_a_team_grant_delegates_one_deployment_to_the_teams_members(acme, member, owner):
    other = ModelDeploymentFactory(
        organization=acme.org, pool=acme.pool, name="other", model_id="m", served_model_name="other-model"
    )
    membership = Membership.objects.get(user=member)
    membership.teams.add(acme.team)
    assert acme.deployment.pk not in _visible(ModelDeployment, member, "change")
    object_grant(obj=acme.deployment, actions=["change"], team=acme.team, actor=owner)
    assert _visible(ModelDeployment, member, "change") == {acme.deployment.pk}
    assert _visible(Replica, member, "change") == {acme.replica.pk}
    assert other.pk not in _visible(ModelDeployment, member, "change")
    object_grant_revoke(obj=acme.deployment, actions=["change"], team=acme.team, actor=owner)
    assert _visible(ModelDeployment, member, "change") == set()


def test_a_grant_cannot_cross_organisations(acme, globex, owner):
    with pytest.raises(ValueError, match="another organisation"):
        object_grant(obj=acme.deployment, actions=["change"], team=globex.team, actor=owner)
    with pytest.raises(ValueError, match="not a member"):
        object_grant(
            obj=acme.deployment, actions=["view"], user=User.objects.get(email="outsider@globex.test"), actor=owner
        )


def test_a_grant_ends_with_the_membership(acme, member, owner):
    object_grant(obj=acme.deployment, actions=["change"], user=member, actor=owner)
    assert principal_can(principal=member, action="change", obj=acme.deployment)
    Membership.objects.filter(user=member).delete()
    assert not principal_can(principal=member, action="change", obj=acme.deployment)


class TestKeys:
    def test_a_read_key_may_view_but_not_change(self, acme, owner):
        key = api_key_create(organization=acme.org, name="r", scopes=["read"], owner=owner, actor=owner).key
        assert acme.deployment.pk in _visible(ModelDeployment, key)
        assert _visible(ModelDeployment, key, "change") == set()

    def test_an_inference_only_key_may_not_use_the_management_plane(self, acme, owner):
        key = api_key_create(organization=acme.org, name="i", scopes=["inference"], owner=owner, actor=owner).key
        assert _visible(ModelDeployment, key) == set()

    def test_a_manage_key_has_at_most_its_owners_rights(self, acme, viewer):
        key = api_key_create(organization=acme.org, name="v", scopes=["read", "manage"], owner=viewer, actor=viewer).key
        assert acme.deployment.pk in _visible(ModelDeployment, key)
        assert _visible(ModelDeployment, key, "change") == set()

    def test_a_users_key_stays_in_its_organisation(self, acme, globex, owner, roles):
        MembershipFactory(user=owner, organization=globex.org, role=roles["owner"])
        key = acme.key.key
        assert globex.deployment.pk in _visible(ModelDeployment, owner)
        assert globex.deployment.pk not in _visible(ModelDeployment, key)
        assert _visible(Organization, key) == {acme.org.pk}

    def test_removing_the_owner_from_the_organisation_kills_the_key_at_once(self, acme, owner):
        key = acme.key.key
        assert _visible(ModelDeployment, key)
        Membership.objects.filter(user=owner, organization=acme.org).delete()
        assert _visible(ModelDeployment, key) == set()
        assert _visible(ApiKey, key) == set()

    def test_a_deactivated_owner_takes_their_keys_with_them(self, acme, owner):
        owner.is_active = False
        owner.save()
        assert _visible(ModelDeployment, ApiKey.objects.get(pk=acme.key.key.pk)) == set()

    def test_revoked_and_expired_keys_see_nothing(self, acme, owner):
        api_key_revoke(key=acme.key.key, actor=owner)
        assert _visible(Organization, acme.key.key) == set()
        expired = api_key_create(
            organization=acme.org,
            name="old",
            scopes=["read"],
            actor=owner,
            expires_at=timezone.now() + timezone.timedelta(hours=1),
        ).key
        expired.expires_at = timezone.now() - timezone.timedelta(seconds=1)  # time passed
        expired.save(update_fields=["expires_at"])
        assert _visible(Organization, expired) == set()

    def test_a_service_key_has_its_scopes_within_its_organisation_only(self, acme, globex):
        key = acme.service_key.key
        assert acme.deployment.pk in _visible(ModelDeployment, key)
        assert globex.deployment.pk not in _visible(ModelDeployment, key)
        assert _visible(ModelDeployment, key, "change") == set()

    def test_a_team_service_key_sees_only_its_teams_keys_and_usage(self, acme, owner):
        other_team = Team.objects.create(organization=acme.org, name="Other", slug="other")
        key = api_key_create(organization=acme.org, name="t", scopes=["read"], team=other_team, actor=owner).key
        assert _visible(ApiKey, key) == {key.pk}
        assert _visible(UsageRecord, key) == set()
        assert _visible(Team, key) == {other_team.pk}

    def test_a_superadmins_key_is_confined_to_its_organisation(self, acme, globex):
        admin = User.objects.create_superuser("root@inferia.test", "correct horse battery")
        key = api_key_create(organization=acme.org, name="s", scopes=["read"], owner=admin, actor=admin).key
        assert _visible(Organization, key) == {acme.org.pk}


def test_organisations_allowing_answers_creates(acme, globex, owner, member):
    assert set(organizations_allowing(principal=owner, action="add", model=Team)) == {acme.org}
    assert set(organizations_allowing(principal=member, action="add", model=Team)) == set()
    assert set(organizations_allowing(principal=member, action="add", model=ApiKey)) == {acme.org}


def test_restrict_is_one_query(acme, owner, django_assert_num_queries):
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.get_for_model(ModelDeployment)  # warm the content-type cache, as any running process has
    ContentType.objects.get_for_model(ApiKey)
    ContentType.objects.get_by_natural_key("compute", "modeldeployment")
    with django_assert_num_queries(1):
        list(ModelDeployment.objects.restrict(owner, "change"))
    with django_assert_num_queries(1):
        list(ApiKey.objects.restrict(acme.key.key))
