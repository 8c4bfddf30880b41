"""The compute plane: providers hold credentials, pools describe GPU capacity, deployments serve models
on replicas."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from inferia_runtime.tenancy import TenantManager, TenantPath


class Provider(models.Model):
    """Where GPU nodes come from (Kubernetes, an SSH host, SkyPilot, ...), with its credentials encrypted at rest.

    Owned by an organisation, or by the platform when `organization` is empty."""

    tenant_path = TenantPath(org="organization_id", grant_via="pk")

    class Kind(models.TextChoices):
        SIMULATOR = "simulator", "Simulated engine (inferia-sim)"
        EXTERNAL = "external", "External OpenAI-compatible endpoints"
        LOCAL = "local", "vLLM on the worker host"
        SSH = "ssh", "vLLM container over SSH"
        KUBERNETES = "kubernetes", "Kubernetes"
        SKYPILOT = "skypilot", "SkyPilot"
        NOSANA = "nosana", "Nosana"
        AKASH = "akash", "Akash"

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="providers"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    config = models.JSONField(default=dict, blank=True, help_text="Non-secret settings (namespace, host, ...).")
    credentials_encrypted = models.TextField(blank=True, editable=False, help_text="MultiFernet token.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=Q(organization__isnull=False),
                name="compute_provider_name",
                violation_error_message="This organisation already has a provider with this name.",
            ),
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(organization__isnull=True),
                name="compute_provider_platform_name",
                violation_error_message="The platform already has a provider with this name.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class ComputePool(models.Model):
    """A kind of node a provider can give: region, GPU type and count per node, size limit and price."""

    tenant_path = TenantPath(org="organization_id", grant_via="pk")

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="pools"
    )
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="pools")
    name = models.CharField(max_length=200)
    region = models.CharField(max_length=100, blank=True)
    gpu_type = models.CharField(max_length=100, blank=True)
    gpus_per_node = models.PositiveSmallIntegerField(default=1)
    max_nodes = models.PositiveIntegerField(default=1)
    cost_per_gpu_hour_micros = models.BigIntegerField(default=0, help_text="Money in micro-units (1e-6).")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=Q(organization__isnull=False),
                name="compute_pool_name",
                violation_error_message="This organisation already has a pool with this name.",
            ),
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(organization__isnull=True),
                name="compute_pool_platform_name",
                violation_error_message="The platform already has a pool with this name.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ModelDeployment(models.Model):
    """A model served on a pool by a number of replicas, under one served model name.

    The served name is unique within its owner (an organisation, or the platform); platform deployments
    can be shared with chosen organisations."""

    tenant_path = TenantPath(org="organization_id", grant_via="pk", shared_with="shared_with")

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        PROVISIONING = "provisioning", "Provisioning"
        READY = "ready", "Ready"
        DEGRADED = "degraded", "Degraded"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    class RolloutState(models.TextChoices):
        NONE = "", "None"
        PROGRESSING = "progressing", "Progressing"
        PAUSED = "paused", "Paused"
        COMPLETE = "complete", "Complete"
        FAILED = "failed", "Failed"

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="deployments"
    )
    pool = models.ForeignKey(ComputePool, on_delete=models.PROTECT, related_name="deployments")
    placement_pools = models.ManyToManyField(
        ComputePool,
        blank=True,
        related_name="placed_deployments",
        help_text="Other pools its replicas may run on: each new replica goes to the cheapest pool with room "
        "(apps/compute/placement.py).",
    )
    shared_with = models.ManyToManyField("orgs.Organization", blank=True, related_name="shared_deployments")
    team = models.ForeignKey(
        "orgs.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="charged_deployments",
        help_text="The team of the organisation its GPUs are charged to (its GPU quota, its costs); empty: the "
        "organisation alone.",
    )
    name = models.CharField(max_length=200)
    model_id = models.CharField(max_length=300, help_text="What the engine loads, e.g. a Hugging Face repo id.")
    served_model_name = models.CharField(max_length=200, help_text="The `model` clients ask for.")
    engine = models.CharField(max_length=32, default="vllm")
    engine_args = models.JSONField(default=dict, blank=True)
    image = models.CharField(
        max_length=255,
        blank=True,
        help_text="The engine's container image, pinned by tag or digest (empty: the default).",
    )
    spec_hash = models.CharField(
        max_length=16,
        blank=True,
        help_text="Digest of what a replica runs (model, engine args, image); see rollout.py.",
    )
    max_surge = models.PositiveSmallIntegerField(default=1, help_text="Replicas above the desired count in a rollout.")
    max_unavailable = models.PositiveSmallIntegerField(
        default=0, help_text="Replicas below the desired count a rollout may leave serving."
    )
    drain_timeout_s = models.FloatField(
        default=60.0, help_text="How long a replica taken out of routing may finish its running requests."
    )
    rollout_state = models.CharField(max_length=16, choices=RolloutState.choices, default=RolloutState.NONE, blank=True)
    rollout_reason = models.CharField(max_length=500, blank=True)
    rollout_previous = models.JSONField(
        default=dict, blank=True, help_text="The spec before the rollout (what rollback restores, old replicas run)."
    )
    rollout_failures = models.PositiveSmallIntegerField(
        default=0, help_text="New-spec replicas failed in this rollout."
    )
    rollout_started_at = models.DateTimeField(null=True, blank=True)
    rollout_deadline_s = models.FloatField(
        default=600.0,
        help_text="A rollout that makes no progress for this long fails (Kubernetes' progressDeadlineSeconds).",
    )
    rollout_progressed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the rollout last made progress (or started or resumed)."
    )
    rollout_mark = models.CharField(
        max_length=32, blank=True, help_text="Its progress when last seen: new-spec replicas ready / old ones live."
    )
    min_replicas = models.PositiveSmallIntegerField(default=1)
    max_replicas = models.PositiveSmallIntegerField(default=1)
    desired_replicas = models.PositiveSmallIntegerField(default=1)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    state_reason = models.CharField(max_length=500, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    price_input_per_mtok_micros = models.BigIntegerField(default=0, help_text="Per 1M input tokens, micro-units.")
    price_output_per_mtok_micros = models.BigIntegerField(default=0, help_text="Per 1M output tokens, micro-units.")
    connect_timeout_s = models.FloatField(null=True, blank=True)
    first_byte_timeout_s = models.FloatField(null=True, blank=True)
    idle_timeout_s = models.FloatField(null=True, blank=True)
    # Coalescing of the answer's chunks on their way to clients, as vLLM's --stream-interval does in its own server:
    # fewer, larger writes for a bounded delay. 0 and 0: each chunk goes out as the engine sends it.
    stream_interval_ms = models.PositiveIntegerField(
        default=0, help_text="Longest a chunk may wait for the next ones to go out with it (0: no time bound)."
    )
    stream_interval_chunks = models.PositiveSmallIntegerField(
        default=0, help_text="Chunks sent together as soon as that many are waiting (0: no count bound)."
    )
    last_scaled_at = models.DateTimeField(null=True, blank=True, help_text="When the replica count last changed.")
    consecutive_failures = models.PositiveIntegerField(
        default=0, help_text="Replicas that failed since it last served steadily (the crash-loop count)."
    )
    last_failure_at = models.DateTimeField(null=True, blank=True, help_text="When a replica last failed.")
    last_error = models.TextField(blank=True, help_text="The error of the replica that failed last.")
    replace_after = models.DateTimeField(
        null=True, blank=True, help_text="No new replica is started before this (crash-loop back-off)."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        ordering = ["served_model_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "served_model_name"],
                condition=Q(organization__isnull=False),
                name="compute_deployment_served_name",
                violation_error_message="This organisation already serves a model under this name.",
            ),
            models.UniqueConstraint(
                fields=["served_model_name"],
                condition=Q(organization__isnull=True),
                name="compute_deployment_platform_served_name",
                violation_error_message="The platform already serves a model under this name.",
            ),
            models.CheckConstraint(
                condition=Q(min_replicas__lte=models.F("max_replicas")),
                name="compute_min_le_max",
                violation_error_message="min_replicas cannot exceed max_replicas.",
            ),
        ]
        indexes = [models.Index(fields=["state"])]

    def __str__(self) -> str:
        return self.served_model_name


class Replica(models.Model):
    """One running engine (a vLLM server, or a simulated one) serving a deployment at an endpoint."""

    tenant_path = TenantPath(org="deployment__organization_id", grant_via="deployment_id")

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        PROVISIONING = "provisioning", "Provisioning"
        STARTING = "starting", "Starting"
        READY = "ready", "Ready"
        UNHEALTHY = "unhealthy", "Unhealthy"
        DRAINING = "draining", "Draining"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.CASCADE, related_name="replicas")
    pool = models.ForeignKey(
        ComputePool,
        on_delete=models.PROTECT,
        related_name="replicas",
        help_text="The pool it runs on: its deployment's, or one of its placement pools.",
    )
    pools_refused = models.JSONField(
        default=list, blank=True, help_text="Ids of the pools whose provider refused to provision it."
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    endpoint = models.URLField(blank=True, help_text="Base URL of the engine's OpenAI-compatible API.")
    provider_handle = models.JSONField(default=dict, blank=True, help_text="What the adapter needs to find it.")
    last_heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last time it was seen healthy.")
    last_pushed_at = models.DateTimeField(null=True, blank=True, help_text="Last heartbeat the node pushed itself.")
    last_metrics = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)
    failed_checks = models.PositiveIntegerField(default=0, help_text="Consecutive health checks it failed.")
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker claimed its provisioning.")
    provision_attempts = models.PositiveSmallIntegerField(default=0)
    node_token_hash = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    spec_hash = models.CharField(max_length=16, blank=True, help_text="The deployment spec it runs (rollout.py).")
    spec = models.JSONField(default=dict, blank=True, help_text="That spec: model_id, engine_args, image.")
    drain_started_at = models.DateTimeField(null=True, blank=True, help_text="When it left routing to drain.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        ordering = ["deployment_id", "id"]
        indexes = [models.Index(fields=["deployment", "state"])]

    def __str__(self) -> str:
        return f"{self.deployment} #{self.pk} ({self.state})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pool_id is None:  # placed on its deployment's own pool unless placement chose another
            self.pool_id = self.deployment.pool_id
        super().save(*args, **kwargs)


class DeploymentEvent(models.Model):
    """One transition of a deployment's state machine, with why it happened (the deployment page's history)."""

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=16, choices=ModelDeployment.State.choices)
    to_state = models.CharField(max_length=16, choices=ModelDeployment.State.choices)
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["deployment_id", "id"]

    def __str__(self) -> str:
        return f"{self.deployment_id}: {self.from_state} -> {self.to_state} ({self.reason})"


class DeploymentLoadSample(models.Model):
    """A deployment's engine load over one sampling step: the highest running and waiting requests summed over its
    READY replicas, and the highest KV-cache use (0..1) of any of them, as the health checker saw them. Two
    resolutions: `step` INFERIA_LOAD_SAMPLE_SECONDS (a day's charts; kept INFERIA_LOAD_FINE_HISTORY_DAYS) and an hour
    (longer ranges; kept INFERIA_LOAD_HISTORY_DAYS), so a month's chart reads hundreds of rows, not thousands. Written
    by the health task; read through its deployment (already narrowed by `.restrict()`), like DeploymentEvent."""

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.CASCADE, related_name="+")
    step = models.PositiveIntegerField(help_text="Length of the sample in seconds.")
    at = models.DateTimeField(help_text="Start of the sample (UTC).")
    running = models.FloatField(default=0)
    waiting = models.FloatField(default=0)
    kv_cache = models.FloatField(default=0)
    replicas = models.PositiveSmallIntegerField(default=0, help_text="READY replicas that reported load.")

    class Meta:
        ordering = ["deployment_id", "step", "at"]
        constraints = [
            # Also the index every read takes (one deployment, one resolution, a time range), without the table.
            models.UniqueConstraint(
                fields=["deployment", "step", "at"],
                include=["running", "waiting", "kv_cache"],
                name="compute_load_sample_unique",
            )
        ]
        indexes = [models.Index(fields=["step", "at"], name="compute_load_sample_age")]  # pruning by age

    def __str__(self) -> str:
        return f"{self.deployment_id} @ {self.at:%Y-%m-%d %H:%M} ({self.step}s)"


# Defined in their own module (routes over deployments); imported here so that Django registers them with compute.
from apps.compute.route_models import ModelRoute, ModelRouteTarget  # noqa: E402

__all__ = [
    "ComputePool",
    "DeploymentEvent",
    "DeploymentLoadSample",
    "ModelDeployment",
    "ModelRoute",
    "ModelRouteTarget",
    "Provider",
    "Replica",
]
