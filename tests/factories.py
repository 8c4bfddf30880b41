"""factory_boy factories for the domain objects tests build: one place that knows what a valid row needs.

A `ReplicaFactory()` brings its deployment, pool, provider and organisation with it; pass any of them to share one.
Keys go through `api_key_create` (the secret is hashed as in production and returned once, as `IssuedKey.secret`);
provider credentials are encrypted as `provider_credentials_set` does.
"""

from __future__ import annotations

from typing import Any

import factory
from factory.django import DjangoModelFactory

from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.keys.services import IssuedKey, api_key_create
from apps.orgs.models import Membership, Organization, Team, User
from apps.policies.models import Policy

PASSWORD = "correct horse battery"


class OrganizationFactory(DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class UserFactory(DjangoModelFactory):
    """A user with the tests' password (`PASSWORD`), hashed by the manager as a sign-up would."""

    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.test")

    @classmethod
    def _create(cls, model_class: type[User], *args: Any, **kwargs: Any) -> User:
        password = kwargs.pop("password", PASSWORD)
        return model_class.objects.create_user(kwargs.pop("email"), password, **kwargs)


class TeamFactory(DjangoModelFactory):
    class Meta:
        model = Team

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(DjangoModelFactory):
    """A user's membership with a built-in role: `role` is a slug (owner, admin, member, viewer) or a Role."""

    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = "member"

    @classmethod
    def _create(cls, model_class: type[Membership], *args: Any, **kwargs: Any) -> Membership:
        if isinstance(kwargs["role"], str):
            from apps.rbac.services import roles_ensure_builtin

            kwargs["role"] = roles_ensure_builtin()[kwargs["role"]]
        return super()._create(model_class, *args, **kwargs)


def api_key_issue(
    *, organization: Organization | None = None, scopes: tuple[str, ...] = ("inference",), **fields: Any
) -> IssuedKey:
    """A key issued by the real service (hashed, prefixed, audited); `.key` is the row, `.secret` the bearer token."""
    return api_key_create(
        organization=organization or OrganizationFactory(), name=fields.pop("name", "test key"), scopes=list(scopes),
        **fields,
    )  # fmt: skip


class ApiKeyFactory(factory.Factory):
    """`ApiKeyFactory()` is an `IssuedKey`: the row and the secret it was issued with."""

    class Meta:
        model = IssuedKey

    organization = factory.SubFactory(OrganizationFactory)
    scopes = ("inference",)

    @classmethod
    def _create(cls, model_class: type[IssuedKey], *args: Any, **kwargs: Any) -> IssuedKey:
        return api_key_issue(**kwargs)

    _build = _create


class PolicyFactory(DjangoModelFactory):
    """An organisation's policy unless `team` or `api_key` is given; limits as keyword arguments."""

    class Meta:
        model = Policy

    organization = factory.SubFactory(OrganizationFactory)


class ProviderFactory(DjangoModelFactory):
    """A simulator provider unless told otherwise; `credentials={...}` are stored encrypted, as the service does."""

    class Meta:
        model = Provider

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"provider-{n}")
    kind = Provider.Kind.SIMULATOR

    @classmethod
    def _create(cls, model_class: type[Provider], *args: Any, **kwargs: Any) -> Provider:
        credentials = kwargs.pop("credentials", None)
        if credentials is not None:
            from apps.compute.credentials import credentials_encrypt

            kwargs["credentials_encrypted"] = credentials_encrypt(credentials)
        return super()._create(model_class, *args, **kwargs)


class ComputePoolFactory(DjangoModelFactory):
    class Meta:
        model = ComputePool

    organization = factory.SubFactory(OrganizationFactory)
    provider = factory.SubFactory(ProviderFactory, organization=factory.SelfAttribute("..organization"))
    name = factory.Sequence(lambda n: f"pool-{n}")


class ModelDeploymentFactory(DjangoModelFactory):
    """A deployment serving `served_model_name` (its `name` unless given), in a pool of the same owner."""

    class Meta:
        model = ModelDeployment

    organization = factory.SubFactory(OrganizationFactory)
    pool = factory.SubFactory(ComputePoolFactory, organization=factory.SelfAttribute("..organization"))
    name = factory.Sequence(lambda n: f"deployment-{n}")
    model_id = factory.LazyAttribute(lambda deployment: f"sim/{deployment.name}")
    served_model_name = factory.LazyAttribute(lambda deployment: deployment.name)


class ReplicaFactory(DjangoModelFactory):
    class Meta:
        model = Replica

    deployment = factory.SubFactory(ModelDeploymentFactory)


def deployment_serving(
    organization: Organization | None, name: str, endpoints: list[str], **fields: Any
) -> tuple[ModelDeployment, list[Replica]]:
    """A READY deployment of `name` with one READY replica per endpoint: what a router needs to send traffic."""
    fields.setdefault("state", ModelDeployment.State.READY)
    deployment = ModelDeploymentFactory(organization=organization, name=name, **fields)
    replicas = [ReplicaFactory(deployment=deployment, endpoint=url, state=Replica.State.READY) for url in endpoints]
    return deployment, replicas
