"""The tamper-evident audit log and the usage records that feed accounting and dashboards."""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.utils import timezone

# Audit and usage rows outlive what they describe: their references are kept as plain ids
# (no database constraint, nothing cascades), so deleting a key or a user never rewrites history.
_HISTORY_FK: dict[str, Any] = {"on_delete": models.DO_NOTHING, "db_constraint": False, "null": True, "blank": True}
# The derived rollups are read by organisation and time only, through their own indexes: an index per reference
# would cost every upsert and, worse, tempt the planner into walking a month of rows in key order.
_ROLLUP_FK: dict[str, Any] = {**_HISTORY_FK, "db_index": False}


class AuditAppendOnlyError(Exception):
    """Raised when code tries to change or delete history through the ORM (the database refuses it too)."""


class AppendOnlyQuerySet(models.QuerySet):
    """A queryset that can read and insert, never update or delete: the ORM half of append-only history."""

    def update(self, **kwargs: Any) -> NoReturn:
        raise AuditAppendOnlyError(f"{self.model._meta.label} is append-only: update refused")

    def delete(self) -> NoReturn:
        raise AuditAppendOnlyError(f"{self.model._meta.label} is append-only: delete refused")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> NoReturn:
        raise AuditAppendOnlyError(f"{self.model._meta.label} is append-only: bulk update refused")

    _raw_delete = delete  # type: ignore[assignment]  # what Django's deletion collector calls for fast deletes


class AppendOnlyModel(models.Model):
    """Rows that are written once: saving an existing row or deleting one raises. A PostgreSQL trigger
    (migration audit 0004) refuses UPDATE, DELETE and TRUNCATE underneath, for code that bypasses the ORM."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditAppendOnlyError(f"{self._meta.label} #{self.pk} is append-only: save of an existing row refused")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditAppendOnlyError(f"{self._meta.label} #{self.pk} is append-only: delete refused")


class AuditEvent(AppendOnlyModel):
    """One management change, login or key event. Append-only and chained: `seq` is gapless, and each
    event's `hash` covers its content and the previous event's hash."""

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"
        DENIED = "denied", "Denied"

    seq = models.BigIntegerField(unique=True, editable=False)
    occurred_at = models.DateTimeField(default=timezone.now, editable=False)
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_HISTORY_FK)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, related_name="+", **_HISTORY_FK)
    actor_key = models.ForeignKey("keys.ApiKey", related_name="+", **_HISTORY_FK)
    actor_label = models.CharField(max_length=300, help_text="Who, as they were named then (or 'system').")
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=300, blank=True)
    changes = models.JSONField(default=dict, blank=True, help_text="Before/after of changed fields; secrets masked.")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["organization", "-occurred_at"]),
            models.Index(fields=["action", "-occurred_at"]),
            models.Index(fields=["target_type", "target_id"]),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor_label}"


class AuditChainHead(models.Model):
    """The single row that serialises appends to the audit chain: it holds the last sequence number and hash,
    and is locked for the length of each append so that sequence numbers have no gaps."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_chain_head_singleton")]

    def __str__(self) -> str:
        return f"audit chain at #{self.seq}"


class AuditCheckpoint(AppendOnlyModel):
    """A copy of the chain head (sequence number and hash) taken periodically by beat and on demand, kept out of
    the event table and exportable, so that deleting the newest events (and rewinding the head) is detected."""

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    seq = models.BigIntegerField(editable=False)
    hash = models.CharField(max_length=64, editable=False)
    taken_by = models.CharField(max_length=300, help_text="'beat', 'system' or the user who asked for it.")

    class Meta:
        ordering = ["-seq", "-id"]
        indexes = [models.Index(fields=["-seq"], name="audit_checkpoint_seq_idx")]

    def __str__(self) -> str:
        return f"checkpoint at #{self.seq}"


