"""The API keys pages: a searchable, keyset-paginated list with usage to date, create (the secret shown once),
rotate with a grace period, revoke, and one key's usage. Every query goes through `.restrict()`; every write
through `apps.keys.services`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.console.money_field import MoneyField
from apps.console.pages.policies import budget_warning
from apps.console.pages.support import (
    create_organizations,
    keyset_page,
    organization_current_slug,
    organization_filter,
    organizations_visible,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    query_without,
    require_may_add,
    service_run,
    tenant_object,
)
from apps.keys import services as key_services
from apps.keys.models import PURPOSE_APPLICATION_NAME, ApiKey, Scope, purpose_refusal
from apps.knowledge.models import VectorStore
from apps.orgs.models import Organization, Team
from apps.policies import services as policy_services
from apps.policies.effective import effective_policy_compile
from apps.policies.models import Policy
from apps.policies.selectors import policy_list_for_key
from apps.usage.models import UsageRecord, UsageRollup
from inferia_runtime.money import money_currency

SESSION_ISSUED = "inferia_console_issued_key"
ROTATION_GRACES = [
    (0, "End the old key now"),
    (3600, "1 hour"),
    (86400, "24 hours"),
    (7 * 86400, "7 days"),
]
STATES = [("", "Any state"), ("active", "Active"), ("revoked", "Revoked"), ("expired", "Expired")]


class KeyFilterForm(forms.Form):
    q = forms.CharField(label="Search by name or prefix", required=False, max_length=200)
    state = forms.ChoiceField(label="State", choices=STATES, required=False)
    team = forms.IntegerField(label="Team", required=False)


class KeyCreateForm(forms.Form):
    organization = forms.IntegerField(label="Organisation")
    name = forms.CharField(label="Name", max_length=200)
    scopes = forms.MultipleChoiceField(
        label="Scopes", choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[Scope.INFERENCE]
    )
    team = forms.IntegerField(label="Team", required=False)
    expires_on = forms.DateField(label="Expires on", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    service = forms.BooleanField(label="Service key (no owner)", required=False)
    # The key's own limits (optional): the models on the key itself, the rest in the key's policy, created with it.
    allowed_models = forms.CharField(label="Allowed models", required=False, max_length=4000)
    requests_per_minute = forms.IntegerField(
        label="Requests per minute", required=False, min_value=1, max_value=2**31 - 1
    )
    tokens_per_minute = forms.IntegerField(label="Tokens per minute", required=False, min_value=1, max_value=2**31 - 1)
    budget_per_day = MoneyField(label="Budget per day")
    budget_per_month = MoneyField(label="Budget per month")
    # Not on the page: the console issues application keys only, and says so to a request that asks for another kind.
    purpose = forms.CharField(required=False, max_length=16)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        currency = money_currency()
        for name in ("budget_per_day", "budget_per_month"):
            self.fields[name].label = f"{self.fields[name].label} ({currency})"

    def clean_allowed_models(self) -> list[str]:
        text = self.cleaned_data["allowed_models"]
        models = [name.strip() for name in text.replace("\n", ",").split(",") if name.strip()]
        if any(len(name) > 200 or "\x00" in name for name in models):
            raise forms.ValidationError("Model names and patterns are at most 200 characters.")
        return models

    def clean_purpose(self) -> str:
        purpose = str(self.cleaned_data["purpose"])
        if purpose in ("", PURPOSE_APPLICATION_NAME):
            return ""
        if purpose in ApiKey.Purpose.values:
            raise forms.ValidationError(purpose_refusal(purpose))
        raise forms.ValidationError(f"Keys are for applications: '{PURPOSE_APPLICATION_NAME}' is the only purpose.")

    def policy_fields(self) -> dict[str, Any]:
        """The key policy's limits the form sets (None: not set; no policy is created when none is)."""
        values = self.cleaned_data
        return {
            "requests_per_minute": values["requests_per_minute"],
            "tokens_per_minute": values["tokens_per_minute"],
            "budget_per_day_micros": values["budget_per_day"],
            "budget_per_month_micros": values["budget_per_month"],
        }


class KeyRotateForm(forms.Form):
    grace_seconds = forms.TypedChoiceField(
        label="Keep the old key working for", choices=ROTATION_GRACES, coerce=int, initial=86400
    )


class KeyRevokeForm(forms.Form):
    reason = forms.CharField(label="Reason", required=False, max_length=200)


