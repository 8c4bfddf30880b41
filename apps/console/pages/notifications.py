"""The notifications pages: an organisation's channels (signed webhooks, e-mail, Slack-compatible webhooks) listed,
created, edited, test-sent and deleted through `apps.notifications.services` (checked and audited), and the
deliveries made to them.

A webhook's signing secret is shown once, on the page that answers its creation, and never again: the edit page says
only that one is stored. Pages work in the console's one organisation (the top bar's choice); whoever may only view
sees the lists and forms without buttons, and the server answers a forged POST with 403 (404 when the row is not
visible to them at all)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.console.pages.support import (
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    require_may_add,
    service_announce,
    service_run,
    tenant_object,
)
from apps.console.scope import OrgScope, org_scope_get
from apps.notifications import services
from apps.notifications.models import Channel, Delivery, EventKind

DELIVERIES_SHOWN = 100
EVENT_CHOICES = [(kind, label) for kind, label in EventKind.choices if kind in services.SUBSCRIBABLE]


def notification_tabs(current: str) -> list[dict[str, Any]]:
    return [
        {"url": reverse(name), "label": label, "current": name == current}
        for name, label in (
            ("console:notification-channels", "Channels"),
            ("console:notification-deliveries", "Deliveries"),
        )
    ]


class ChannelForm(forms.Form):
    """A channel: name, kind (fixed once created), where to (a URL, or e-mail recipients one per line), which
    events, and whether it is on."""

    name = forms.CharField(label="Name", max_length=200)
    kind = forms.ChoiceField(label="Kind", choices=Channel.Kind.choices, required=False)
    url = forms.CharField(label="URL", max_length=2000, required=False)
    recipients = forms.CharField(label="Recipients", max_length=6000, required=False, widget=forms.Textarea)
    events = forms.MultipleChoiceField(label="Events", choices=EVENT_CHOICES, required=False)
    enabled = forms.BooleanField(label="Enabled", required=False)

    def clean_recipients(self) -> list[str]:
        text = self.cleaned_data.get("recipients") or ""
        return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def _scope(request: HttpRequest) -> OrgScope:
    return org_scope_get(request, model=Channel, action="view")


def _may(request: HttpRequest, channel: Channel, action: str) -> bool:
    return Channel.objects.filter(pk=channel.pk).restrict(page_principal(request), action).exists()


def _may_add(request: HttpRequest, scope: OrgScope) -> bool:
    organization = scope.organization
    allowed = page_organizations_allowing(request, "add", Channel)
    return organization is not None and allowed.filter(pk=organization.pk).exists()


@never_cache
@login_required
@require_GET
def channels_view(request: HttpRequest) -> HttpResponse:
    scope = _scope(request)
    channels = Channel.objects.restrict(page_principal(request))
    rows = channels.filter(organization=scope.organization) if scope.organization else channels.none()
    context = {
        "tabs": notification_tabs("console:notification-channels"),
        "scope": scope,
        "rows": list(rows.order_by("name")),
        "may_add": _may_add(request, scope),
    }
    return render(request, "console/notifications/channels.html", context)


def _channel_page(request: HttpRequest, **values: Any) -> HttpResponse:
    form: ChannelForm = values["form"]
    context = {
        "tabs": notification_tabs("console:notification-channels"),
        "event_choices": EVENT_CHOICES,
        "kind_choices": Channel.Kind.choices,
        "may_change": True,
        "may_delete": False,
        "channel": None,
        "chosen_events": form["events"].value() or [],
        **values,
    }
    return render(request, "console/notifications/channel_edit.html", context, status=400 if form.errors else 200)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def channel_create_view(request: HttpRequest) -> HttpResponse:
    scope = _scope(request)
    if request.method == "POST":
        organization = require_may_add(request, Channel, request.POST.get("organization", ""))
        form = ChannelForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            created, error = service_run(
                services.channel_create,
                organization=organization,
                name=data["name"],
                kind=data["kind"] or Channel.Kind.WEBHOOK,
                url=data["url"],
                recipients=data["recipients"],
                events=data["events"],
                enabled=data["enabled"],
                actor=page_principal(request).actor,
                context=page_audit_context(request),
            )
            if not error:
                if created.secret:
                    # The one time the secret is told: rendered here, never redirected through the session.
                    return render(
                        request,
                        "console/notifications/channel_secret.html",
                        {"channel": created.channel, "secret": created.secret},
                    )
                messages.success(request, f"Channel {created.channel.name} created.")
                return redirect("console:notification-channel-edit", pk=created.channel.pk)
            form.add_error(None, error)
        owner = request.POST.get("organization", "")
    else:
        if not _may_add(request, scope):
            return redirect("console:notification-channels")
        form = ChannelForm(initial={"kind": Channel.Kind.WEBHOOK, "enabled": True})
        owner = str(scope.organization_id or "")
    return _channel_page(request, form=form, scope=scope, owner=owner)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def channel_edit_view(request: HttpRequest, pk: int) -> HttpResponse:
    action = "change" if request.method == "POST" else "view"
    channel = tenant_object(Channel.objects.all(), request=request, pk=pk, action=action)
    may_change = _may(request, channel, "change")
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("You may not change this channel.")
        form = ChannelForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            wanted: dict[str, Any] = {"name": data["name"], "events": data["events"], "enabled": data["enabled"]}
            if channel.kind == Channel.Kind.EMAIL:
                wanted["recipients"] = data["recipients"]
            else:
                wanted["url"] = data["url"]
            changes = {name: value for name, value in wanted.items() if getattr(channel, name) != value}
            if not changes:
                messages.info(request, "Nothing changed.")
                return redirect("console:notification-channel-edit", pk=channel.pk)
            _, error = service_run(
                services.channel_update,
                channel=channel,
                changes=changes,
                actor=page_principal(request).actor,
                context=page_audit_context(request),
            )
            if not error:
                messages.success(request, "Channel saved.")
                return redirect("console:notification-channel-edit", pk=channel.pk)
            form.add_error(None, error)
    else:
        form = ChannelForm(
            initial={
                "name": channel.name,
                "kind": channel.kind,
                "url": channel.url,
                "recipients": "\n".join(channel.recipients),
                "events": channel.events,
                "enabled": channel.enabled,
            }
        )
    deliveries = Delivery.objects.filter(channel=channel).order_by("-created_at", "-id")[:20]
    return _channel_page(
        request,
        form=form,
        channel=channel,
        may_change=may_change,
        may_delete=_may(request, channel, "delete"),
        deliveries=list(deliveries),
    )


@login_required
@require_POST
def channel_test_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a test message; a worker sends it and its delivery says how it went."""
    channel = tenant_object(Channel.objects.all(), request=request, pk=pk, action="change")
    service_announce(
        request,
        services.channel_test_send,
        success="Test message queued: its delivery below shows how it went.",
        channel=channel,
        actor=page_principal(request).actor,
        context=page_audit_context(request),
    )
    return redirect("console:notification-channel-edit", pk=channel.pk)


