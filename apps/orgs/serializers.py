"""REST shapes of organisations, teams, members and invitations: one output serializer per resource and an input
serializer per write."""

from __future__ import annotations

from rest_framework import serializers

from apps.orgs.models import (
    CAPTURE_RETENTION_DAYS_MAX,
    CAPTURE_RETENTION_DAYS_MIN,
    Invitation,
    Membership,
    Organization,
    Team,
)
from apps.rbac.drf import TenantRelatedField
from apps.rbac.models import Role


class OrganizationOut(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = [
            "id",
            "name",
            "slug",
            "is_active",
            "require_2fa",
            "capture_prompts",
            "capture_retention_days",
            "created_at",
        ]


class OrganizationCreateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=64)


class OrganizationUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    require_2fa = serializers.BooleanField(required=False)
    capture_prompts = serializers.BooleanField(required=False)
    capture_retention_days = serializers.IntegerField(
        required=False, min_value=CAPTURE_RETENTION_DAYS_MIN, max_value=CAPTURE_RETENTION_DAYS_MAX
    )


class TeamOut(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["id", "organization", "name", "slug", "created_at"]


class TeamCreateIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(
        max_length=64, required=False, help_text="Derived from the name (unique in the organisation) when left out."
    )


class TeamUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    slug = serializers.SlugField(max_length=64, required=False)


class MembershipOut(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    role_slug = serializers.SlugField(source="role.slug", read_only=True)
    teams = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "organization", "user", "email", "role", "role_slug", "teams", "created_at"]


class MembershipCreateIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    email = serializers.EmailField(help_text="The person's address: they are invited, and join when they accept.")
    role = TenantRelatedField(Role)
    teams = TenantRelatedField(Team, many=True, required=False)
    expires_in_hours = serializers.IntegerField(min_value=1, max_value=24 * 30, default=24 * 7)


class MembershipUpdateIn(serializers.Serializer):
    role = TenantRelatedField(Role, required=False)
    teams = TenantRelatedField(Team, many=True, required=False)


class InvitationOut(serializers.ModelSerializer):
    class Meta:
        model = Invitation
        fields = [
            "id",
            "organization",
            "email",
            "role",
            "teams",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        ]


class InvitationCreatedOut(InvitationOut):
    token = serializers.CharField(read_only=True, help_text="Shown once: the link's secret part.")

    class Meta(InvitationOut.Meta):
        fields = [*InvitationOut.Meta.fields, "token"]


MEMBER_INVITED = "An invitation was created; the person becomes a member when they accept it."


class MemberInvitedOut(InvitationCreatedOut):
    """The answer to adding a member: the invitation they must accept, the same whether or not they have an
    account."""

    detail = serializers.SerializerMethodField()

    class Meta(InvitationCreatedOut.Meta):
        fields = [*InvitationCreatedOut.Meta.fields, "detail"]

    def get_detail(self, invitation: Invitation) -> str:
        return MEMBER_INVITED


class InvitationCreateIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    email = serializers.EmailField()
    role = TenantRelatedField(Role)
    teams = TenantRelatedField(Team, many=True, required=False)
    expires_in_hours = serializers.IntegerField(min_value=1, max_value=24 * 30, default=24 * 7)


class InvitationAcceptIn(serializers.Serializer):
    token = serializers.CharField(max_length=200)
