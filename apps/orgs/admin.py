"""People and organisations in Django admin, changed only through the services that audit them.

Organisations and teams (also on the organisation's page) are created and edited through the organisation services;
a membership's role and teams likewise, and removing one revokes the member's keys as it does everywhere. People
join by accepting an invitation, so memberships and invitations are never added here, and invitations are only
withdrawn. A person's name and whether their account is active go through `user_update`; platform rights
(superadmin, staff, groups, permissions) and passwords are not edited here at all, and Django's groups are not
offered: each team's rights live in one (django-guardian's), granted through the audited grant services.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse

from apps.keys.services import membership_offboard
from apps.orgs import services as org_services
from apps.orgs.models import Invitation, Membership, Organization, Team, User
from apps.rbac.admin_mixins import TenantAdminMixin
from apps.rbac.admin_writes import ServiceAdminMixin
from apps.rbac.restrict import role_within_reach

# Each team's object rights live in a Django group (django-guardian's): they change through the grant services only.
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(ServiceAdminMixin, DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_active", "is_staff", "is_superuser", "date_joined"]
    list_filter = ["is_active", "is_staff", "is_superuser"]
    search_fields = ["email", "full_name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "full_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    service_object = "user"
    update_service = staticmethod(org_services.user_update)
    service_fields = org_services.USER_FIELDS

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        # Users are not tenant rows, but their addresses are: staff who are not the superadmin see only the
        # people they share an organisation with.
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        shared = Membership.objects.filter(organization__memberships__user=request.user).values("user_id")
        return queryset.filter(pk__in=shared)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        # Setting someone else's password here would be an unaudited way into their account.
        raise PermissionDenied


class TeamInline(admin.TabularInline):
    """The organisation's teams, saved by `OrganizationAdmin.save_formset` through the team services."""

    model = Team
    extra = 0
    fields = ["name", "slug"]
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Organization)
class OrganizationAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "is_active", "require_2fa", "created_at"]
    list_filter = ["is_active", "require_2fa"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ("name",)}
    inlines = [TeamInline]
    service_object = "organization"
    create_service = staticmethod(org_services.organization_create)
    update_service = staticmethod(org_services.organization_update)
    service_fields = org_services.ORGANIZATION_FIELDS

    def service_create(self, request: HttpRequest, values: dict[str, Any]) -> Model:
        # A new organisation starts active without 2FA required; anything else set on the form is a first change.
        organization = super().service_create(request, {"name": values.pop("name"), "slug": values.pop("slug")})
        settings = {name: value for name, value in values.items() if getattr(organization, name) != value}
        return self.service_update(request, organization, settings) if settings else organization

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        organization = Organization.objects.get(pk=form.instance.pk)
        context = self.audit_context(request)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for team_form in formset.initial_forms:
            if team_form in formset.deleted_forms:
                team = Team.objects.get(pk=team_form.instance.pk)
                org_services.team_delete(team=team, actor=request.user, context=context)
                formset.deleted_objects.append(team)
            elif team_form.has_changed():
                changes = {name: team_form.cleaned_data[name] for name in team_form.changed_data}
                team = org_services.team_update(
                    team=Team.objects.get(pk=team_form.instance.pk),
                    changes=changes,
                    actor=request.user,
                    context=context,
                )
                formset.changed_objects.append((team, team_form.changed_data))
        for team_form in formset.extra_forms:
            if team_form.has_changed() and team_form not in formset.deleted_forms:
                team = org_services.team_create(
                    organization=organization,
                    name=team_form.cleaned_data["name"],
                    slug=team_form.cleaned_data["slug"],
                    actor=request.user,
                    context=context,
                )
                formset.new_objects.append(team)


@admin.register(Team)
class TeamAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "organization", "created_at"]
    list_filter = ["organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "slug", "organization__name"]
    prepopulated_fields = {"slug": ("name",)}
    service_object = "team"
    create_service = staticmethod(org_services.team_create)
    update_service = staticmethod(org_services.team_update)
    delete_service = staticmethod(org_services.team_delete)
    service_fields = org_services.TEAM_FIELDS
    creation_fields = ("organization",)


@admin.register(Membership)
class MembershipAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    """People join by accepting an invitation (console or API), never by someone else's hand: no adding here, and a
    membership's person and organisation stay what they are. Removing a member revokes their keys there."""

    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["organization", "role"]
    list_select_related = ["user", "organization", "role"]
    search_fields = ["user__email", "organization__name"]
    filter_horizontal = ["teams"]
    service_object = "membership"
    update_service = staticmethod(org_services.membership_update)
    delete_service = staticmethod(membership_offboard)  # revokes their keys there in the same transaction
    service_fields = ("role", "teams")

    def service_update(self, request: HttpRequest, obj: Model, changes: dict[str, Any]) -> Model:
        assert isinstance(obj, Membership)
        # As in the API: nobody hands out, or takes away, a role with more rights than their own.
        for role in (obj.role, changes.get("role", obj.role)):
            if not role_within_reach(principal=request.user, role=role, organization=obj.organization):
                raise PermissionDenied
        return org_services.membership_update(
            membership=obj,
            role=changes.get("role"),
            teams=changes.get("teams"),
            actor=request.user,
            context=self.audit_context(request),
        )


@admin.register(Invitation)
class InvitationAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    """Invitations are made where their link's token can be shown once (the console and the API); here they are
    looked at and withdrawn."""

    list_display = ["email", "organization", "role", "created_at", "expires_at", "accepted_at", "revoked_at"]
    list_filter = ["organization", "role"]
    list_select_related = ["organization", "role"]
    search_fields = ["email", "organization__name"]
    exclude = ["token_hash"]
    actions = ["revoke_selected"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Withdrawing is a change the tenancy door decides on, though the page itself edits nothing.
        return super(ServiceAdminMixin, self).has_change_permission(request)

    @admin.action(description="Withdraw the selected invitations", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Invitation]) -> None:
        pending = queryset.filter(accepted_at__isnull=True, revoked_at__isnull=True)
        for invitation in pending:
            org_services.invitation_revoke(
                invitation=invitation, actor=request.user, context=self.audit_context(request)
            )
        self.message_user(request, f"Withdrew {len(pending)} invitation(s).", messages.SUCCESS)
