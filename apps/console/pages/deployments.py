"""The deployments pages: the list (with the create form for who may add deployments), one deployment with its
replicas, load, latency and load over a chosen range, engine output, history and recent errors, and the scale, stop
and start buttons. Writes go through
the compute services with the signed-in user as actor (each records its audit event); live progress and output
arrive over the WebSocket in `apps/console/consumers.py`.

Who may not change a deployment sees no buttons, and the server answers a forged POST with 403 (404 when the
deployment is not even visible to them)."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.compute import inventory_services, services
from apps.compute.external_registration import external_deployment_create
from apps.compute.load_selectors import deployment_load_series
from apps.compute.models import ComputePool, ModelDeployment, Provider
from apps.compute.placement import deployment_placement_set
from apps.console import deployment_selectors as deps
from apps.console.metric_charts import metric_panels
from apps.console.money_field import MoneyField
from apps.console.pages.support import (
    form_errors_tell,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    require_may_add,
    service_announce,
    service_run,
    tenant_object,
)
from apps.console.scope import OrgScope, org_scope_get
from apps.orgs.models import Organization, Team
from apps.usage import selectors as usage
from apps.usage.latency_selectors import usage_latency_series
from apps.usage.models import UsageDeploymentRollup, UsageRecord
from inferia_runtime.money import MICROS_PER_UNIT, money_currency, money_plain

SIMULATOR_CHOICE = "simulator"
CHAT_PATH = "/v1/chat/completions"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")


class DeploymentCreateForm(forms.Form):
    """What the create form asks: where (a pool, or a new simulated one in an organisation), what model, how many."""

    organization = forms.IntegerField(label="Organisation")
    pool = forms.CharField(label="Pool", max_length=32)
    served_model_name = forms.CharField(label="Model name clients ask for", max_length=200)
    model_id = forms.CharField(label="Model to load", max_length=300)
    replicas = forms.IntegerField(label="Replicas", min_value=1, max_value=16, initial=1)

    def clean_served_model_name(self) -> str:
        name = self.cleaned_data["served_model_name"].strip()
        if not _NAME_RE.match(name):
            raise forms.ValidationError("Use letters, digits and . _ : / - (starting with a letter or digit).")
        return name


class ExternalDeploymentForm(forms.Form):
    """Registering an OpenAI-compatible server someone already runs (vLLM, SGLang, TGI, a hosted API): where it is,
    what it serves, and its key (stored encrypted like every provider credential, never shown back)."""

    organization = forms.IntegerField(label="Organisation")
    base_url = forms.URLField(label="Base URL", max_length=2000, assume_scheme="https")
    model_id = forms.CharField(label="Model name", max_length=300)
    served_model_name = forms.CharField(label="Served name", max_length=200, required=False)
    api_key = forms.CharField(label="Upstream API key", max_length=4000, required=False)

    def clean_served_model_name(self) -> str:
        name = self.cleaned_data["served_model_name"].strip()
        if name and not _NAME_RE.match(name):
            raise forms.ValidationError("Use letters, digits and . _ : / - (starting with a letter or digit).")
        return name


class ScaleForm(forms.Form):
    replicas = forms.IntegerField(label="Replicas", min_value=0, max_value=inventory_services.REPLICAS_CAP)


# Per million tokens: beyond any real price, short of a typo's thousandfold.
PRICE_CAP_MICROS = 1_000_000 * MICROS_PER_UNIT
TIMEOUT_CAP_S = 3600.0
PRICE_FIELDS = {"price_input": "price_input_per_mtok_micros", "price_output": "price_output_per_mtok_micros"}
TIMEOUT_FIELDS = ("connect_timeout_s", "first_byte_timeout_s", "idle_timeout_s")
STREAM_INTERVAL_FIELDS = ("stream_interval_ms", "stream_interval_chunks")


def chat_curl(*, url: str, model: str) -> str:
    """A curl command for one chat completion against `url` with `model`, shell-quoted (a served name may hold a
    quote), the key left to the `$INFERIA_API_KEY` variable so that no secret is ever on the page."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    return (
        f"curl {shlex.quote(url)} \\\n"
        '  -H "Authorization: Bearer $INFERIA_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(body)}"
    )