class UsageRecord(models.Model):
    """One request through `/v1`: tokens, cost, latency and outcome. Written in batches by a worker from the
    usage stream, idempotently on `request_id`."""

    class Outcome(models.TextChoices):
        OK = "ok", "Completed"
        ERROR = "error", "Error"
        CANCELLED = "cancelled", "Client disconnected"
        DENIED = "denied", "Denied by policy"

    # The gateway makes every request's id; a caller's own id (`X-Request-ID` / `X-Client-Request-Id`) is kept
    # apart, so that no client can collide with another request's record, slot or reservation.
    request_id = models.CharField(max_length=64, unique=True)
    client_request_id = models.CharField(max_length=128, blank=True, default="", db_default="")
    started_at = models.DateTimeField()
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_HISTORY_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **_HISTORY_FK)
    api_key = models.ForeignKey("keys.ApiKey", related_name="+", **_HISTORY_FK)
    deployment = models.ForeignKey("compute.ModelDeployment", related_name="+", **_HISTORY_FK)
    replica = models.ForeignKey("compute.Replica", related_name="+", **_HISTORY_FK)
    endpoint = models.CharField(max_length=32, help_text="chat.completions, completions, embeddings, ...")
    model = models.CharField(max_length=200)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)
    ttft_ms = models.FloatField(null=True, blank=True)
    latency_ms = models.FloatField(default=0)
    status_code = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error_code = models.CharField(max_length=64, blank=True)
    estimated = models.BooleanField(default=False, help_text="Tokens counted from the stream, not the engine.")
    streamed = models.BooleanField(default=False)
    guardrails = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["organization", "-started_at"]),
            models.Index(fields=["api_key", "-started_at"]),
            models.Index(fields=["model", "-started_at"]),
            models.Index(
                fields=["organization", "client_request_id"],
                condition=~models.Q(client_request_id=""),
                name="audit_usage_client_request_id",
            ),
            # The few requests where a guardrail fired, for the dashboard's "guardrails fired" over a range.
            # `guardrails` is carried in the index, so that read never visits the table's pages.
            models.Index(
                fields=["organization", "-started_at"],
                include=["guardrails"],
                condition=~models.Q(guardrails=[]),
                name="audit_usage_guardrails_cover",
            ),
        ]

    def __str__(self) -> str:
        return self.request_id


class UsageTotals(models.Model):
    """The counters each usage rollup keeps for its bucket."""

    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class UsageTimedTotals(UsageTotals):
    """Counters with the sums of latencies, for averages over any set of buckets."""

    latency_ms_total = models.FloatField(default=0)
    ttft_ms_total = models.FloatField(default=0)

    class Meta:
        abstract = True


class UsageRollup(UsageTimedTotals):
    """Hourly totals of usage per organisation, team, key and model: what dashboards and cost reports read, so
    that they never scan raw usage rows (which are pruned after INFERIA_USAGE_RETENTION_DAYS). Maintained by the
    usage worker in the same transaction that inserts the raw rows."""

    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_HISTORY_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **_HISTORY_FK)
    api_key = models.ForeignKey("keys.ApiKey", related_name="+", **_HISTORY_FK)
    model = models.CharField(max_length=200)

    class Meta:
        ordering = ["-hour"]
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "organization", "team", "api_key", "model"],
                nulls_distinct=False,
                name="audit_usage_rollup_unique",
            )
        ]
        # Covering: the busiest keys of the hours around whole days (the dashboard) read the index alone.
        indexes = [
            models.Index(
                fields=["organization", "hour"],
                include=["api_key", "requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros"],
                name="audit_usage_rollup_org_hour",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} @ {self.hour:%Y-%m-%d %H}:00"


class UsageModelRollup(UsageTimedTotals):
    """Hourly totals of usage per organisation, team and model, without the key: the usage over time, busiest models
    and busiest teams of the dashboard read these (a few rows per hour) instead of the per-key rollups (one row per
    key and model). Kept by the usage worker in the same transaction as UsageRollup; visible to whoever may view
    UsageRollup rows of the same organisation and team."""

    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_ROLLUP_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **_ROLLUP_FK)
    model = models.CharField(max_length=200)

    class Meta:
        ordering = ["-hour"]
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "organization", "team", "model"],
                nulls_distinct=False,
                name="audit_usage_model_rollup_unique",
            )
        ]
        indexes = [models.Index(fields=["organization", "hour"], name="audit_usage_model_rollup_org")]

    def __str__(self) -> str:
        return f"{self.model} @ {self.hour:%Y-%m-%d %H}:00"


class UsageKeyRollup(UsageTotals):
    """Daily totals of usage per organisation, team and API key, without the model: the dashboard's busiest keys over
    days read these (one row per key and day) instead of the hourly per-key, per-model rollups. Kept by the usage
    worker in the same transaction as UsageRollup; visible to whoever may view UsageRollup rows of the same
    organisation and team."""

    day = models.DateTimeField(help_text="Start of the day (UTC).")
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_ROLLUP_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **_ROLLUP_FK)
    api_key = models.ForeignKey("keys.ApiKey", related_name="+", **_ROLLUP_FK)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "organization", "team", "api_key"],
                nulls_distinct=False,
                name="audit_usage_key_rollup_unique",
            )
        ]
        # Covering: ranking the keys of a month reads the index alone.
        indexes = [
            models.Index(
                fields=["organization", "day"],
                include=["api_key", "team", "requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros"],
                name="audit_usage_key_rollup_org",
            )
        ]

    def __str__(self) -> str:
        return f"key {self.api_key_id} @ {self.day:%Y-%m-%d}"