@login_required
@require_POST
def channel_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    channel = tenant_object(Channel.objects.all(), request=request, pk=pk, action="delete")
    name = channel.name
    if service_announce(
        request,
        services.channel_delete,
        success=f"Channel {name} deleted.",
        channel=channel,
        actor=page_principal(request).actor,
        context=page_audit_context(request),
    ):
        return redirect("console:notification-channels")
    return redirect("console:notification-channel-edit", pk=pk)


@never_cache
@login_required
@require_GET
def deliveries_view(request: HttpRequest) -> HttpResponse:
    scope = org_scope_get(request, model=Delivery, action="view")
    deliveries = Delivery.objects.restrict(page_principal(request)).select_related("channel")
    rows = deliveries.filter(organization=scope.organization) if scope.organization else deliveries.none()
    status = request.GET.get("status", "")
    if status in Delivery.Status.values:
        rows = rows.filter(status=status)
    context = {
        "tabs": notification_tabs("console:notification-deliveries"),
        "scope": scope,
        "rows": list(rows.order_by("-created_at", "-id")[:DELIVERIES_SHOWN]),
        "status": status,
        "statuses": Delivery.Status.choices,
        "shown": DELIVERIES_SHOWN,
    }
    return render(request, "console/notifications/deliveries.html", context)
