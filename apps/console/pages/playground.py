"""The playground: pick one of the models your organisation may use (and optionally a prompt template), chat with
streamed answers, and see the tokens, latency and guardrails of each request. `?template=name` preselects a template
and prefills its variables.

The page posts to `playground_chat_view`, which runs the request through the real `/v1` pipeline with the user's
playground key (see apps/console/playground_gateway.py); once the usage worker has recorded the request,
`playground_request_view` answers what it used and which guardrails fired. Running the playground spends the
organisation's tokens, so it needs a role that may create API keys; viewers see the page but cannot send."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.compute.models import ModelDeployment
from apps.console.pages.support import page_organizations_allowing, page_principal
from apps.console.playground_gateway import (
    CHAT_PATH,
    CHAT_SOCKET_PATH,
    playground_body,
    playground_chat_stream,
    playground_key_secret,
)
from apps.console.scope import SESSION_KEY, OrgScope, org_scope_get
from apps.keys.models import ApiKey
from apps.orgs.models import Organization
from apps.policies.errors import PolicyDenied
from apps.policies.models import PromptTemplate, PromptTemplateVersion
from apps.policies.prompts.selectors import template_render
from apps.usage.models import UsageRecord
from inferia_runtime.money import money_format

SERVING = (ModelDeployment.State.READY, ModelDeployment.State.DEGRADED)
MAX_MESSAGES = 50
MAX_CHARS = 32_000


def playground_models(request: HttpRequest, organization_id: int) -> list[str]:
    """Served model names the organisation may call now: its own serving deployments and platform ones shared with
    it, as far as the user may see them (one query)."""
    visible = ModelDeployment.objects.restrict(page_principal(request))
    mine_or_shared = visible.filter(state__in=SERVING).filter(organization_id=organization_id) | visible.filter(
        state__in=SERVING, organization__isnull=True, shared_with=organization_id
    )
    return sorted(set(mine_or_shared.values_list("served_model_name", flat=True)))


def _organizations_serving(request: HttpRequest, organizations: list[Organization]) -> set[int]:
    """Which of `organizations` have a model serving now that the user may see: their own or a platform one shared
    with them (one query)."""
    ids = [o.pk for o in organizations]
    visible = ModelDeployment.objects.restrict(page_principal(request)).filter(state__in=SERVING)
    own = visible.filter(organization_id__in=ids).order_by().values_list("organization_id", flat=True)
    shared = (
        visible.filter(organization__isnull=True, shared_with__in=ids).order_by().values_list("shared_with", flat=True)
    )
    return set(own.union(shared))


def _organization_to_open(request: HttpRequest, scope: OrgScope) -> Organization | None:
    """Where the page should open instead of the scope's organisation, or None to stay. A choice the user made (by
    `?org=` or the top bar's switcher, kept in the session) stays, even with nothing deployed. Without one, an owner
    of several organisations should not land on an empty one: the first where a model is serving, if any."""
    if scope.organization is None or request.GET.get("org") or request.session.get(SESSION_KEY) == scope.slug:
        return None
    serving = _organizations_serving(request, scope.choices)
    if scope.organization.pk in serving:
        return None
    return next((o for o in scope.choices if o.pk in serving), None)


@login_required
@require_GET
def playground_view(request: HttpRequest) -> HttpResponse:
    scope = org_scope_get(request, model=ApiKey, action="view")
    better = _organization_to_open(request, scope)
    if better is not None:  # through ?org=, so that the top bar follows the page
        query = {
            "org": better.slug,
            **{name: request.GET[name] for name in ("model", "template") if request.GET.get(name)},
        }
        return redirect(f"{request.path}?{urlencode(query)}")
    organization = scope.organization
    context: dict[str, Any] = {"scope": scope, "organization": organization, "models": [], "templates": []}
    if organization is None:
        # A member whose role shows no key still belongs somewhere: say that, never "not a member".
        context["member_of"] = list(
            Organization.objects.filter(memberships__user_id=request.user.pk)
            .order_by("name")
            .values_list("name", flat=True)
        )
        return render(request, "console/playground/index.html", context)
    org_id = organization.pk
    context["models"] = playground_models(request, org_id)
    wanted = request.GET.get("model", "")
    context["selected_model"] = wanted if wanted in context["models"] else ""
    templates = PromptTemplate.objects.restrict(page_principal(request))
    context["templates"] = list(
        templates.filter(organization_id=org_id, latest_version__gt=0)
        .order_by("name")
        .values("pk", "name", "latest_version")
    )
    context.update(_template_chosen(request, context["templates"]))
    context["can_send"] = page_organizations_allowing(request, "add", ApiKey).filter(pk=org_id).exists()
    context["v1_url"] = request.build_absolute_uri(CHAT_PATH)  # for "Copy as curl"
    # For the WebSocket example: the same host, as ws:// or wss://.
    context["socket_url"] = "ws" + request.build_absolute_uri(CHAT_SOCKET_PATH).removeprefix("http")
    context["socket_model"] = context["selected_model"] or next(iter(context["models"]), "demo-chat")
    return render(request, "console/playground/index.html", context)


def _template_chosen(request: HttpRequest, templates: list[dict[str, Any]]) -> dict[str, Any]:
    """`?template=name` (as the template pages link here): that template preselected, and its variables prefilled
    with their defaults (empty for the required ones). A name the user cannot see is ignored."""
    wanted = request.GET.get("template", "").strip()
    chosen = next((t for t in templates if t["name"] == wanted), None)
    if chosen is None:
        return {"template_selected": "", "template_variables": ""}
    version = PromptTemplateVersion.objects.filter(template_id=chosen["pk"], version=chosen["latest_version"]).first()
    variables = version.variables if version is not None else []
    values = {variable["name"]: variable.get("default", "") for variable in variables}
    return {
        "template_selected": f"{chosen['name']}@latest",
        "template_variables": json.dumps(values, indent=1, ensure_ascii=False) if values else "",
    }


class PlaygroundRefused(Exception):
    """A chat request the console refuses before it reaches the gateway (HTTP status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _chat_prepare(request: HttpRequest) -> tuple[str, bytes]:
    """Check the request (who, which organisation, which model) and return the playground key's secret and the
    `/v1` body. Sync: it reads the session and may issue a key."""
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        raise PlaygroundRefused(400, "The request is not valid JSON.") from None
    if not isinstance(data, dict):
        raise PlaygroundRefused(400, "The request must be a JSON object.")
    organization = page_organizations_allowing(request, "add", ApiKey).filter(slug=str(data.get("org", ""))).first()
    if organization is None:
        raise PlaygroundRefused(403, "Your role in this organisation cannot run the playground.")
    model = str(data.get("model", ""))
    if model not in playground_models(request, organization.pk):
        raise PlaygroundRefused(400, "Choose a model that is serving in this organisation.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        raise PlaygroundRefused(400, "Send between 1 and 50 messages.")
    chat = [
        {"role": str(m.get("role")), "content": str(m.get("content", ""))[:MAX_CHARS]}
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("user", "assistant", "system")
    ]
    template = str(data.get("template") or "")
    if template:
        try:
            rendered = template_render(organization_id=organization.pk, ref=template, variables=data.get("variables"))
        except PolicyDenied as error:
            raise PlaygroundRefused(400, f"Template: {error}") from None
        chat = [*rendered.messages, *chat]
    max_tokens = data.get("max_tokens")
    temperature = data.get("temperature")
    body = playground_body(
        model=model,
        messages=chat,
        max_tokens=int(max_tokens) if isinstance(max_tokens, int) and 0 < max_tokens <= 32_768 else None,
        temperature=float(temperature) if isinstance(temperature, int | float) and 0 <= temperature <= 2 else None,
    )
    secret = playground_key_secret(session=request.session, user=request.user, organization=organization)
    request.session.save()  # the secret must be stored before the stream starts (the response saves late)
    return secret, body


@require_POST
async def playground_chat_view(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse({"error": {"message": "Sign in first."}}, status=401)
    try:
        secret, body = await sync_to_async(_chat_prepare)(request)
    except PlaygroundRefused as refused:
        return JsonResponse({"error": {"message": str(refused)}}, status=refused.status)
    response = StreamingHttpResponse(playground_chat_stream(secret=secret, body=body), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@login_required
@require_GET
def playground_request_view(request: HttpRequest, request_id: str) -> JsonResponse:
    """What one playground request used, once the usage worker has recorded it (404 until then, or if it is not one
    the user may see)."""
    records = UsageRecord.objects.restrict(page_principal(request))
    record = records.filter(request_id=request_id).first()
    if record is None:
        return JsonResponse({"recorded": False}, status=404)
    return JsonResponse(
        {
            "recorded": True,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "cost_micros": record.cost_micros,
            "cost": money_format(record.cost_micros),  # in the currency, every digit: requests cost fractions of a cent
            "latency_ms": record.latency_ms,
            "ttft_ms": record.ttft_ms,
            "outcome": record.outcome,
            "guardrails": record.guardrails,
        }
    )
