"""REST endpoints for organisations, teams, members and invitations. Views parse, call one service, shape."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from apps.keys.services import membership_offboard
from apps.orgs import services as org_services
from apps.orgs.models import Invitation, Membership, Organization, Team, User
from apps.orgs.serializers import (
    InvitationAcceptIn,
    InvitationCreatedOut,
    InvitationCreateIn,
    InvitationOut,
    MemberInvitedOut,
    MembershipCreateIn,
    MembershipOut,
    MembershipUpdateIn,
    OrganizationCreateIn,
    OrganizationOut,
    OrganizationUpdateIn,
    TeamCreateIn,
    TeamOut,
    TeamUpdateIn,
)
from apps.rbac.drf import (
    ServiceCreateMixin,
    ServiceDestroyMixin,
    ServiceUpdateMixin,
    TenantViewSet,
    service_call,
    service_schema,
)


@service_schema(create_in=OrganizationCreateIn, update_in=OrganizationUpdateIn, detail_out=OrganizationOut)
class OrganizationViewSet(
    ServiceCreateMixin, ServiceUpdateMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet
):
    """Organisations the caller belongs to (all of them for the superadmin)."""

    model = Organization
    serializer_class = OrganizationOut
    filterset_fields = ["is_active", "slug"]
    search_fields = ["name", "slug"]
    ordering_fields = ["name", "slug", "created_at"]
    service_object = "organization"
    update_in = OrganizationUpdateIn
    update_service = staticmethod(org_services.organization_update)
    create_in = OrganizationCreateIn
    create_service = staticmethod(org_services.organization_create)

    def create_values(self, values: dict[str, Any]) -> dict[str, Any]:
        if not self.principal.is_superadmin:
            raise PermissionDenied("Only the platform superadmin creates organisations.")
        return values


@service_schema(create_in=TeamCreateIn, update_in=TeamUpdateIn, detail_out=TeamOut)
class TeamViewSet(
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Teams of the caller's organisations."""

    model = Team
    serializer_class = TeamOut
    filterset_fields = ["organization", "slug"]
    search_fields = ["name", "slug"]
    ordering_fields = ["name", "slug", "created_at"]
    service_object = "team"
    update_in = TeamUpdateIn
    update_service = staticmethod(org_services.team_update)
    delete_service = staticmethod(org_services.team_delete)
    create_in = TeamCreateIn
    create_service = staticmethod(org_services.team_create)


def _invite(view: TenantViewSet, values: dict[str, Any]) -> Invitation:
    invitation, token = service_call(
        org_services.invitation_create,
        organization=values["organization"],
        email=values["email"],
        role=values["role"],
        teams=values.get("teams", []),
        lifetime=timedelta(hours=values["expires_in_hours"]),
        actor=view.actor,
        context=view.audit_context,
    )
    invitation.token = token
    return invitation


class MembershipViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Members of the caller's organisations, with their role and teams. Adding one sends an invitation; removing one
    revokes their keys there."""

    model = Membership
    serializer_class = MembershipOut
    filterset_fields = ["organization", "role"]
    search_fields = ["user__email", "user__full_name"]
    ordering_fields = ["created_at", "user__email"]

    def base_queryset(self) -> Any:
        return Membership.objects.select_related("user", "role").prefetch_related("teams")

    @extend_schema(request=MembershipCreateIn, responses={202: MemberInvitedOut})
    def create(self, request: Request) -> Response:
        """Add a person: they get an invitation (202) and become a member when they accept it. Nobody is added without
        consent, and the answer never tells whether the address has an account."""
        data = MembershipCreateIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        values = data.validated_data
        self.check_may_add(values["organization"])
        self.check_role_within_reach(values["role"], values["organization"])
        return Response(MemberInvitedOut(_invite(self, values)).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=MembershipUpdateIn, responses=MembershipOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        membership = self.get_object()
        data = MembershipUpdateIn(data=request.data, partial=True, context={"request": request})
        data.is_valid(raise_exception=True)
        self.check_role_within_reach(membership.role, membership.organization)
        if "role" in data.validated_data:
            self.check_role_within_reach(data.validated_data["role"], membership.organization)
        membership = service_call(
            org_services.membership_update,
            membership=membership,
            role=data.validated_data.get("role"),
            teams=data.validated_data.get("teams"),
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(MembershipOut(membership).data)

    def destroy(self, request: Request, pk: str) -> Response:
        membership = self.get_object()
        self.check_role_within_reach(membership.role, membership.organization)
        service_call(
            membership_offboard,
            membership=membership,
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationViewSet(ServiceDestroyMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Invitations by link; the token is returned once, at creation. Deleting one withdraws it."""

    model = Invitation
    serializer_class = InvitationOut
    filterset_fields = ["organization", "email"]
    ordering_fields = ["created_at", "expires_at"]
    tenant_actions = {"accept": "view"}
    service_object = "invitation"
    delete_service = staticmethod(org_services.invitation_revoke)

    def base_queryset(self) -> Any:
        return Invitation.objects.prefetch_related("teams")

    @extend_schema(request=InvitationCreateIn, responses={201: InvitationCreatedOut})
    def create(self, request: Request) -> Response:
        data = InvitationCreateIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        values = data.validated_data
        self.check_may_add(values["organization"])
        self.check_role_within_reach(values["role"], values["organization"])
        return Response(InvitationCreatedOut(_invite(self, values)).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=InvitationAcceptIn, responses={201: MembershipOut})
    @action(detail=False, methods=["post"])
    def accept(self, request: Request) -> Response:
        """Join an organisation with an invitation's token, as the signed-in person it was sent to."""
        if not isinstance(request.user, User) or self.principal.key is not None:
            raise PermissionDenied("Accept invitations signed in as yourself, not with a key.")
        data = InvitationAcceptIn(data=request.data)
        data.is_valid(raise_exception=True)
        membership = service_call(
            org_services.invitation_accept,
            token=data.validated_data["token"],
            user=request.user,
            context=self.audit_context,
        )
        return Response(MembershipOut(membership).data, status=status.HTTP_201_CREATED)