class KeyStoresForm(forms.Form):
    """Which of the organisation's vector stores the key may search and retrieve from (none ticked: every one)."""

    vector_stores = forms.MultipleChoiceField(label="Vector stores", required=False, choices=())

    def __init__(self, *args: Any, stores: list[VectorStore], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["vector_stores"].choices = [(s.public_id, s.name or s.public_id) for s in stores]  # type: ignore[attr-defined]


# The stores a key's form offers: the organisation's, as far as the user may see them (the newest first).
KEY_STORES_OFFERED = 200


def key_vector_stores(request: HttpRequest, key: ApiKey, *, offer: bool) -> dict[str, Any]:
    """The stores the key may use as the user may see them: each id it names with the store's name (or "not found":
    deleted, or not visible to the user), and, with `offer`, the organisation's stores to choose from. No query for
    what is not needed (a key limited to no store names none)."""
    visible = VectorStore.objects.restrict(page_principal(request)).filter(organization_id=key.organization_id)
    ids = key.allowed_vector_stores
    named = {s.public_id: s for s in visible.filter(public_id__in=ids).only("public_id", "name")} if ids else {}
    offered = (
        list(visible.only("public_id", "name").order_by("-created_at", "-id")[:KEY_STORES_OFFERED]) if offer else []
    )
    return {
        "named": [{"id": store_id, "store": named.get(store_id)} for store_id in key.allowed_vector_stores],
        "offered": offered,
    }


def _keys_filtered(request: HttpRequest, form: KeyFilterForm) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.restrict(page_principal(request))
    keys, _ = organization_filter(request, keys)
    if not form.is_valid():
        return keys
    query, state, team = form.cleaned_data["q"].strip(), form.cleaned_data["state"], form.cleaned_data["team"]
    if query:
        # A prefix search uses the unique index on `prefix`; a name search scans the organisation's keys.
        keys = (
            keys.filter(prefix__startswith=query)
            if query.startswith(key_services.KEY_PREFIX)
            else keys.filter(Q(name__icontains=query) | Q(prefix__startswith=query))
        )
    now = timezone.now()
    if state == "active":
        keys = keys.filter(Q(revoked_at__isnull=True) | Q(revoked_at__gt=now)).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )
    elif state == "revoked":
        keys = keys.filter(revoked_at__lte=now)
    elif state == "expired":
        keys = keys.filter(expires_at__lte=now)
    if team:
        keys = keys.filter(team_id=team)
    return keys


def _usage_by_key(request: HttpRequest, key_ids: list[int]) -> dict[int, dict[str, int]]:
    """Usage to date of the listed keys, from the hourly rollups, in one grouped query."""
    if not key_ids:
        return {}
    rows = (
        UsageRollup.objects.filter(api_key_id__in=key_ids)
        .restrict(page_principal(request))
        .order_by()
        .values("api_key_id")
        .annotate(
            requests=Sum("requests"), tokens=Sum("prompt_tokens") + Sum("completion_tokens"), cost=Sum("cost_micros")
        )
    )
    return {row["api_key_id"]: row for row in rows}


def key_state(key: ApiKey) -> str:
    """What the list shows: active, ending (a rotated key in its grace period), revoked or expired."""
    now = timezone.now()
    if key.revoked_at is not None:
        return "revoked" if key.revoked_at <= now else "ending"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def _teams_for_create(request: HttpRequest, create_orgs: list[Organization]) -> QuerySet[Team]:
    teams = Team.objects.restrict(page_principal(request))
    return teams.filter(organization_id__in=[o.pk for o in create_orgs]).select_related("organization")


@never_cache
@login_required
@require_GET
def keys_view(request: HttpRequest) -> HttpResponse:
    form = KeyFilterForm(request.GET or None)
    keys = _keys_filtered(request, form).select_related("team", "owner", "organization")
    page = keyset_page(keys, request=request)
    usage = _usage_by_key(request, [key.pk for key in page.rows])
    ids = [key.pk for key in page.rows]
    principal = page_principal(request)
    changeable = (
        set(ApiKey.objects.filter(pk__in=ids).restrict(principal, "change").values_list("pk", flat=True))
        if ids
        else set()
    )
    deletable = (
        set(ApiKey.objects.filter(pk__in=ids).restrict(principal, "delete").values_list("pk", flat=True))
        if ids
        else set()
    )
    rows = [
        {
            "key": key,
            "state": key_state(key),
            "usage": usage.get(key.pk, {}),
            "may_rotate": key.pk in changeable and key_state(key) == "active",
            "may_revoke": key.pk in deletable and key_state(key) in ("active", "ending"),
        }
        for key in page.rows
    ]
    create_orgs = create_organizations(request, ApiKey)
    context = {
        "form": form,
        "rows": rows,
        "page": page,
        "query": query_without(request, "older", "newer"),
        "create_orgs": create_orgs,
        "teams": list(_teams_for_create(request, create_orgs)) if create_orgs else [],
        "create_form": KeyCreateForm(),
        "orgs": organizations_visible(request),
        "org": organization_current_slug(request),
        "may_issue_service": page_organizations_allowing(request, "change", ApiKey).exists() if create_orgs else False,
        "may_limit": page_organizations_allowing(request, "add", Policy).exists() if create_orgs else False,
    }
    return render(request, "console/keys/list.html", context)