class DeploymentSettingsForm(forms.Form):
    """What the deployment page lets its owners change: the replica bounds scaling (by hand or by the autoscaler)
    stays within, the prices usage is charged at (currency per million tokens; stored as integer micro-units) and
    the upstream timeouts (empty: the gateway's defaults). A price or timeout the POST leaves out is left as it is.
    The service checks them again; the form gives the clear message."""

    min_replicas = forms.IntegerField(label="Minimum replicas", min_value=0, max_value=inventory_services.REPLICAS_CAP)
    max_replicas = forms.IntegerField(label="Maximum replicas", min_value=0, max_value=inventory_services.REPLICAS_CAP)
    price_input = MoneyField(label="Input price per million tokens", max_micros=PRICE_CAP_MICROS)
    price_output = MoneyField(label="Output price per million tokens", max_micros=PRICE_CAP_MICROS)
    connect_timeout_s = forms.FloatField(
        label="Connect timeout (s)", required=False, min_value=0.1, max_value=TIMEOUT_CAP_S
    )
    first_byte_timeout_s = forms.FloatField(
        label="First byte timeout (s)", required=False, min_value=0.1, max_value=TIMEOUT_CAP_S
    )
    idle_timeout_s = forms.FloatField(label="Idle timeout (s)", required=False, min_value=0.1, max_value=TIMEOUT_CAP_S)
    stream_interval_ms = forms.IntegerField(
        label="Stream interval (ms)", required=False, min_value=0, max_value=inventory_services.STREAM_INTERVAL_MS_CAP
    )
    stream_interval_chunks = forms.IntegerField(
        label="Stream interval (chunks)",
        required=False,
        min_value=0,
        max_value=inventory_services.STREAM_INTERVAL_CHUNKS_CAP,
    )
    # Empty: charged to the organisation alone; left out of the POST: unchanged.
    team = forms.IntegerField(label="GPUs charged to", required=False, min_value=1)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        low, high = cleaned.get("min_replicas"), cleaned.get("max_replicas")
        if low is not None and high is not None and low > high:
            self.add_error("max_replicas", "The maximum cannot be below the minimum.")
        return cleaned

    def changes(self, deployment: ModelDeployment) -> dict[str, Any]:
        """The model fields whose value differs from the deployment's (the audit diff then shows only what
        changed)."""
        data = self.cleaned_data
        wanted: dict[str, Any] = {"min_replicas": data["min_replicas"], "max_replicas": data["max_replicas"]}
        for name, field in PRICE_FIELDS.items():
            if data.get(name) is not None:
                wanted[field] = data[name]  # micro-units, exactly (MoneyField)
        for name in TIMEOUT_FIELDS:
            if name in self.data:  # present and empty: back to the gateway's default
                wanted[name] = data.get(name)
        for name in STREAM_INTERVAL_FIELDS:
            if name in self.data:  # present and empty: off
                wanted[name] = data.get(name) or 0
        changed = {name: value for name, value in wanted.items() if getattr(deployment, name) != value}
        if "team" in self.data and data.get("team") != deployment.team_id:
            # Only a team of the deployment's organisation: any other id reads as one that does not exist.
            team = Team.objects.filter(pk=data.get("team"), organization_id=deployment.organization_id).first()
            if data.get("team") is not None and team is None:
                raise forms.ValidationError("Choose a team of the deployment's organisation.")
            changed["team"] = team
        return changed


def _deployments(request: HttpRequest, action: str = "view") -> Any:
    return ModelDeployment.objects.restrict(page_principal(request), action)


