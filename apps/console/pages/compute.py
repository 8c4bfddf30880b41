"""The compute pages: providers (where GPU nodes come from, with their credentials) and pools (the kinds of node a
provider gives, with their size limit and price), listed, created, edited and deleted through
`apps.compute.inventory_services` (checked and audited), and a provider's "test connection".

Credentials are typed once into a password input and go straight to the service, which encrypts them. No page ever
shows them again: the input has no value on any render (a form shown again after an error included), the edit page
says only whether some are stored, and leaving the input empty keeps the stored ones. The views that receive them
are `sensitive_post_parameters`, so an error report masks them.

Pages work in the console's one organisation (the top bar's choice); the superadmin can also pick the platform and
manage the platform's own providers and pools. Whoever may only view sees the lists and forms without buttons, and
the server answers a forged POST with 403 (404 when the row is not visible to them at all)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.compute import inventory_services
from apps.compute.adapters import provider_connection_check, supported_kinds
from apps.compute.credentials import CREDENTIALS_TEXT_MAX, credentials_parse
from apps.compute.models import ComputePool, Provider, Replica
from apps.console.money_field import MoneyField
from apps.console.pages.support import (
    json_fields_clean,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    require_may_add,
    service_run,
    tenant_object,
)
from apps.console.scope import PLATFORM, OrgScope, org_scope_get
from apps.orgs.models import Organization
from inferia_runtime.money import MICROS_PER_UNIT, money_currency, money_plain

# The most text the settings box takes (credentials have their own bound, CREDENTIALS_TEXT_MAX).
CONFIG_MAX_CHARS = 20_000
# Per GPU-hour: beyond any real price, short of a typo's thousandfold.
GPU_HOUR_CAP_MICROS = 10_000 * MICROS_PER_UNIT
GPUS_PER_NODE_MAX = 64
MAX_NODES_MAX = 10_000

# What each kind's adapter reads from its credentials, for the form's hint (never values).
CREDENTIAL_KEYS = {
    "simulator": "none needed",
    "local": "hf_token (optional)",
    "external": "api_key (sent as a bearer token)",
    "ssh": "host_key, and private_key or password",
    "kubernetes": "kubeconfig, or host and token (ca_cert, verify_ssl optional)",
    "skypilot": "token, hf_token (both optional)",
}


def compute_tabs(current: str) -> list[dict[str, Any]]:
    return [
        {"url": reverse(name), "label": label, "current": name == current}
        for name, label in (("console:compute-providers", "Providers"), ("console:compute-pools", "Pools"))
    ]


class ProviderForm(forms.Form):
    """A provider: name, kind (only kinds with a working adapter; fixed once created), non-secret config as JSON,
    and credentials as a JSON object in a password input that never renders a value. Empty credentials on an edit
    keep the stored ones."""

    name = forms.CharField(label="Name", max_length=200)
    kind = forms.ChoiceField(label="Kind")
    config = forms.CharField(label="Settings (JSON)", required=False, max_length=CONFIG_MAX_CHARS)
    credentials = forms.CharField(
        label="Credentials (JSON)",
        required=False,
        max_length=CREDENTIALS_TEXT_MAX,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
    )

    JSON_FIELDS = {"config": dict}

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        labels = dict(Provider.Kind.choices)
        field = self.fields["kind"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(kind, labels.get(kind, kind)) for kind in supported_kinds()]
        field.required = not editing
        self.editing = editing

    def clean_credentials(self) -> dict[str, Any] | None:
        try:
            return credentials_parse(self.cleaned_data.get("credentials") or "")
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        json_fields_clean(self, cleaned, self.JSON_FIELDS)
        return cleaned


class PoolForm(forms.Form):
    """A pool: its provider (one of the same owner's), where and what its nodes are, how many, and the price of a
    GPU-hour in the currency (stored as integer micro-units)."""

    name = forms.CharField(label="Name", max_length=200)
    provider = forms.TypedChoiceField(label="Provider", coerce=int)
    region = forms.CharField(label="Region", max_length=100, required=False)
    gpu_type = forms.CharField(label="GPU type", max_length=100, required=False)
    gpus_per_node = forms.IntegerField(label="GPUs per node", min_value=1, max_value=GPUS_PER_NODE_MAX, initial=1)
    max_nodes = forms.IntegerField(label="Maximum nodes", min_value=1, max_value=MAX_NODES_MAX, initial=1)
    cost = MoneyField(label="Cost per GPU-hour", max_micros=GPU_HOUR_CAP_MICROS)

    def __init__(self, *args: Any, providers: QuerySet[Provider], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.providers = {provider.pk: provider for provider in providers}
        field = self.fields["provider"]
        assert isinstance(field, forms.TypedChoiceField)
        field.choices = [(pk, str(provider)) for pk, provider in self.providers.items()]

    def pool_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "provider": self.providers[data["provider"]],
            "region": data["region"],
            "gpu_type": data["gpu_type"],
            "gpus_per_node": data["gpus_per_node"],
            "max_nodes": data["max_nodes"],
            "cost_per_gpu_hour_micros": data["cost"] or 0,
        }


def _in_scope(queryset: QuerySet[Any], scope: OrgScope) -> QuerySet[Any]:
    if scope.platform:
        return queryset.filter(organization__isnull=True)
    if scope.organization is None:
        return queryset.none()
    return queryset.filter(organization=scope.organization)


def _may_add(request: HttpRequest, scope: OrgScope, model: type[Provider] | type[ComputePool]) -> bool:
    if scope.platform:
        return page_principal(request).is_superadmin
    organization = scope.organization
    return (
        organization is not None
        and page_organizations_allowing(request, "add", model).filter(pk=organization.pk).exists()
    )


def _owner_for_create(request: HttpRequest, model: type[Provider] | type[ComputePool]) -> Organization | None:
    """Whose row a create form makes: the posted organisation where the user may add `model` rows (403 otherwise),
    or the platform (None) for the superadmin."""
    wanted = request.POST.get("organization", "")
    if wanted == PLATFORM:
        if not page_principal(request).is_superadmin:
            raise PermissionDenied("Only the platform's administrators add platform rows.")
        return None
    return require_may_add(request, model, wanted)


def _may(request: HttpRequest, row: Provider | ComputePool, action: str) -> bool:
    # Platform rows are the superadmin's alone, whatever an organisation role says.
    if row.organization_id is None and not page_principal(request).is_superadmin:
        return False
    return type(row).objects.filter(pk=row.pk).restrict(page_principal(request), action).exists()


def _scope(request: HttpRequest, model: type[Provider] | type[ComputePool]) -> OrgScope:
    return org_scope_get(request, model=model, action="view", platform_view=True)


def _owner_field(scope: OrgScope) -> str:
    return PLATFORM if scope.platform else str(scope.organization_id or "")


# Providers.


@never_cache
@login_required
@require_GET
def providers_view(request: HttpRequest) -> HttpResponse:
    scope = _scope(request, Provider)
    providers = _in_scope(Provider.objects.restrict(page_principal(request)), scope)
    rows = providers.select_related("organization").annotate(pool_count=Count("pools")).order_by("name")
    context = {
        "tabs": compute_tabs("console:compute-providers"),
        "scope": scope,
        "rows": list(rows),
        "may_add": _may_add(request, scope, Provider),
        "kind_labels": dict(Provider.Kind.choices),
    }
    return render(request, "console/compute/providers.html", context)


def _provider_page(request: HttpRequest, **values: Any) -> HttpResponse:
    form: ProviderForm = values["form"]
    context = {
        "tabs": compute_tabs("console:compute-providers"),
        "credential_keys": CREDENTIAL_KEYS,
        "config_text": _config_text(form),
        "may_change": True,
        "may_delete": False,
        "provider": None,
        **values,
    }
    return render(request, "console/compute/provider_edit.html", context, status=400 if form.errors else 200)


def _config_text(form: forms.Form) -> str:
    """The settings box's text: what was posted, else the initial settings as indented JSON."""
    if form.is_bound:
        return str(form.data.get("config", ""))
    return json.dumps(form.initial.get("config") or {}, indent=2)


@never_cache
@login_required
@sensitive_post_parameters("credentials")
@require_http_methods(["GET", "POST"])
def provider_create_view(request: HttpRequest) -> HttpResponse:
    scope = _scope(request, Provider)
    if request.method == "POST":
        organization = _owner_for_create(request, Provider)
        form = ProviderForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            provider, error = service_run(
                inventory_services.provider_create,
                organization=organization,
                name=data["name"],
                kind=data["kind"],
                config=data["config"],
                credentials=data["credentials"],
                actor=page_principal(request).actor,
                context=page_audit_context(request),
            )
            if not error:
                messages.success(request, f"Provider {provider.name} created; its credentials are stored encrypted.")
                return redirect("console:compute-provider-edit", pk=provider.pk)
            form.add_error(None, error)
        owner = request.POST.get("organization", "")
    else:
        if not _may_add(request, scope, Provider):
            return redirect("console:compute-providers")
        form = ProviderForm(initial={"kind": "simulator", "config": {}})
        owner = _owner_field(scope)
    return _provider_page(request, form=form, scope=scope, owner=owner)


@never_cache
@login_required
@sensitive_post_parameters("credentials")
@require_http_methods(["GET", "POST"])
def provider_edit_view(request: HttpRequest, pk: int) -> HttpResponse:
    action = "change" if request.method == "POST" else "view"
    provider = tenant_object(Provider.objects.select_related("organization"), request=request, pk=pk, action=action)
    may_change = _may(request, provider, "change")
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("You may not change this provider.")
        form = ProviderForm(request.POST, editing=True)
        if form.is_valid():
            data = form.cleaned_data
            wanted = {"name": data["name"], "config": data["config"]}
            changes = {name: value for name, value in wanted.items() if getattr(provider, name) != value}
            if not changes and data["credentials"] is None:
                messages.info(request, "Nothing changed.")
                return redirect("console:compute-provider-edit", pk=provider.pk)
            _, error = service_run(
                inventory_services.provider_update,
                provider=provider,
                changes=changes,
                credentials=data["credentials"],
                actor=page_principal(request).actor,
                context=page_audit_context(request),
            )
            if not error:
                replaced = " New credentials stored." if data["credentials"] is not None else ""
                messages.success(request, f"Provider saved.{replaced}")
                return redirect("console:compute-provider-edit", pk=provider.pk)
            form.add_error(None, error)
    else:
        form = ProviderForm(initial={"name": provider.name, "config": provider.config}, editing=True)
    return _provider_page(
        request,
        form=form,
        provider=provider,
        may_change=may_change,
        may_delete=_may(request, provider, "delete"),
        has_credentials=bool(provider.credentials_encrypted),
        pools=list(provider.pools.order_by("name")[:50]),
    )


@never_cache
@login_required
@require_POST
def provider_test_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask the provider's adapter to reach it with the stored config and credentials (reading only), and say how
    that went. Only who may change the provider may make it use its credentials."""
    provider = tenant_object(Provider.objects.all(), request=request, pk=pk, action="change")
    if not _may(request, provider, "change"):
        raise PermissionDenied("You may not test this provider.")
    outcome = provider_connection_check(provider)
    if outcome.ok:
        messages.success(request, f"Connection works: {outcome.message}")
    else:
        messages.error(request, f"Connection failed: {outcome.message}")
    return redirect("console:compute-provider-edit", pk=provider.pk)


@login_required
@require_POST
def provider_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    provider = tenant_object(Provider.objects.all(), request=request, pk=pk, action="delete")
    return _deleted(request, provider, "provider", inventory_services.provider_delete)


# Pools.


@never_cache
@login_required
@require_GET
def pools_view(request: HttpRequest) -> HttpResponse:
    scope = _scope(request, ComputePool)
    pools = _in_scope(ComputePool.objects.restrict(page_principal(request)), scope)
    running = Q(deployments__replicas__state=Replica.State.READY)
    rows = (
        pools.select_related("provider", "organization")
        .annotate(replicas_running=Count("deployments__replicas", filter=running))
        .order_by("name")
    )
    context = {
        "tabs": compute_tabs("console:compute-pools"),
        "scope": scope,
        "rows": list(rows),
        "may_add": _may_add(request, scope, ComputePool),
        "currency": money_currency(),
    }
    return render(request, "console/compute/pools.html", context)


def _providers_of(request: HttpRequest, organization_id: int | None) -> QuerySet[Provider]:
    return Provider.objects.restrict(page_principal(request)).filter(organization_id=organization_id).order_by("name")


def _pool_page(request: HttpRequest, **values: Any) -> HttpResponse:
    form: PoolForm = values["form"]
    context = {
        "tabs": compute_tabs("console:compute-pools"),
        "currency": money_currency(),
        "may_change": True,
        "may_delete": False,
        "pool": None,
        **values,
    }
    return render(request, "console/compute/pool_edit.html", context, status=400 if form.errors else 200)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def pool_create_view(request: HttpRequest) -> HttpResponse:
    scope = _scope(request, ComputePool)
    if request.method == "POST":
        organization = _owner_for_create(request, ComputePool)
        form = PoolForm(request.POST, providers=_providers_of(request, getattr(organization, "pk", None)))
        if form.is_valid():
            pool, error = service_run(
                inventory_services.pool_create,
                organization=organization,
                actor=page_principal(request).actor,
                context=page_audit_context(request),
                **form.pool_fields(),
            )
            if not error:
                messages.success(request, f"Pool {pool.name} created.")
                return redirect("console:compute-pool-edit", pk=pool.pk)
            form.add_error(None, error)
        owner = request.POST.get("organization", "")
    else:
        if not _may_add(request, scope, ComputePool):
            return redirect("console:compute-pools")
        form = PoolForm(providers=_providers_of(request, scope.organization_id), initial={"cost": "0"})
        owner = _owner_field(scope)
    return _pool_page(request, form=form, scope=scope, owner=owner)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def pool_edit_view(request: HttpRequest, pk: int) -> HttpResponse:
    action = "change" if request.method == "POST" else "view"
    pool = tenant_object(
        ComputePool.objects.select_related("organization", "provider"), request=request, pk=pk, action=action
    )
    may_change = _may(request, pool, "change")
    providers = _providers_of(request, pool.organization_id)
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("You may not change this pool.")
        form = PoolForm(request.POST, providers=providers)
        if form.is_valid():
            wanted = form.pool_fields()
            changes = {name: value for name, value in wanted.items() if getattr(pool, name) != value}
            if not changes:
                messages.info(request, "Nothing changed.")
                return redirect("console:compute-pool-edit", pk=pool.pk)
            _, error = service_run(
                inventory_services.pool_update,
                pool=pool,
                changes=changes,
                actor=page_principal(request).actor,
                context=page_audit_context(request),
            )
            if not error:
                messages.success(request, "Pool saved.")
                return redirect("console:compute-pool-edit", pk=pool.pk)
            form.add_error(None, error)
    else:
        initial = {name: getattr(pool, name) for name in ("name", "region", "gpu_type", "gpus_per_node", "max_nodes")}
        initial |= {"provider": pool.provider_id, "cost": money_plain(pool.cost_per_gpu_hour_micros)}
        form = PoolForm(initial=initial, providers=providers)
    return _pool_page(
        request,
        form=form,
        pool=pool,
        may_change=may_change,
        may_delete=_may(request, pool, "delete"),
        deployments=list(pool.deployments.order_by("served_model_name")[:50]),
    )


@login_required
@require_POST
def pool_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    pool = tenant_object(ComputePool.objects.all(), request=request, pk=pk, action="delete")
    return _deleted(request, pool, "pool", inventory_services.pool_delete)


def _deleted(request: HttpRequest, row: Provider | ComputePool, kind: str, delete: Callable[..., Any]) -> HttpResponse:
    """Delete a provider or pool through its service (`kind` names its argument and its pages); a refusal (something
    still uses it) goes back to its page with the reason."""
    if not _may(request, row, "delete"):
        raise PermissionDenied(f"You may not delete this {kind}.")
    principal, context = page_principal(request), page_audit_context(request)
    _, error = service_run(delete, **{kind: row}, actor=principal.actor, context=context)
    if error:
        messages.error(request, f"Not deleted. {error}")
        return redirect(f"console:compute-{kind}-edit", pk=row.pk)
    messages.success(request, f"{kind.capitalize()} {row.name} deleted.")
    return redirect(f"console:compute-{kind}s")