def _issued_to_session(request: HttpRequest, issued: key_services.IssuedKey, *, rotated: bool) -> None:
    request.session[SESSION_ISSUED] = {"key_id": issued.key.pk, "secret": issued.secret, "rotated": rotated}


@login_required
@require_POST
def key_create_view(request: HttpRequest) -> HttpResponse:
    form = KeyCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the form: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("console:keys")
    values = form.cleaned_data
    organization = require_may_add(request, ApiKey, values["organization"])
    team = None
    if values["team"]:
        team = (
            Team.objects.filter(organization=organization)
            .restrict(page_principal(request))
            .filter(pk=values["team"])
            .first()
        )
        if team is None:
            messages.error(request, "Choose one of the organisation's teams.")
            return redirect("console:keys")
    if (
        values["service"]
        and not page_organizations_allowing(request, "change", ApiKey).filter(pk=organization.pk).exists()
    ):
        raise PermissionDenied("You may issue keys for yourself only.")
    policy_fields = form.policy_fields()
    limited = any(value is not None for value in policy_fields.values())
    if limited and not page_organizations_allowing(request, "add", Policy).filter(pk=organization.pk).exists():
        # A key policy only tightens what the levels above allow, but it is a policy all the same.
        messages.error(request, "Your role may not set policies: create the key without limits.")
        return redirect("console:keys")
    expires = values["expires_on"]
    issued, error = service_run(
        policy_services.api_key_create_with_policy,
        organization=organization,
        name=values["name"],
        scopes=values["scopes"],
        team=team,
        owner=None if values["service"] else request.user,
        expires_at=timezone.make_aware(timezone.datetime.combine(expires, timezone.datetime.min.time()))
        if expires
        else None,
        allowed_models=values["allowed_models"],
        policy_fields=policy_fields,
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
        return redirect("console:keys")
    warning = budget_warning(organization_id=organization.pk, fields=policy_fields)
    if warning:
        messages.warning(request, warning)
    _issued_to_session(request, issued, rotated=False)
    return redirect("console:key-secret")


@never_cache
@login_required
@require_GET
def key_secret_view(request: HttpRequest) -> HttpResponse:
    """The secret of the key just issued or rotated, shown once: it leaves the session as it is shown."""
    issued = request.session.pop(SESSION_ISSUED, None)
    if not issued:
        messages.info(request, "A key's secret is shown only once, right after it is created or rotated.")
        return redirect("console:keys")
    key = tenant_object(ApiKey.objects.all(), request=request, pk=issued["key_id"])
    return render(
        request, "console/keys/secret.html", {"key": key, "secret": issued["secret"], "rotated": issued["rotated"]}
    )


# The limits the key page compares across levels: (policy field, label, whether it is money).
EFFECTIVE_ROWS = (
    ("requests_per_minute", "Requests per minute", False),
    ("tokens_per_minute", "Tokens per minute", False),
    ("concurrent_requests", "Concurrent requests", False),
    ("tokens_per_day", "Tokens per day", False),
    ("tokens_per_month", "Tokens per month", False),
    ("budget_per_day_micros", "Budget per day", True),
    ("budget_per_month_micros", "Budget per month", True),
)


def key_effective_policy(request: HttpRequest, key: ApiKey) -> dict[str, Any]:
    """What the gateway enforces on the key (every enabled level combined: the tightest limit wins, a model must
    pass every allow-list), beside each level's own policy the user may see. The combined values come from the
    same compiled policy the gateway uses, so they include levels the user may not open (counted in `hidden`)."""
    every = list(policy_list_for_key(key=key))
    visible_ids = set(
        Policy.objects.filter(pk__in=[p.pk for p in every])
        .restrict(page_principal(request))
        .values_list("pk", flat=True)
    )
    levels = {p.level: p for p in every if p.pk in visible_ids}
    # Compiled as the gateway compiles it (apps.policies.selectors.policy_effective_for), from the rows just read.
    effective = effective_policy_compile(
        key_id=key.pk,
        organization_id=key.organization_id,
        team_id=key.team_id,
        key_allowed_models=tuple(key.allowed_models),
        policies=sorted(every, key=lambda policy: ("org", "team", "key").index(policy.level)),
    )
    rows = [
        {
            "label": label,
            "money": is_money,
            "levels": [getattr(levels[level], name) if level in levels else None for level in ("org", "team", "key")],
            "effective": effective.limit_tightest(name),
        }
        for name, label, is_money in EFFECTIVE_ROWS
    ]
    rows.append(
        {
            "label": "Max tokens per request",
            "money": False,
            "levels": [
                levels[level].max_tokens_per_request if level in levels else None for level in ("org", "team", "key")
            ],
            "effective": effective.max_tokens_per_request,
        }
    )
    return {
        "levels": [levels.get(level) for level in ("org", "team", "key")],
        "rows": rows,
        "model_rules": [list(rule) for rule in effective.model_rules],
        "hidden": len(every) - len(levels),
    }


@never_cache
@login_required
@require_GET
def key_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    key = tenant_object(ApiKey.objects.select_related("team", "owner", "organization"), request=request, pk=pk)
    principal = page_principal(request)
    since = timezone.now() - timedelta(days=30)
    daily = list(
        UsageRollup.objects.restrict(principal)
        .filter(api_key_id=key.pk, organization_id=key.organization_id, hour__gte=since)
        .order_by()
        .annotate(day=TruncDay("hour"))
        .values("day")
        .annotate(
            requests=Sum("requests"),
            tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
            cost=Sum("cost_micros"),
            errors=Sum("errors"),
        )
        .order_by("-day")
    )
    totals = _usage_by_key(request, [key.pk]).get(key.pk, {})
    recent = list(
        UsageRecord.objects.restrict(principal)
        .filter(api_key_id=key.pk, organization_id=key.organization_id)
        .only(
            "request_id",
            "started_at",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "cost_micros",
            "latency_ms",
            "status_code",
            "outcome",
            "error_code",
        )
        .order_by("-started_at")[:20]
    )
    state = key_state(key)
    may_change = ApiKey.objects.filter(pk=key.pk).restrict(principal, "change").exists()
    context = {
        "key": key,
        "state": state,
        "daily": daily,
        "totals": totals,
        "recent": recent,
        "effective": key_effective_policy(request, key),
        "stores": key_vector_stores(request, key, offer=may_change and state in ("active", "ending")),
        "may_change_stores": may_change and state in ("active", "ending"),
        "may_rotate": state == "active" and may_change,
        "may_revoke": state in ("active", "ending")
        and ApiKey.objects.filter(pk=key.pk).restrict(principal, "delete").exists(),
        "rotate_form": KeyRotateForm(),
        "revoke_form": KeyRevokeForm(),
    }
    return render(request, "console/keys/detail.html", context)


@login_required
@require_POST
def key_rotate_view(request: HttpRequest, pk: int) -> HttpResponse:
    key = tenant_object(ApiKey.objects.all(), request=request, pk=pk, action="change")
    form = KeyRotateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose how long the old key keeps working.")
        return redirect("console:key-detail", pk=key.pk)
    issued, error = service_run(
        key_services.api_key_rotate,
        key=key,
        grace=timedelta(seconds=form.cleaned_data["grace_seconds"]),
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
        return redirect("console:key-detail", pk=key.pk)
    _issued_to_session(request, issued, rotated=True)
    return redirect("console:key-secret")


@login_required
@require_POST
def key_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    key = tenant_object(ApiKey.objects.all(), request=request, pk=pk, action="delete")
    form = KeyRevokeForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    _, error = service_run(
        key_services.api_key_revoke, key=key, reason=reason, actor=request.user, context=page_audit_context(request)
    )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"The key {key.prefix}… is revoked; gateways refuse it within a second.")
    return redirect("console:key-detail", pk=key.pk)


@login_required
@require_POST
def key_vector_stores_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Choose the vector stores the key may use (`allowed_vector_stores`; none: every store of the organisation)."""
    key = tenant_object(ApiKey.objects.all(), request=request, pk=pk, action="change")
    offered = key_vector_stores(request, key, offer=True)["offered"]
    form = KeyStoresForm(request.POST, stores=offered)
    if not form.is_valid():
        messages.error(request, "Choose among the organisation's vector stores.")
        return redirect("console:key-detail", pk=key.pk)
    chosen = form.cleaned_data["vector_stores"]
    _, error = service_run(
        key_services.api_key_update,
        key=key,
        changes={"allowed_vector_stores": chosen},
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
    elif chosen:
        messages.success(request, f"The key may now use {len(chosen)} vector store{'s' if len(chosen) > 1 else ''}.")
    else:
        messages.success(request, "The key may now use every vector store of its organisation.")
    return redirect("console:key-detail", pk=key.pk)