def _in_scope(deployments: Any, scope: OrgScope) -> Any:
    """The organisation's own deployments and the platform's shared with it; every one on the platform view."""
    if scope.platform:
        return deployments
    if scope.organization is None:
        return deployments.none()
    shared = ModelDeployment.objects.filter(organization__isnull=True, shared_with=scope.organization).values("pk")
    return deployments.filter(Q(organization=scope.organization) | Q(pk__in=shared))


@login_required
@require_GET
def deployments_view(request: HttpRequest) -> HttpResponse:
    # The list and the deploy form work in one organisation, the console's current one: its deployments and the
    # platform's shared with it; its pools only (never a mix of every organisation's). The superadmin may also
    # look at the whole platform's.
    scope = org_scope_get(request, model=ModelDeployment, action="view", platform_view=True)
    rows = list(deps.deployment_list(deployments=_in_scope(_deployments(request), scope)))
    organization = scope.organization
    may_add = (
        organization is not None
        and page_organizations_allowing(request, "add", ModelDeployment).filter(pk=organization.pk).exists()
    )
    context: dict[str, Any] = {"deployments": rows, "scope": scope, "may_add": may_add}
    if may_add:
        # Registering an external endpoint makes a provider and a pool too: offered where all three may be added.
        pool_orgs = page_organizations_allowing(request, "add", ComputePool).values("pk")
        context["may_register"] = (
            page_organizations_allowing(request, "add", Provider).filter(pk=organization.pk, pk__in=pool_orgs).exists()
        )
        pools = ComputePool.objects.restrict(page_principal(request)).filter(organization=organization)
        context["pools"] = deps.deployable_pools(pools=pools)
        context["simulator"] = SIMULATOR_CHOICE
    return render(request, "console/deployments/list.html", context)


@login_required
@require_POST
def deployment_create_view(request: HttpRequest) -> HttpResponse:
    form = DeploymentCreateForm(request.POST)
    organization = require_may_add(request, ModelDeployment, request.POST.get("organization"))
    if not form.is_valid():
        form_errors_tell(request, form)
        return redirect("console:deployments")
    data = form.cleaned_data
    actor, context = page_principal(request).actor, page_audit_context(request)
    if data["pool"] == SIMULATOR_CHOICE:
        require_may_add(request, Provider, organization.pk)  # the shortcut creates a simulator provider and pool
        result, error = service_run(
            services.simulator_deployment_ensure,
            organization=organization,
            served_model_name=data["served_model_name"],
            model_id=data["model_id"],
            replicas=data["replicas"],
            actor=actor,
            context=context,
        )
        deployment = result[0] if result else None
    else:
        pool = _pool_for(request, data["pool"], organization)
        if pool is None:
            messages.error(request, "Choose a pool of that organisation whose provider has a working adapter.")
            return redirect("console:deployments")
        deployment, error = service_run(
            inventory_services.deployment_create,
            organization=organization,
            pool=pool,
            actor=actor,
            context=context,
            name=data["served_model_name"],
            served_model_name=data["served_model_name"],
            model_id=data["model_id"],
            min_replicas=data["replicas"],
            max_replicas=data["replicas"],
            desired_replicas=data["replicas"],
        )
    if deployment is None:
        messages.error(request, error or "The deployment could not be created.")
        return redirect("console:deployments")
    messages.success(request, f"Deploying {deployment.served_model_name}. Progress shows below as it happens.")
    return redirect("console:deployment-detail", pk=deployment.pk)


