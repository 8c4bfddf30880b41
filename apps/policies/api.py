"""REST endpoints for policies, guardrail profiles and prompt templates (with versions, diffs and render
previews). Every query goes through `.restrict()`; every write through the audited services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from apps.policies import services as policy_services
from apps.policies.errors import TemplateError, TemplateNotFound
from apps.policies.models import GuardrailProfile, Policy, PromptTemplate
from apps.policies.prompts import services as template_services
from apps.policies.prompts.selectors import prompt_template_versions_diff, template_render
from apps.policies.serializers import (
    GuardrailProfileCreateIn,
    GuardrailProfileOut,
    GuardrailProfileUpdateIn,
    PolicyCreateIn,
    PolicyOut,
    PolicyUpdateIn,
    PromptTemplateCreateIn,
    PromptTemplateDetailOut,
    PromptTemplateDiffOut,
    PromptTemplateOut,
    PromptTemplateRenderIn,
    PromptTemplateRenderOut,
    PromptTemplateUpdateIn,
    PromptTemplateVersionIn,
    PromptTemplateVersionOut,
)
from apps.rbac.api import GRANT_TENANT_ACTIONS, GrantActionsMixin
from apps.rbac.drf import (
    ServiceCreateMixin,
    ServiceDestroyMixin,
    ServiceUpdateMixin,
    TenantViewSet,
    service_call,
    service_schema,
)


@service_schema(create_in=PolicyCreateIn, update_in=PolicyUpdateIn, detail_out=PolicyOut)
class PolicyViewSet(
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Policies of the caller's organisations, at organisation, team and key level."""

    model = Policy
    serializer_class = PolicyOut
    filterset_fields = ["organization", "team", "api_key", "enabled", "guardrail_profile"]
    ordering_fields = ["created_at", "updated_at"]
    service_object = "policy"
    update_in = PolicyUpdateIn
    update_service = staticmethod(policy_services.policy_update)
    delete_service = staticmethod(policy_services.policy_delete)
    create_in = PolicyCreateIn
    create_service = staticmethod(policy_services.policy_create)


@service_schema(create_in=GuardrailProfileCreateIn, update_in=GuardrailProfileUpdateIn, detail_out=GuardrailProfileOut)
class GuardrailProfileViewSet(
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Guardrail profiles of the caller's organisations (platform profiles: the superadmin's)."""

    model = GuardrailProfile
    serializer_class = GuardrailProfileOut
    filterset_fields = ["organization", "is_default"]
    search_fields = ["name", "description"]
    ordering_fields = ["name", "updated_at"]
    service_object = "profile"
    update_in = GuardrailProfileUpdateIn
    update_service = staticmethod(policy_services.guardrail_profile_update)
    delete_service = staticmethod(policy_services.guardrail_profile_delete)
    create_in = GuardrailProfileCreateIn
    create_service = staticmethod(policy_services.guardrail_profile_create)

    def create_values(self, values: dict[str, Any]) -> dict[str, Any]:
        if values["organization"] is None:
            if not self.principal.is_superadmin:
                raise PermissionDenied("Only the platform superadmin creates platform profiles.")
            return values
        self.check_may_add(values["organization"])
        if values.pop("is_default", False):
            raise ValidationError({"is_default": "Only a platform profile can be the default."})
        return values


@service_schema(create_in=PromptTemplateCreateIn, update_in=PromptTemplateUpdateIn, detail_out=PromptTemplateDetailOut)
class PromptTemplateViewSet(
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    GrantActionsMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Prompt templates of the caller's organisations (and those granted to their teams), with their immutable
    versions: `POST .../versions/` adds one, `GET .../diff/?from=1&to=2` compares two, `POST .../render/`
    previews what a `/v1` request would send."""

    model = PromptTemplate
    serializer_class = PromptTemplateOut
    filterset_fields = ["organization", "name"]
    search_fields = ["name", "description"]
    ordering_fields = ["name", "updated_at", "created_at"]
    tenant_actions = {"diff": "view", "render": "view", **GRANT_TENANT_ACTIONS}
    service_object = "template"
    update_in = PromptTemplateUpdateIn
    detail_out = PromptTemplateDetailOut
    update_service = staticmethod(template_services.prompt_template_update)
    delete_service = staticmethod(template_services.prompt_template_delete)
    create_in = PromptTemplateCreateIn
    create_service = staticmethod(template_services.prompt_template_create)

    def tenant_action(self) -> str:
        if self.action == "versions":
            return "change" if self.request.method == "POST" else "view"
        return super().tenant_action()

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(PromptTemplateDetailOut(self.get_object()).data)

    def created_data(self, created: Any) -> Any:
        return PromptTemplateDetailOut(created.template).data  # the service answers with the first version

    @extend_schema(methods=["GET"], responses=PromptTemplateVersionOut(many=True))
    @extend_schema(methods=["POST"], request=PromptTemplateVersionIn, responses={201: PromptTemplateVersionOut})
    @action(detail=True, methods=["get", "post"])
    def versions(self, request: Request, pk: str) -> Response:
        """GET: the version history, newest first. POST: a new version (the content is never edited in place)."""
        template = self.get_object()
        if request.method == "POST":
            data = PromptTemplateVersionIn(data=request.data)
            data.is_valid(raise_exception=True)
            version = service_call(
                template_services.prompt_template_version_create,
                template=template,
                **data.validated_data,
                actor=self.actor,
                context=self.audit_context,
            )
            return Response(PromptTemplateVersionOut(version).data, status=status.HTTP_201_CREATED)
        versions = template.versions.select_related("template").order_by("-version")
        page = self.paginate_queryset(versions)
        return self.get_paginated_response(PromptTemplateVersionOut(page, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.INT, required=True, description="The older version."),
            OpenApiParameter("to", OpenApiTypes.INT, required=False, description="The newer version (latest)."),
        ],
        responses=PromptTemplateDiffOut,
    )
    @action(detail=True, methods=["get"])
    def diff(self, request: Request, pk: str) -> Response:
        """A unified diff between two versions' content."""
        template = self.get_object()
        try:
            from_version = int(request.query_params["from"])
            to_version = int(request.query_params.get("to", template.latest_version))
        except (KeyError, ValueError):
            raise ValidationError({"from": "Give ?from=<version>&to=<version> (to defaults to the latest)."}) from None
        try:
            diff = prompt_template_versions_diff(template=template, from_version=from_version, to_version=to_version)
        except TemplateNotFound as error:
            raise NotFound(error.message) from error
        return Response({"from_version": from_version, "to_version": to_version, "diff": diff})

    @extend_schema(request=PromptTemplateRenderIn, responses=PromptTemplateRenderOut)
    @action(detail=True, methods=["post"])
    def render(self, request: Request, pk: str) -> Response:
        """What a `/v1` request naming this template would send: the rendered messages, model and parameters."""
        template = self.get_object()
        data = PromptTemplateRenderIn(data=request.data)
        data.is_valid(raise_exception=True)
        ref = f"{template.name}@{data.validated_data['version']}"
        try:
            rendered = template_render(
                organization_id=template.organization_id, ref=ref, variables=data.validated_data["variables"]
            )
        except TemplateNotFound as error:
            raise NotFound(error.message) from error
        except TemplateError as error:
            raise ValidationError({"variables": [error.message]}) from error
        body: dict[str, Any] = {
            "messages": rendered.messages,
            "model": rendered.model,
            "params": rendered.params,
            "template": rendered.ref,
            "version": rendered.version,
        }
        return Response(body)
