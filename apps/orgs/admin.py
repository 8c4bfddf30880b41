from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest
from guardian.admin import GuardedModelAdmin

from apps.orgs.models import Invitation, Membership, Organization, Team, User
from apps.rbac.admin_mixins import TenantAdminMixin


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_active", "is_staff", "is_superuser", "date_joined"]
    list_filter = ["is_active", "is_staff", "is_superuser"]
    search_fields = ["email", "full_name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "full_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        # Users are not tenant rows, but their addresses are: staff who are not the superadmin see only the
        # people they share an organisation with.
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        shared = Membership.objects.filter(organization__memberships__user=request.user).values("user_id")
        return queryset.filter(pk__in=shared)


class TeamInline(admin.TabularInline):
    model = Team
    extra = 0
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Organization)
class OrganizationAdmin(TenantAdminMixin, GuardedModelAdmin):
    list_display = ["name", "slug", "is_active", "require_2fa", "created_at"]
    list_filter = ["is_active", "require_2fa"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ("name",)}
    inlines = [TeamInline]


@admin.register(Team)
class TeamAdmin(TenantAdminMixin, GuardedModelAdmin):
    list_display = ["name", "slug", "organization", "created_at"]
    list_filter = ["organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "slug", "organization__name"]
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Membership)
class MembershipAdmin(TenantAdminMixin, admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["organization", "role"]
    list_select_related = ["user", "organization", "role"]
    search_fields = ["user__email", "organization__name"]
    autocomplete_fields = ["user", "organization"]
    filter_horizontal = ["teams"]

    # People join by accepting an invitation (console or API), never by someone else's hand: no adding here, and a
    # membership's person and organisation cannot be swapped for others.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> list[str]:
        return ["user", "organization"]


@admin.register(Invitation)
class InvitationAdmin(TenantAdminMixin, admin.ModelAdmin):
    list_display = ["email", "organization", "role", "created_at", "expires_at", "accepted_at", "revoked_at"]
    list_filter = ["organization", "role"]
    list_select_related = ["organization", "role"]
    search_fields = ["email", "organization__name"]
    exclude = ["token_hash"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the link's token is shown once, where invitations are made: the console and the API
