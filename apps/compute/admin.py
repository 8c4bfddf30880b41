"""Django admin for the compute inventory, tenant-scoped through `.restrict()`. Providers, pools and deployments are
created, edited and deleted through the same services as the API (checked, audited, reconciled after commit);
replicas are the worker's and only shown. Besides the model pages, the
deployments changelist offers "Register an external deployment": the admin twin of `POST /api/deployments/external/`
and `inferia deploy --external`, through the same service (SSRF checks, encrypted upstream key, audit)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from apps.audit.services import AuditContext
from apps.compute import inventory_services
from apps.compute.credentials import CREDENTIALS_TEXT_MAX, credentials_parse
from apps.compute.external_registration import external_deployment_create
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.compute.placement import deployment_placement_set
from apps.compute.urlsafety import UnsafeUrlError
from apps.orgs.models import Organization
from apps.rbac.admin_mixins import TenantAdminMixin
from apps.rbac.admin_writes import ServiceAdminMixin
from apps.rbac.restrict import Principal, organizations_allowing
from inferia_runtime.errors import DomainRefusal


class ProviderAdminForm(forms.ModelForm):
    """The provider form with its credentials typed once into a password input (never rendered back, never shown
    as ciphertext); empty on a change keeps the stored ones. They reach `inventory_services`, which encrypts them."""

    credentials = forms.CharField(
        label="Credentials (JSON)",
        required=False,
        strip=False,
        max_length=CREDENTIALS_TEXT_MAX,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password", "size": 80}),
        help_text='A JSON object, e.g. {"api_key": "…"}; line breaks inside a value written as \\n. Stored '
        "encrypted and never shown again. Leave empty to keep the stored credentials.",
    )

    class Meta:
        model = Provider
        fields = ["organization", "name", "kind", "config"]

    def clean_credentials(self) -> dict[str, Any] | None:
        try:
            return credentials_parse(self.cleaned_data.get("credentials") or "")
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None


@admin.register(Provider)
class ProviderAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    form = ProviderAdminForm
    list_display = ["name", "kind", "organization", "has_credentials", "created_at"]
    list_filter = ["kind", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "organization__name"]
    service_object = "provider"
    create_service = staticmethod(inventory_services.provider_create)
    update_service = staticmethod(inventory_services.provider_update)
    delete_service = staticmethod(inventory_services.provider_delete)
    service_fields = inventory_services.PROVIDER_FIELDS
    creation_fields = ("organization",)

    @admin.display(boolean=True, description="Credentials")
    def has_credentials(self, obj: Provider) -> bool:
        return bool(obj.credentials_encrypted)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The credentials field is the form's own (no model field); it stays writable whenever the rest is.
        return [name for name in super().get_readonly_fields(request, obj) if name != "credentials"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = ["organization", "name", "kind", "config"]
        return [*fields, "credentials"] if self.has_change_permission(request, obj) or obj is None else fields

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        credentials = form.cleaned_data.get("credentials")
        if not change:
            names = (*self.creation_fields, *self.service_fields)
            values = {name: form.cleaned_data[name] for name in names}
            obj.pk = self.service_create(request, {**values, "credentials": credentials}).pk
            return
        stored = Provider.objects.get(pk=obj.pk)
        # Only what differs from the stored row (a JSON box re-posted as typed is not a change to audit).
        changes = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name in self.service_fields and getattr(stored, name) != form.cleaned_data[name]
        }
        if changes or credentials is not None:
            inventory_services.provider_update(
                provider=stored,
                changes=changes,
                credentials=credentials,
                actor=request.user,
                context=self.audit_context(request),
            )


@admin.register(ComputePool)
class ComputePoolAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ["name", "provider", "organization", "region", "gpu_type", "gpus_per_node", "max_nodes"]
    list_filter = ["provider__kind", "organization", "gpu_type"]
    list_select_related = ["provider", "organization"]
    search_fields = ["name", "region", "gpu_type"]
    service_object = "pool"
    create_service = staticmethod(inventory_services.pool_create)
    update_service = staticmethod(inventory_services.pool_update)
    delete_service = staticmethod(inventory_services.pool_delete)
    service_fields = inventory_services.POOL_FIELDS
    creation_fields = ("organization",)


class ReadOnlyReplicas:
    """Replicas are the worker's: provisioned, health-checked and torn down by it, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReplicaInline(ReadOnlyReplicas, admin.TabularInline):
    model = Replica
    extra = 0
    fields = ["state", "pool", "endpoint", "last_heartbeat_at", "last_error"]
    readonly_fields = fields


