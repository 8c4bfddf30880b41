"""The audit log viewer: the user's organisations' events filtered by actor, action, object and date range, in
keyset pages over the indexed (organisation, time) ordering, each naming its object and actor as they are now (with
links) and its changes as rows (`apps.console.audit_display`: a few queries per page, never one per event); and
exported as CSV or JSON Lines (streamed, through `apps.audit.selectors`, hashes included so a copy can be verified
later)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.audit.exports import CSV_CONTENT_TYPE, export_response
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_event_filter, audit_events_csv, audit_events_jsonl
from apps.console.audit_display import audit_events_shown
from apps.console.pages.support import (
    keyset_page,
    organization_current_slug,
    organization_filter,
    organizations_visible,
    page_principal,
    query_without,
)


class AuditFilterForm(forms.Form):
    actor = forms.CharField(label="Actor", required=False, max_length=300)
    action = forms.CharField(label="Action (prefix)", required=False, max_length=100)
    target_type = forms.CharField(label="Object type", required=False, max_length=100)
    target_id = forms.CharField(label="Object id", required=False, max_length=64)
    since = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="To (inclusive)", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    outcome = forms.ChoiceField(label="Outcome", required=False, choices=[("", "Any"), *AuditEvent.Outcome.choices])


def _day_start(day: Any) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def audit_filtered(request: HttpRequest, form: AuditFilterForm) -> QuerySet[AuditEvent]:
    """The events the user may see, narrowed by the form (an invalid form shows nothing rather than everything)."""
    events = AuditEvent.objects.restrict(page_principal(request))
    events, _ = organization_filter(request, events)
    if not form.is_valid():
        return events.none()
    values = form.cleaned_data
    events = audit_event_filter(
        events=events,
        actor=values["actor"].strip(),
        action=values["action"].strip(),
        target_type=values["target_type"].strip(),
        target_id=values["target_id"].strip(),
        since=_day_start(values["since"]) if values["since"] else None,
        until=_day_start(values["until"]) + timedelta(days=1) if values["until"] else None,
    )
    if values["outcome"]:
        events = events.filter(outcome=values["outcome"])
    return events


@never_cache
@login_required
@require_GET
def audit_view(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    events = audit_filtered(request, form).only(
        "seq",
        "occurred_at",
        "actor_label",
        "actor_user_id",  # named and linked for the whole page at once: never a deferred load per row
        "actor_key_id",
        "action",
        "target_type",
        "target_id",
        "target_repr",
        "changes",
        "ip_address",
        "outcome",
        "organization_id",
    )
    page = keyset_page(events, request=request, fields=("occurred_at", "seq"))
    query = query_without(request, "older", "newer")
    others = query_without(request, "older", "newer", "actor")
    organizations = organizations_visible(request)
    context = {
        "form": form,
        "page": page,
        "rows": audit_events_shown(
            page.rows,
            principal=page_principal(request),
            organizations=organizations,
            filter_url=f"{reverse('console:audit')}?{others}{'&' if others else ''}",
        ),
        "query": query,
        "orgs": organizations,
        "org": organization_current_slug(request),
    }
    return render(request, "console/audit/log.html", context)


@login_required
@require_GET
def audit_export_view(request: HttpRequest, fmt: str) -> StreamingHttpResponse:
    """The filtered events, oldest first, as CSV or JSON Lines, streamed (asynchronously under ASGI)."""
    if fmt not in ("csv", "jsonl"):
        raise Http404
    events = audit_filtered(request, AuditFilterForm(request.GET))
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if fmt == "csv":
        chunks, content_type = audit_events_csv(events=events), CSV_CONTENT_TYPE
    else:
        chunks, content_type = audit_events_jsonl(events=events), "application/jsonl"
    return export_response(request, chunks, content_type=content_type, filename=f"audit-{stamp}.{fmt}")
