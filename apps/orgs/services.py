"""Writes on an organisation and its people: the organisation's settings, teams, memberships, invitations and user
accounts.

Each service records its audit event (with a before/after diff) in its transaction. Top-level callers (the API,
the console) run them in their own transaction; higher layers compose them in theirs (removing a member and revoking
their keys: keys' `membership_offboard`).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_diff, audit_record, audit_snapshot, audited_update
from apps.orgs.models import (
    CAPTURE_RETENTION_DAYS_MAX,
    CAPTURE_RETENTION_DAYS_MIN,
    Invitation,
    Membership,
    Organization,
    Team,
    User,
)
from inferia_runtime.errors import DomainRefusal
from inferia_runtime.slugs import create_with_unique_slug, slug_unique_in

if TYPE_CHECKING:
    from apps.rbac.models import Role  # rbac sits above orgs: for annotations only

INVITATION_LIFETIME = timedelta(days=7)
ORGANIZATION_FIELDS = ("name", "slug", "is_active", "require_2fa", "capture_prompts", "capture_retention_days")
TEAM_FIELDS = ("name", "slug")


class InvitationError(DomainRefusal):
    """An invitation that cannot be accepted: unknown, expired, revoked, already used, or for someone else."""


def _check_role(role: Role, organization: Organization) -> None:
    if role.organization_id not in (None, organization.pk):
        raise DomainRefusal("the role belongs to another organisation")


@transaction.atomic
def organization_create(*, name: str, slug: str, actor: Actor, context: AuditContext | None = None) -> Organization:
    """A new organisation (the platform superadmin's act); its creator becomes its owner when a person."""
    organization = Organization.objects.create(name=name, slug=slug)
    audit_record(
        action="org.create",
        actor=actor,
        target=organization,
        changes=audit_diff(before=None, after=audit_snapshot(organization, ORGANIZATION_FIELDS)),
        context=context,
    )
    return organization


@transaction.atomic
def organization_update(
    *, organization: Organization, changes: dict[str, Any], actor: Actor, context: AuditContext | None = None
) -> Organization:
    """Rename an organisation, (de)activate it, require two-factor sign-in for its owners and admins, or opt in to
    (or out of) keeping each request's prompt and answer for `capture_retention_days` days. The gateways pick a
    changed opt-in up within a second (see apps.gateway.signals)."""
    retention = changes.get("capture_retention_days")
    if retention is not None and not (
        isinstance(retention, int) and CAPTURE_RETENTION_DAYS_MIN <= retention <= CAPTURE_RETENTION_DAYS_MAX
    ):
        raise DomainRefusal(
            f"capture retention must be {CAPTURE_RETENTION_DAYS_MIN} to {CAPTURE_RETENTION_DAYS_MAX} days"
        )
    return audited_update(
        organization, changes=changes, allowed=ORGANIZATION_FIELDS, action="org.update", actor=actor, context=context
    )


def team_slug_available(*, organization: Organization, name: str) -> str:
    """The slug a team called `name` gets in `organization`: the name slugified ("team" when nothing is left of
    it), with "-2", "-3", ... when an earlier team has it already."""
    return slug_unique_in(Team.objects.filter(organization=organization), name, fallback="team")


@transaction.atomic
def team_create(
    *, organization: Organization, name: str, actor: Actor, slug: str = "", context: AuditContext | None = None
) -> Team:
    """A new team in `organization`. Without a `slug`, one is derived from the name (`team_slug_available`); an
    explicit slug already used in the organisation is a conflict."""
    if slug:
        team = Team.objects.create(organization=organization, name=name, slug=slug)
    else:
        team = create_with_unique_slug(
            lambda derived: Team.objects.create(organization=organization, name=name, slug=derived),
            siblings=Team.objects.filter(organization=organization),
            name=name,
            fallback="team",
        )
    audit_record(
        action="team.create",
        actor=actor,
        target=team,
        changes=audit_diff(before=None, after=audit_snapshot(team, TEAM_FIELDS)),
        context=context,
    )
    return team


@transaction.atomic
def team_update(*, team: Team, changes: dict[str, Any], actor: Actor, context: AuditContext | None = None) -> Team:
    """Rename a team."""
    return audited_update(
        team, changes=changes, allowed=TEAM_FIELDS, action="team.update", actor=actor, context=context
    )


@transaction.atomic
def team_delete(*, team: Team, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a team. Refused while a live key is bound to it (deleting it would widen the key to the organisation):
    the keys' foreign key protects the team then, and lets revoked keys go."""
    audit_record(
        action="team.delete",
        actor=actor,
        target=team,
        changes=audit_diff(before=audit_snapshot(team, TEAM_FIELDS), after=None),
        context=context,
    )
    try:
        team.delete()
    except ProtectedError:
        raise DomainRefusal("revoke or move the team's keys first") from None


@transaction.atomic
def team_member_add(
    *, team: Team, membership: Membership, actor: Actor, context: AuditContext | None = None
) -> Membership:
    """Put a member of the team's organisation in the team; they get what is granted to it on their next request.
    Refused for someone of another organisation, or already in the team."""
    if membership.organization_id != team.organization_id:
        raise DomainRefusal("only members of the team's organisation can join it")
    if membership.teams.filter(pk=team.pk).exists():
        raise DomainRefusal(f"{membership.user.email} is already in the team")
    membership.teams.add(team)
    audit_record(
        action="team.member_add",
        actor=actor,
        target=team,
        changes=audit_diff(before={"member": None}, after={"member": membership.user.email}),
        context=context,
    )
    return membership


@transaction.atomic
def team_member_remove(
    *, team: Team, membership: Membership, actor: Actor, context: AuditContext | None = None
) -> Membership:
    """Take a member out of a team; what is granted to the team stops reaching them on their next request."""
    if membership.organization_id != team.organization_id or not membership.teams.filter(pk=team.pk).exists():
        raise DomainRefusal(f"{membership.user.email} is not in the team")
    membership.teams.remove(team)
    audit_record(
        action="team.member_remove",
        actor=actor,
        target=team,
        changes=audit_diff(before={"member": membership.user.email}, after={"member": None}),
        context=context,
    )
    return membership


@transaction.atomic
def membership_create(
    *,
    organization: Organization,
    user: User,
    role: Role,
    actor: Actor,
    teams: list[Team] | None = None,
    context: AuditContext | None = None,
) -> Membership:
    """Make `user` a member of `organization` with `role` (and teams of that organisation). Only for a person's own
    act (accepting an invitation, signing in through SSO, `inferia init`): others add people with `invitation_create`,
    which neither adds anyone without consent nor tells whether an address has an account."""
    _check_role(role, organization)
    teams = teams or []
    if any(team.organization_id != organization.pk for team in teams):
        raise DomainRefusal("a team belongs to another organisation")
    membership = Membership.objects.create(user=user, organization=organization, role=role)
    membership.teams.set(teams)
    audit_record(
        action="membership.create",
        actor=actor,
        target=membership,
        changes=audit_diff(before=None, after={"user": user.email, "role": role.slug, "teams": [t.pk for t in teams]}),
        context=context,
    )
    return membership


@transaction.atomic
def membership_update(
    *,
    membership: Membership,
    actor: Actor,
    role: Role | None = None,
    teams: list[Team] | None = None,
    context: AuditContext | None = None,
) -> Membership:
    """Change a member's role or teams; effective on their next request (and their keys' next request)."""
    before = {"role": membership.role.slug, "teams": sorted(membership.teams.values_list("pk", flat=True))}
    if role is not None:
        _check_role(role, membership.organization)
        membership.role = role
        membership.save(update_fields=["role"])
    if teams is not None:
        if any(team.organization_id != membership.organization_id for team in teams):
            raise DomainRefusal("a team belongs to another organisation")
        membership.teams.set(teams)
    after = {"role": membership.role.slug, "teams": sorted(membership.teams.values_list("pk", flat=True))}
    audit_record(
        action="membership.update",
        actor=actor,
        target=membership,
        changes=audit_diff(before=before, after=after),
        context=context,
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor, context: AuditContext | None = None) -> None:
    """Remove a member; their object grants there stop counting at once (`.restrict()` requires membership). What
    they hold in higher layers is for those to end in the same transaction: keys' `membership_offboard` removes a
    member and revokes their keys, and is what the API and the console call."""
    audit_record(
        action="membership.delete",
        actor=actor,
        target=membership,
        changes=audit_diff(before={"user": membership.user.email, "role": membership.role.slug}, after=None),
        context=context,
    )
    membership.delete()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def invitation_create(
    *,
    organization: Organization,
    email: str,
    role: Role,
    actor: Actor,
    teams: list[Team] | None = None,
    lifetime: timedelta = INVITATION_LIFETIME,
    context: AuditContext | None = None,
) -> tuple[Invitation, str]:
    """An invitation to join `organization` with `role` (and `teams`). Returns it and its token (for the link), shown
    once. It reads nothing about the address: the answer is the same whether or not it has an account."""
    _check_role(role, organization)
    teams = teams or []
    if any(team.organization_id != organization.pk for team in teams):
        raise DomainRefusal("a team belongs to another organisation")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organization=organization,
        email=User.objects.normalize_email(email).lower(),
        role=role,
        token_hash=_token_hash(token),
        invited_by=actor if isinstance(actor, User) else None,
        expires_at=timezone.now() + lifetime,
    )
    invitation.teams.set(teams)
    audit_record(
        action="invitation.create",
        actor=actor,
        target=invitation,
        changes={
            "email": invitation.email,
            "role": role.slug,
            "teams": [team.pk for team in teams],
            "expires_at": invitation.expires_at.isoformat(),
        },
        context=context,
    )
    return invitation, token


@transaction.atomic
def invitation_accept(*, token: str, user: User, context: AuditContext | None = None) -> Membership:
    """Join the organisation an invitation is for. Only the invited address may accept, once, before expiry."""
    invitation = (
        Invitation.objects.select_for_update()
        .select_related("organization", "role")
        .filter(token_hash=_token_hash(token))
        .first()
    )
    if invitation is None:
        raise InvitationError("unknown invitation")
    if invitation.revoked_at is not None or invitation.accepted_at is not None:
        raise InvitationError("this invitation was already used or withdrawn")
    if invitation.expires_at <= timezone.now():
        raise InvitationError("this invitation has expired")
    if invitation.email.lower() != user.email.lower():
        raise InvitationError("this invitation is for another address")
    membership = Membership.objects.filter(user=user, organization=invitation.organization).first()
    if membership is not None:
        raise InvitationError("you are already a member of this organisation")
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    return membership_create(
        organization=invitation.organization,
        user=user,
        role=invitation.role,
        teams=list(invitation.teams.all()),
        actor=user,
        context=context,
    )


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: Actor, context: AuditContext | None = None) -> Invitation:
    """Withdraw an invitation that was not accepted yet."""
    if invitation.accepted_at is None and invitation.revoked_at is None:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        audit_record(action="invitation.revoke", actor=actor, target=invitation, context=context)
    return invitation


USER_FIELDS = ("full_name", "is_active")


@transaction.atomic
def user_update(*, user: User, changes: dict[str, Any], actor: Actor, context: AuditContext | None = None) -> User:
    """Rename a person or (de)activate their account (an inactive account cannot sign in). Platform rights
    (superadmin, staff, Django groups and permissions) are not changed here: `inferia init` grants them."""
    return audited_update(
        user, changes=changes, allowed=USER_FIELDS, action="user.update", actor=actor, context=context
    )
