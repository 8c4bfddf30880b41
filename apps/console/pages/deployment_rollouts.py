"""The deployment page's rollout controls: roll the replicas over to a new model, engine arguments or image, and
pause, resume or roll back the rolling update (apps/compute/rollout.py); each a POST that calls the same service as
the REST API and the CLI, then back to the deployment page, which shows the rollout's progress."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from apps.compute import inventory_services, rollout
from apps.compute.engine import IMAGE_MAX_LENGTH
from apps.compute.models import ModelDeployment
from apps.console.pages.deployments import deployment_changeable
from apps.console.pages.support import form_errors_tell, page_audit_context, page_principal, service_announce

ROLLOUT_ACTIONS = {
    "pause": (rollout.deployment_rollout_pause, "Rollout paused."),
    "resume": (rollout.deployment_rollout_resume, "Rollout resumed."),
    "rollback": (rollout.deployment_rollout_rollback, "Rolling back to the previous spec."),
}
ENGINE_ARGS_MAX_CHARS = 10_000


class RolloutForm(forms.Form):
    """A new spec for the replicas: any of the model, the image (pinned by tag or digest; the service checks it) and
    the engine arguments (a JSON object); what the form leaves empty stays as it is."""

    model_id = forms.CharField(label="Model", max_length=300, required=False)
    image = forms.CharField(label="Image", max_length=IMAGE_MAX_LENGTH, required=False)
    engine_args = forms.CharField(label="Engine arguments (JSON)", max_length=ENGINE_ARGS_MAX_CHARS, required=False)

    def clean_engine_args(self) -> Any:
        text = self.cleaned_data.get("engine_args") or ""
        if not text.strip():
            return None
        try:
            value = json.loads(text)
        except ValueError as error:
            raise forms.ValidationError(f"not JSON: {error}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value

    def changes(self, deployment: ModelDeployment) -> dict[str, Any]:
        wanted = {name: value for name, value in self.cleaned_data.items() if value not in (None, "")}
        return {name: value for name, value in wanted.items() if getattr(deployment, name) != value}


@login_required
@require_POST
def deployment_rollout_start_view(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = deployment_changeable(request, pk)
    form = RolloutForm(request.POST)
    if not form.is_valid():
        form_errors_tell(request, form)
        return redirect("console:deployment-detail", pk=pk)
    changes = form.changes(deployment)
    if not changes:
        messages.info(request, "Nothing changed.")
        return redirect("console:deployment-detail", pk=pk)
    service_announce(
        request,
        inventory_services.deployment_update,
        success="Rolling the replicas over to the new spec.",
        deployment=deployment,
        changes=changes,
        actor=page_principal(request).actor,
        context=page_audit_context(request),
    )
    return redirect("console:deployment-detail", pk=pk)


@login_required
@require_POST
def deployment_rollout_view(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    if action not in ROLLOUT_ACTIONS:
        raise Http404("no such rollout action")
    deployment = deployment_changeable(request, pk)
    service, success = ROLLOUT_ACTIONS[action]
    service_announce(
        request,
        service,
        success=success,
        deployment=deployment,
        actor=page_principal(request).actor,
        reason=f"{action} from the console",
        context=page_audit_context(request),
    )
    return redirect("console:deployment-detail", pk=pk)