@login_required
@require_POST
def external_deployment_create_view(request: HttpRequest) -> HttpResponse:
    """Register an external deployment in an organisation where the user may add providers, pools and deployments
    (the registration makes one of each), through the service the REST API, CLI and Django admin use."""
    organization_id = request.POST.get("organization")
    for model in (Provider, ComputePool, ModelDeployment):
        organization = require_may_add(request, model, organization_id)
    form = ExternalDeploymentForm(request.POST)
    if not form.is_valid():
        form_errors_tell(request, form)
        return redirect(f"{reverse('console:deployments')}?org={organization.slug}")
    data = form.cleaned_data
    deployment, error = service_run(
        external_deployment_create,
        organization=organization,
        base_urls=[data["base_url"]],
        model_id=data["model_id"],
        served_model_name=data["served_model_name"] or data["model_id"],
        api_key=data["api_key"],
        actor=page_principal(request).actor,
        context=page_audit_context(request),
    )
    if deployment is None:
        messages.error(request, error or "The deployment could not be registered.")
        return redirect(f"{reverse('console:deployments')}?org={organization.slug}")
    messages.success(request, f"Registered {deployment.served_model_name}; the worker adopts the endpoint now.")
    return redirect("console:deployment-detail", pk=deployment.pk)


def _pool_for(request: HttpRequest, value: str, organization: Organization) -> ComputePool | None:
    if not value.isdigit():
        return None
    pools = ComputePool.objects.restrict(page_principal(request))
    found = deps.deployable_pools(pools=pools.filter(pk=int(value), organization=organization))
    return found[0] if found else None


@login_required
@require_GET
def deployment_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = tenant_object(
        ModelDeployment.objects.select_related("organization", "pool__provider", "team"), request=request, pk=pk
    )
    can_change = _deployments(request, "change").filter(pk=deployment.pk).exists()
    who = page_principal(request)
    records = UsageRecord.objects.restrict(who)
    snapshot = deps.deployment_snapshot(deployment=deployment)
    range_name = request.GET.get("range", usage.DEFAULT_RANGE)
    if range_name not in usage.RANGES:
        range_name = usage.DEFAULT_RANGE
    since, until, bucket = usage.range_window(range_name)
    # The viewer's own requests to this deployment (a platform deployment's page shows each organisation its own).
    rollups = UsageDeploymentRollup.objects.restrict(who).filter(deployment_id=deployment.pk)
    panels = metric_panels(
        latency=usage_latency_series(rollups=rollups, since=since, until=until, bucket=bucket),
        load=deployment_load_series(
            deployments=ModelDeployment.objects.filter(pk=deployment.pk),
            since=since,
            until=until,
            fine_seconds=settings.INFERIA_LOAD_SAMPLE_SECONDS,
        ),
        bucket=bucket,
        range_name=range_name,
    )
    context = {
        "deployment": deployment,
        "snapshot": snapshot,
        "replicas": snapshot["replicas"],
        "events": snapshot["events"],
        "errors": deps.deployment_recent_errors(records=records, deployment=deployment),
        "logs": deps.deployment_log_entries(replica_ids=[row["id"] for row in snapshot["replicas"]]),
        "log_panel_lines": deps.LOG_PANEL_LINES,
        "panels": panels,
        "range_name": range_name,
        "ranges": list(usage.RANGES),
        "can_change": can_change,
        "replicas_cap": inventory_services.REPLICAS_CAP,
        "price_input": money_plain(deployment.price_input_per_mtok_micros),
        "price_output": money_plain(deployment.price_output_per_mtok_micros),
        "currency": money_currency(),
        "timeout_cap": int(TIMEOUT_CAP_S),
        "stream_interval_ms_cap": inventory_services.STREAM_INTERVAL_MS_CAP,
        "stream_interval_chunks_cap": inventory_services.STREAM_INTERVAL_CHUNKS_CAP,
        "teams": Team.objects.filter(organization_id=deployment.organization_id).order_by("name")
        if deployment.organization_id is not None
        else Team.objects.none(),
        "curl": chat_curl(url=request.build_absolute_uri(CHAT_PATH), model=deployment.served_model_name),
        "scale_range": range(deployment.min_replicas, deployment.max_replicas + 1),
        "stoppable": deployment.state not in (ModelDeployment.State.STOPPING, ModelDeployment.State.STOPPED),
        "startable": deployment.state in (ModelDeployment.State.STOPPED, ModelDeployment.State.FAILED),
        "placement_choices": _placement_choices(deployment) if can_change else [],
        "placement_chosen": set(deployment.placement_pools.values_list("pk", flat=True)),
        "rollout": snapshot["rollout"],
    }
    return render(request, "console/deployments/detail.html", context)