class ExternalDeploymentForm(forms.Form):
    """What registering OpenAI-compatible servers someone already runs takes: where they are, what they serve,
    the key they want (stored encrypted, never shown back), whose deployment it is and what it costs."""

    organization = forms.ModelChoiceField(queryset=Organization.objects.none(), label="Organisation")
    base_urls = forms.CharField(
        label="Base URLs",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="One per line, one replica each, e.g. https://llm.example.com/v1. Private and loopback addresses "
        "are refused unless INFERIA_UPSTREAM_ALLOW_PRIVATE is set.",
    )
    model_id = forms.CharField(label="Model name", max_length=300, help_text="The model the upstream serves.")
    served_model_name = forms.CharField(
        label="Served name",
        max_length=200,
        required=False,
        help_text="The `model` Inferia's clients ask for (default: the model name).",
    )
    api_key = forms.CharField(
        label="Upstream API key",
        max_length=4000,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Sent to the upstream as a bearer token; stored encrypted and never shown again.",
    )
    price_input_per_mtok_micros = forms.IntegerField(
        label="Input price", min_value=0, initial=0, help_text="Per 1M input tokens, in micro-units (1e-6)."
    )
    price_output_per_mtok_micros = forms.IntegerField(
        label="Output price", min_value=0, initial=0, help_text="Per 1M output tokens, in micro-units (1e-6)."
    )

    def __init__(self, *args: Any, organizations: QuerySet[Organization], platform: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["organization"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = organizations
        if platform:  # only the platform superadmin owns deployments outside any organisation
            field.required = False
            field.empty_label = "The platform (no organisation)"

    def clean_base_urls(self) -> list[str]:
        urls = [line.strip() for line in self.cleaned_data["base_urls"].splitlines() if line.strip()]
        if not urls:
            raise forms.ValidationError("Give at least one base URL.")
        if len(urls) > 64:
            raise forms.ValidationError("At most 64 base URLs.")
        return urls

    def service_arguments(self) -> dict[str, Any]:
        """The form's values as `external_deployment_create` takes them."""
        data = self.cleaned_data
        return {
            "organization": data["organization"],
            "base_urls": data["base_urls"],
            "model_id": data["model_id"],
            "served_model_name": data["served_model_name"] or data["model_id"],
            "api_key": data["api_key"],
            "price_input_per_mtok_micros": data["price_input_per_mtok_micros"],
            "price_output_per_mtok_micros": data["price_output_per_mtok_micros"],
        }


def _registering_organizations(user: Any) -> QuerySet[Organization]:
    """Where `user` may register one: organisations in which they may add providers, pools and deployments."""
    allowed = Organization.objects.filter(is_active=True)
    for model in (Provider, ComputePool, ModelDeployment):
        allowed = allowed.filter(pk__in=organizations_allowing(principal=user, action="add", model=model).values("pk"))
    return allowed.order_by("name")


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ["served_model_name", "model_id", "organization", "pool", "state", "desired_replicas"]
    list_filter = ["state", "engine", "organization"]
    list_select_related = ["organization", "pool"]
    search_fields = ["served_model_name", "model_id", "name"]
    filter_horizontal = ["shared_with", "placement_pools"]
    inlines = [ReplicaInline]
    service_object = "deployment"
    create_service = staticmethod(inventory_services.deployment_create)
    update_service = staticmethod(inventory_services.deployment_update)
    # Deleting one that runs nothing also deletes what a one-call registration made for it.
    delete_service = staticmethod(inventory_services.deployment_delete)
    service_fields = (*inventory_services.DEPLOYMENT_FIELDS, "shared_with", "placement_pools")
    creation_fields = ("organization",)
    # What the worker records as the deployment runs: a careless save must not overwrite it.
    readonly_fields = [
        "state",
        "state_reason",
        "state_changed_at",
        "last_scaled_at",
        "consecutive_failures",
        "last_failure_at",
        "last_error",
        "replace_after",
    ]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Only a deployment that runs nothing may go: stop it first, and the worker tears its replicas down.
        if obj is not None and obj.replicas.exclude(state=Replica.State.STOPPED).exists():
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, set[str], Any]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Stopped replicas go with their deployment in the service; that nobody deletes one by hand is no obstacle.
        return deleted, counts, perms_needed - {str(Replica._meta.verbose_name)}, protected

    def service_create(self, request: HttpRequest, values: dict[str, Any]) -> Any:
        shared_with = values.pop("shared_with")
        placement_pools = values.pop("placement_pools")
        deployment = super().service_create(request, values)
        if shared_with:
            self._share(request, deployment, shared_with)
        if placement_pools:
            self._place(request, deployment, placement_pools)
        return deployment

    def service_update(self, request: HttpRequest, obj: Any, changes: dict[str, Any]) -> Any:
        if "shared_with" in changes:
            self._share(request, obj, changes.pop("shared_with"))
        if "placement_pools" in changes:
            self._place(request, obj, list(changes.pop("placement_pools")))
        return super().service_update(request, obj, changes) if changes else obj

    def _place(self, request: HttpRequest, deployment: ModelDeployment, pools: list[ComputePool]) -> None:
        deployment_placement_set(
            deployment=deployment, pools=pools, actor=request.user, context=self.audit_context(request)
        )

    def _share(self, request: HttpRequest, deployment: ModelDeployment, organizations: list[Organization]) -> None:
        inventory_services.deployment_share(
            deployment=deployment, organizations=organizations, actor=request.user, context=self.audit_context(request)
        )

    def get_urls(self) -> list[URLPattern]:
        register = path(
            "register-external/",
            self.admin_site.admin_view(self.register_external_view),
            name="compute_modeldeployment_register_external",
        )
        return [register, *super().get_urls()]

    def register_external_view(self, request: HttpRequest) -> HttpResponse:
        """The form; on submit, `external_deployment_create` as the signed-in user, refusals shown on the form."""
        organizations = _registering_organizations(request.user)
        platform = Principal.of(request.user).is_superadmin
        if not self.has_add_permission(request) or not (platform or organizations.exists()):
            raise PermissionDenied
        form = ExternalDeploymentForm(request.POST or None, organizations=organizations, platform=platform)
        if request.method == "POST" and form.is_valid():
            deployment = self._register(request, form)
            if deployment is not None:
                messages.success(request, f"Registered {deployment.served_model_name}; the worker adopts it now.")
                return redirect(reverse("admin:compute_modeldeployment_change", args=[deployment.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Register an external deployment",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/compute/modeldeployment/register_external.html", context)

    def _register(self, request: HttpRequest, form: ExternalDeploymentForm) -> ModelDeployment | None:
        try:
            with transaction.atomic(durable=True):
                deployment: ModelDeployment = external_deployment_create(
                    **form.service_arguments(), actor=request.user, context=AuditContext.from_request(request)
                )
                return deployment
        except UnsafeUrlError as error:
            form.add_error("base_urls", str(error))
        except DjangoValidationError as error:
            form.add_error(None, error.messages)
        except DomainRefusal as error:
            form.add_error(None, str(error))
        except IntegrityError:
            form.add_error("served_model_name", "This owner already serves a model under that name.")
        return None


@admin.register(Replica)
class ReplicaAdmin(ReadOnlyReplicas, TenantAdminMixin, admin.ModelAdmin):
    list_display = ["id", "deployment", "state", "endpoint", "last_heartbeat_at", "updated_at"]
    list_filter = ["state", "deployment__organization"]
    list_select_related = ["deployment"]
    search_fields = ["endpoint", "deployment__served_model_name"]
