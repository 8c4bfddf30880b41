"""Usage records and rollups: one row per `/v1` request, and the totals per hour and day that dashboards, reports
and cost attribution read.

The tables keep the names they had when these models lived in the audit app (`audit_usage...`): moving the models
changed no table, index or constraint (see migration usage 0001)."""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.db import models

from inferia_runtime.tenancy import TenantManager, TenantPath

# Usage rows outlive what they describe: their references are kept as plain ids
# (no database constraint, nothing cascades), so deleting a key or a user never rewrites history.
_HISTORY_FK: dict[str, Any] = {"on_delete": models.DO_NOTHING, "db_constraint": False, "null": True, "blank": True}
# The derived rollups are read by organisation and time only, through their own indexes: an index per reference
# would cost every upsert and, worse, tempt the planner into walking a month of rows in key order.
_ROLLUP_FK: dict[str, Any] = {**_HISTORY_FK, "db_index": False}


class UsageRecord(models.Model):
    """One request through `/v1`: tokens, cost, latency and outcome. Written in batches by a worker from the
    usage stream, idempotently on `request_id`."""

    tenant_path = TenantPath(org="organization_id", team="team_id")

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
    # What the client was told when the request failed (bounded by the gateway, cleaned by the worker).
    error_message = models.CharField(max_length=500, blank=True, default="", db_default="")
    estimated = models.BooleanField(default=False, help_text="Tokens counted from the stream, not the engine.")
    streamed = models.BooleanField(default=False)
    guardrails = models.JSONField(default=list, blank=True)

    objects = TenantManager()

    class Meta:
        db_table = "audit_usagerecord"
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


class RequestCapture(models.Model):
    """The prompt and the answer of one request, for an organisation that opted in to capture (off by default).
    Masked with the organisation's guardrail redactions (personal data at least) before it is written, by the usage
    worker only; deleted once `expires_at` (the organisation's retention) has passed, or with its usage record."""

    tenant_path = TenantPath(org="organization_id", team="team_id")

    usage_record = models.OneToOneField(UsageRecord, on_delete=models.CASCADE, primary_key=True, related_name="capture")
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_HISTORY_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **{**_HISTORY_FK, "db_index": False})
    prompt = models.TextField(blank=True)
    answer = models.TextField(blank=True)
    expires_at = models.DateTimeField(db_index=True)

    objects = TenantManager()

    def __str__(self) -> str:
        return f"capture of {self.usage_record_id}"


class UsageTotals(models.Model):
    """The counters each usage rollup keeps for its bucket."""

    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


def _histogram_field(what: str) -> ArrayField:  # type: ignore[type-arg]
    # Rows written before the histograms existed hold an empty array: it merges as zeros (apps/usage/histograms.py).
    # int4 elements: an hour's count per bucket fits, and PostgreSQL sums int4 several times faster than int8.
    return ArrayField(
        models.IntegerField(),
        default=list,
        db_default=models.Value([], output_field=ArrayField(models.IntegerField())),
        blank=True,
        help_text=f"Completed requests per {what} bucket (apps.usage.histograms.BOUNDS_MS).",
    )


class UsageTimedTotals(UsageTotals):
    """Counters with the sums of latencies, for averages over any set of buckets; client (4xx) and server or upstream
    (5xx) failures apart; and the histograms of time to first token and end-to-end latency of completed requests,
    for percentiles over any set of buckets."""

    latency_ms_total = models.FloatField(default=0)
    ttft_ms_total = models.FloatField(default=0)
    client_errors = models.BigIntegerField(default=0, db_default=0, help_text="Requests answered 4xx.")
    server_errors = models.BigIntegerField(default=0, db_default=0, help_text="Requests answered 5xx.")
    ttft_histogram = _histogram_field("time to first token")
    latency_histogram = _histogram_field("end-to-end latency")

    class Meta:
        abstract = True


class UsageRollup(UsageTimedTotals):
    """Hourly totals of usage per organisation, team, key and model: what dashboards and cost reports read, so
    that they never scan raw usage rows (which are pruned after INFERIA_USAGE_RETENTION_DAYS). Maintained by the
    usage worker in the same transaction that inserts the raw rows."""

    tenant_path = TenantPath(org="organization_id", team="team_id")

    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_HISTORY_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **_HISTORY_FK)
    api_key = models.ForeignKey("keys.ApiKey", related_name="+", **_HISTORY_FK)
    model = models.CharField(max_length=200)

    objects = TenantManager()

    class Meta:
        db_table = "audit_usagerollup"
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

    tenant_path = TenantPath(org="organization_id", team="team_id")

    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_ROLLUP_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **_ROLLUP_FK)
    model = models.CharField(max_length=200)

    objects = TenantManager()

    class Meta:
        db_table = "audit_usagemodelrollup"
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


