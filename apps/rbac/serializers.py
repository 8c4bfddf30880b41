"""REST shapes of roles and object grants."""

from __future__ import annotations

from rest_framework import serializers

from apps.orgs.models import Organization, Team, User
from apps.rbac.capabilities import capabilities_held
from apps.rbac.drf import TenantRelatedField
from apps.rbac.models import Role
from apps.rbac.services import GRANTABLE_ACTIONS


class RoleOut(serializers.ModelSerializer):
    permissions = serializers.SerializerMethodField()
    capabilities = serializers.SerializerMethodField(
        help_text="What members can do (apps.rbac.capabilities): the capabilities whose every permission it holds."
    )

    class Meta:
        model = Role
        fields = ["id", "organization", "slug", "name", "description", "is_builtin", "permissions", "capabilities"]

    def get_permissions(self, role: Role) -> list[str]:
        return sorted(f"{p.content_type.app_label}.{p.codename}" for p in role.permissions.all())

    def get_capabilities(self, role: Role) -> list[str]:
        return capabilities_held(self.get_permissions(role))[0]


class RoleCreateIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    slug = serializers.SlugField(
        max_length=64, required=False, help_text="Derived from the name (unique in the organisation) when left out."
    )
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    permissions = serializers.ListField(child=serializers.CharField(), help_text="e.g. compute.view_modeldeployment")


class RoleUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    permissions = serializers.ListField(child=serializers.CharField(), required=False)


class GrantIn(serializers.Serializer):
    """Delegate actions on one object to a team, or to one member, of the object's organisation."""

    actions = serializers.ListField(child=serializers.ChoiceField(choices=GRANTABLE_ACTIONS), min_length=1)
    team = TenantRelatedField(Team, required=False, allow_null=True)
    user = serializers.EmailField(required=False, help_text="A member's e-mail address.")

    def validate(self, attrs: dict) -> dict:
        if bool(attrs.get("team")) == bool(attrs.get("user")):
            raise serializers.ValidationError("Give a team or a user.")
        if attrs.get("user"):
            user = User.objects.filter(email__iexact=attrs["user"]).first()
            if user is None:
                raise serializers.ValidationError({"user": ["Not a member of this organisation."]})
            attrs["user"] = user
        return attrs
