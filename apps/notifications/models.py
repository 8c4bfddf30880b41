"""Notification channels (where an organisation wants to hear about events) and the deliveries made to them."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from inferia_runtime.tenancy import TenantManager, TenantPath


class EventKind(models.TextChoices):
    """What a channel can subscribe to."""

    BUDGET_80 = "budget.80", "Budget 80% spent"
    BUDGET_100 = "budget.100", "Budget spent"
    DEPLOYMENT_FAILED = "deployment.failed", "Deployment failed"
    REPLICA_UNHEALTHY = "replica.unhealthy", "Replica unhealthy for too long"
    ROLLOUT_FAILED = "rollout.failed", "Rollout failed"
    KEY_EXPIRING = "key.expiring", "API key about to expire"
    TEST = "test", "Test message"


class Channel(models.Model):
    """Where an organisation's notifications go: a signed JSON webhook, e-mail, or a Slack-compatible incoming
    webhook. A webhook's signing secret is stored encrypted (like provider credentials) and shown once."""

    tenant_path = TenantPath(org="organization_id", grant_via="pk")

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (signed JSON)"
        EMAIL = "email", "E-mail"
        SLACK = "slack", "Slack-compatible incoming webhook"

    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="channels")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    url = models.URLField(max_length=2000, blank=True, help_text="Webhook and Slack channels: where to POST.")
    recipients = ArrayField(models.EmailField(), default=list, blank=True, size=20)
    events = ArrayField(models.CharField(max_length=32, choices=EventKind.choices), default=list, blank=True)
    enabled = models.BooleanField(default=True)
    secret_encrypted = models.TextField(blank=True, editable=False, help_text="MultiFernet token.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                name="notifications_channel_name",
                violation_error_message="This organisation already has a channel with this name.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class Delivery(models.Model):
    """One event sent (or being sent) to one channel: what, how it went, how many attempts. `event_key` names the
    occurrence, so one occurrence reaches a channel once however often it is announced."""

    tenant_path = TenantPath(org="organization_id", grant_via="channel_id")

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="+")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    event_kind = models.CharField(max_length=32, choices=EventKind.choices)
    event_key = models.CharField(max_length=200)
    summary = models.CharField(max_length=500)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["organization", "-created_at"])]
        constraints = [
            models.UniqueConstraint(fields=["channel", "event_key"], name="notifications_delivery_once"),
        ]

    def __str__(self) -> str:
        return f"{self.event_kind} to {self.channel_id} ({self.status})"