class UsageModelDayRollup(UsageTimedTotals):
    """Daily totals of usage per organisation, team and model, with the latency histograms: the dashboard's latency
    over a month reads these (a few rows per day) instead of the per-model hourly rollups. Kept by the usage worker in
    the same transaction as UsageRollup (and rebuilt from it); visible to whoever may view UsageRollup rows of the
    same organisation and team."""

    tenant_path = TenantPath(org="organization_id", team="team_id")

    day = models.DateTimeField(help_text="Start of the day (UTC).")
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_ROLLUP_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **_ROLLUP_FK)
    model = models.CharField(max_length=200)

    objects = TenantManager()

    class Meta:
        db_table = "usage_modeldayrollup"
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "organization", "team", "model"],
                nulls_distinct=False,
                name="usage_model_day_rollup_unique",
            )
        ]
        indexes = [models.Index(fields=["organization", "day"], name="usage_model_day_rollup_org")]

    def __str__(self) -> str:
        return f"{self.model} @ {self.day:%Y-%m-%d}"


class UsageKeyRollup(UsageTotals):
    """Daily totals of usage per organisation, team and API key, without the model: the dashboard's busiest keys over
    days read these (one row per key and day) instead of the hourly per-key, per-model rollups. Kept by the usage
    worker in the same transaction as UsageRollup; visible to whoever may view UsageRollup rows of the same
    organisation and team."""

    tenant_path = TenantPath(org="organization_id", team="team_id")

    day = models.DateTimeField(help_text="Start of the day (UTC).")
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_ROLLUP_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **_ROLLUP_FK)
    api_key = models.ForeignKey("keys.ApiKey", related_name="+", **_ROLLUP_FK)

    objects = TenantManager()

    class Meta:
        db_table = "audit_usagekeyrollup"
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


class UsageDeploymentRollup(UsageTimedTotals):
    """Hourly totals of usage per organisation, team and deployment: a deployment page's latency, throughput and
    failures over time. Kept by the usage worker in the same transaction as UsageRollup, for requests that reached a
    deployment; visible to whoever may view UsageRollup rows of the same organisation and team (a platform
    deployment's page shows each organisation only its own requests)."""

    tenant_path = TenantPath(org="organization_id", team="team_id")

    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    organization = models.ForeignKey("orgs.Organization", related_name="+", **_ROLLUP_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **_ROLLUP_FK)
    deployment = models.ForeignKey("compute.ModelDeployment", related_name="+", **_ROLLUP_FK)

    objects = TenantManager()

    class Meta:
        db_table = "usage_deploymentrollup"
        ordering = ["-hour"]
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "organization", "team", "deployment"],
                nulls_distinct=False,
                name="usage_deployment_rollup_unique",
            )
        ]
        indexes = [models.Index(fields=["deployment", "hour"], name="usage_deployment_rollup_hour")]

    def __str__(self) -> str:
        return f"deployment {self.deployment_id} @ {self.hour:%Y-%m-%d %H}:00"


class GpuUsageSpan(models.Model):
    """The GPUs one replica held, from the moment it first served (READY) until it stopped (STOPPED), priced at its
    pool's cost per GPU-hour as it was when the replica started serving. `ended_at` is empty while it runs: its cost
    accrues up to now. The GPU cost of a period is each span's overlap with it, in microseconds, times its GPUs and
    price, in integer micro-units (`apps.usage.gpu_selectors`). Written by the compute plane's replica state machine
    in the transaction of the move; charged to the deployment's organisation and team as they were then."""

    tenant_path = TenantPath(org="organization_id", team="team_id")

    organization = models.ForeignKey("orgs.Organization", related_name="+", **_HISTORY_FK)
    team = models.ForeignKey("orgs.Team", related_name="+", **{**_HISTORY_FK, "db_index": False})
    deployment = models.ForeignKey("compute.ModelDeployment", related_name="+", **_HISTORY_FK)
    # The replica row is pruned once stopped; its span stays.
    replica_id = models.BigIntegerField(unique=True)
    gpus = models.PositiveSmallIntegerField()
    cost_per_gpu_hour_micros = models.BigIntegerField()
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["organization", "started_at"], name="usage_gpu_span_org_start")]

    def __str__(self) -> str:
        return f"replica {self.replica_id}: {self.gpus} GPU(s) from {self.started_at:%Y-%m-%d %H:%M}"