def _placement_choices(deployment: ModelDeployment) -> list[ComputePool]:
    """The owner's other pools on providers whose nodes Inferia starts: what the placement form offers (the service
    refuses those a replica does not fit, saying why)."""
    pools = ComputePool.objects.filter(organization_id=deployment.organization_id).exclude(pk=deployment.pool_id)
    return list(pools.exclude(provider__kind=Provider.Kind.EXTERNAL).order_by("cost_per_gpu_hour_micros", "name"))


def deployment_changeable(request: HttpRequest, pk: int) -> ModelDeployment:
    return tenant_object(ModelDeployment.objects.all(), request=request, pk=pk, action="change")


@login_required
@require_POST
def deployment_scale_view(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = deployment_changeable(request, pk)
    form = ScaleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a number of replicas.")
        return redirect("console:deployment-detail", pk=pk)
    service_announce(
        request,
        services.deployment_scale,
        success=f"Scaling to {form.cleaned_data['replicas']} replicas.",
        deployment=deployment,
        replicas=form.cleaned_data["replicas"],
        actor=page_principal(request).actor,
        reason="scaled from the console",
        context=page_audit_context(request),
    )
    return redirect("console:deployment-detail", pk=pk)


@login_required
@require_POST
def deployment_settings_view(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = deployment_changeable(request, pk)
    form = DeploymentSettingsForm(request.POST)
    if not form.is_valid():
        form_errors_tell(request, form)
        return redirect("console:deployment-detail", pk=pk)
    try:
        changes = form.changes(deployment)
    except forms.ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("console:deployment-detail", pk=pk)
    if not changes:
        messages.info(request, "Nothing changed.")
        return redirect("console:deployment-detail", pk=pk)
    service_announce(
        request,
        inventory_services.deployment_update,
        success="Settings saved.",
        deployment=deployment,
        changes=changes,
        actor=page_principal(request).actor,
        context=page_audit_context(request),
    )
    return redirect("console:deployment-detail", pk=pk)


@login_required
@require_POST
def deployment_placement_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Set the pools replicas may be placed on besides the deployment's own, from the checked boxes."""
    deployment = deployment_changeable(request, pk)
    offered = {pool.pk: pool for pool in _placement_choices(deployment)}
    ids = request.POST.getlist("placement_pools")[: len(offered)]
    chosen = [offered[int(value)] for value in ids if value.isdigit() and int(value) in offered]
    service_announce(
        request,
        deployment_placement_set,
        success="Placement saved: new replicas go to the cheapest of these pools with room.",
        deployment=deployment,
        pools=chosen,
        actor=page_principal(request).actor,
        context=page_audit_context(request),
    )
    return redirect("console:deployment-detail", pk=pk)


@login_required
@require_POST
def deployment_stop_view(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = deployment_changeable(request, pk)
    service_announce(
        request,
        services.deployment_stop,
        success="Stopping: the replicas are being torn down.",
        deployment=deployment,
        actor=page_principal(request).actor,
        reason="stopped from the console",
        context=page_audit_context(request),
    )
    return redirect("console:deployment-detail", pk=pk)


@login_required
@require_POST
def deployment_start_view(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = deployment_changeable(request, pk)
    service_announce(
        request,
        services.deployment_start,
        success="Starting: replicas are being provisioned.",
        deployment=deployment,
        actor=page_principal(request).actor,
        reason="started from the console",
        context=page_audit_context(request),
    )
    return redirect("console:deployment-detail", pk=pk)
