"""The platform's idempotent set-up (`inferia init`, the demo): make sure an organisation, the superadmin and a
membership exist, creating what is missing. Each creation records its audit event in the same transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils.text import slugify

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_record
from apps.orgs.models import Membership, Organization, User
from inferia_runtime.errors import DomainRefusal

if TYPE_CHECKING:
    from apps.rbac.models import Role  # rbac sits above orgs: for annotations only


def organization_ensure(
    *, slug: str, name: str = "", actor: Actor = None, context: AuditContext | None = None
) -> tuple[Organization, bool]:
    """The organisation with `slug`, created (and audited) when missing; `inferia init` and the demo call it.

    Returns the organisation and whether it was created. An existing one is left as it is, name included:
    an administrator may have renamed it since.
    """
    slug = slugify(slug)
    if not slug:
        raise DomainRefusal("an organisation needs a slug made of letters, digits, '-' or '_'")
    with transaction.atomic():
        organization, created = Organization.objects.get_or_create(
            slug=slug, defaults={"name": name or slug.replace("-", " ").title()}
        )
        if created:
            audit_record(action="org.create", actor=actor, target=organization, changes={"slug": slug}, context=context)
    return organization, created


def superadmin_ensure(*, email: str, password: str, context: AuditContext | None = None) -> tuple[User, bool]:
    """The platform superadmin with `email`, created with `password` when missing.

    An existing user is promoted to superadmin if needed, but its password is never overwritten: it may have
    been changed in the console since the environment variable was set. Returns the user and whether anything
    changed.
    """
    email = User.objects.normalize_email(email).lower()
    if not email or "@" not in email:
        raise DomainRefusal("the superadmin needs an e-mail address")
    if not password:
        raise DomainRefusal("the superadmin needs a password")
    with transaction.atomic():
        user = User.objects.filter(email__iexact=email).select_for_update().first()
        if user is None:
            user = User.objects.create_superuser(email, password)
            audit_record(action="user.create_superadmin", actor=None, target=user, context=context)
            return user, True
        if user.is_superuser and user.is_staff and user.is_active:
            return user, False
        user.is_superuser = user.is_staff = user.is_active = True
        user.save(update_fields=["is_superuser", "is_staff", "is_active"])
        audit_record(action="user.promote_superadmin", actor=None, target=user, context=context)
    return user, True


def membership_ensure(
    *, user: User, organization: Organization, role: Role, actor: Actor = None, context: AuditContext | None = None
) -> tuple[Membership, bool]:
    """`user`'s membership of `organization`, created with `role` when missing; an existing role is kept."""
    if role.organization_id not in (None, organization.pk):
        raise DomainRefusal("the role belongs to another organisation")
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(
            user=user, organization=organization, defaults={"role": role}
        )
        if created:
            audit_record(
                action="membership.create",
                actor=actor,
                target=membership,
                organization_id=organization.pk,
                changes={"user": user.email, "role": role.slug},
                context=context,
            )
    return membership, created
