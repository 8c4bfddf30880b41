"""REST shapes of providers, pools, deployments and replicas. Provider credentials are write-only."""

from __future__ import annotations

from rest_framework import serializers

from apps.compute.models import ComputePool, DeploymentEvent, ModelDeployment, Provider, Replica
from apps.compute.placement import PLACEMENT_POOLS_MAX
from apps.compute.replica_logs import LOG_BUFFER_LINES
from apps.orgs.models import Organization, Team
from apps.rbac.drf import TenantRelatedField, request_principal


class ProviderOut(serializers.ModelSerializer):
    has_credentials = serializers.SerializerMethodField()

    class Meta:
        model = Provider
        fields = ["id", "organization", "name", "kind", "config", "has_credentials", "created_at"]

    def get_has_credentials(self, provider: Provider) -> bool:
        return bool(provider.credentials_encrypted)


class ProviderCreateIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=Provider.Kind.choices)
    config = serializers.JSONField(required=False, default=dict)
    credentials = serializers.JSONField(required=False, write_only=True, help_text="Stored encrypted, never shown.")


class ProviderUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    config = serializers.JSONField(required=False)
    credentials = serializers.JSONField(required=False, write_only=True)


class PoolOut(serializers.ModelSerializer):
    class Meta:
        model = ComputePool
        fields = [
            "id",
            "organization",
            "provider",
            "name",
            "region",
            "gpu_type",
            "gpus_per_node",
            "max_nodes",
            "cost_per_gpu_hour_micros",
            "created_at",
        ]


class PoolCreateIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    provider = TenantRelatedField(Provider)
    name = serializers.CharField(max_length=200)
    region = serializers.CharField(max_length=100, required=False, default="")
    gpu_type = serializers.CharField(max_length=100, required=False, default="")
    gpus_per_node = serializers.IntegerField(min_value=1, max_value=64, default=1)
    max_nodes = serializers.IntegerField(min_value=1, default=1)
    cost_per_gpu_hour_micros = serializers.IntegerField(min_value=0, default=0)


class PoolUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    region = serializers.CharField(max_length=100, required=False)
    gpu_type = serializers.CharField(max_length=100, required=False)
    gpus_per_node = serializers.IntegerField(min_value=1, max_value=64, required=False)
    max_nodes = serializers.IntegerField(min_value=1, required=False)
    cost_per_gpu_hour_micros = serializers.IntegerField(min_value=0, required=False)


DEPLOYMENT_OUT_FIELDS = [
    "id",
    "organization",
    "pool",
    "placement_pools",
    "name",
    "model_id",
    "served_model_name",
    "engine",
    "engine_args",
    "image",
    "spec_hash",
    "max_surge",
    "max_unavailable",
    "drain_timeout_s",
    "rollout_deadline_s",
    "rollout_progressed_at",
    "rollout_state",
    "rollout_reason",
    "rollout_failures",
    "rollout_started_at",
    "min_replicas",
    "max_replicas",
    "desired_replicas",
    "team",
    "state",
    "state_reason",
    "state_changed_at",
    "consecutive_failures",
    "last_error",
    "last_failure_at",
    "replace_after",
    "price_input_per_mtok_micros",
    "price_output_per_mtok_micros",
    "connect_timeout_s",
    "first_byte_timeout_s",
    "idle_timeout_s",
    "stream_interval_ms",
    "stream_interval_chunks",
    "created_at",
    "updated_at",
]


class DeploymentOut(serializers.ModelSerializer):
    class Meta:
        model = ModelDeployment
        fields = DEPLOYMENT_OUT_FIELDS


class DeploymentUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    model_id = serializers.CharField(max_length=300, required=False)
    served_model_name = serializers.CharField(max_length=200, required=False)
    engine_args = serializers.JSONField(required=False)
    # Checked in full by the service (a pinned image reference); bounded here, NUL refused by the field.
    image = serializers.CharField(max_length=255, required=False, allow_blank=True)
    max_surge = serializers.IntegerField(min_value=0, max_value=64, required=False)
    max_unavailable = serializers.IntegerField(min_value=0, max_value=64, required=False)
    drain_timeout_s = serializers.FloatField(min_value=0.1, max_value=3600, required=False)
    rollout_deadline_s = serializers.FloatField(
        min_value=1,
        max_value=86400,
        required=False,
        help_text="A rollout that makes no progress (a new replica ready, an old one gone) for this long fails.",
    )
    min_replicas = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    max_replicas = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    desired_replicas = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    team = TenantRelatedField(
        Team,
        required=False,
        allow_null=True,
        help_text="The team of the deployment's organisation its GPUs are charged to (GPU quota, costs).",
    )
    price_input_per_mtok_micros = serializers.IntegerField(min_value=0, required=False)
    price_output_per_mtok_micros = serializers.IntegerField(min_value=0, required=False)
    connect_timeout_s = serializers.FloatField(min_value=0, required=False, allow_null=True)
    first_byte_timeout_s = serializers.FloatField(min_value=0, required=False, allow_null=True)
    idle_timeout_s = serializers.FloatField(min_value=0, required=False, allow_null=True)
    stream_interval_ms = serializers.IntegerField(
        min_value=0,
        max_value=1000,
        required=False,
        help_text="Longest a chunk of a streamed answer may wait to go out with the next ones (0: no time bound).",
    )
    stream_interval_chunks = serializers.IntegerField(
        min_value=0,
        max_value=256,
        required=False,
        help_text="Chunks of a streamed answer sent together once that many wait (0: no count bound). "
        "Both 0 (the default): each chunk goes out as the engine sends it.",
    )


class DeploymentCreateIn(DeploymentUpdateIn):
    organization = TenantRelatedField(Organization)
    pool = TenantRelatedField(ComputePool)
    name = serializers.CharField(max_length=200)
    model_id = serializers.CharField(max_length=300)
    served_model_name = serializers.CharField(max_length=200)
    engine = serializers.CharField(max_length=32, default="vllm")


class ExternalDeploymentCreateIn(serializers.Serializer):
    """One call to adopt OpenAI-compatible servers the user runs: provider, pool and deployment together."""

    organization = TenantRelatedField(Organization)
    served_model_name = serializers.CharField(max_length=200, help_text="The `model` Inferia's clients ask for.")
    base_urls = serializers.ListField(
        child=serializers.CharField(max_length=2000), min_length=1, max_length=64, help_text="One per replica."
    )
    model_id = serializers.CharField(
        max_length=300,
        required=False,
        default="",
        help_text="The model the upstream serves (default: the served name).",
    )
    api_key = serializers.CharField(
        max_length=4000, required=False, default="", write_only=True, help_text="Upstream key; stored encrypted."
    )
    name = serializers.CharField(max_length=200, required=False, default="")
    replicas = serializers.IntegerField(min_value=1, max_value=64, required=False, allow_null=True, default=None)
    health_path = serializers.CharField(max_length=200, required=False, default="")
    price_input_per_mtok_micros = serializers.IntegerField(min_value=0, default=0)
    price_output_per_mtok_micros = serializers.IntegerField(min_value=0, default=0)


class LoraAdapterIn(serializers.Serializer):
    """A LoRA adapter to serve on a deployment, as model `name`."""

    name = serializers.CharField(max_length=200, help_text="The model name clients ask for.")
    path = serializers.CharField(max_length=300, help_text="A Hugging Face repo id or a path on the node.")


class LoraAdapterRemoveIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)


class DeploymentPlacementIn(serializers.Serializer):
    placement_pools = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        max_length=PLACEMENT_POOLS_MAX,
        help_text="Ids of other pools of the deployment's owner its replicas may run on: each new replica goes to "
        "the cheapest pool with room that fits it, the next when a provider refuses; an empty list places on its "
        "own pool alone.",
    )

    def validate_placement_pools(self, ids: list[int]) -> list[ComputePool]:
        """The pools, as the caller sees them: one outside the caller's view reads as missing, like a wrong id."""
        pools = ComputePool.objects.restrict(request_principal(self.context["request"])).filter(pk__in=ids)
        visible = {pool.pk: pool for pool in pools}
        missing = sorted(set(ids) - visible.keys())
        if missing:
            raise serializers.ValidationError(f'Invalid pk "{missing[0]}" - object does not exist.')
        return [visible[pk] for pk in dict.fromkeys(ids)]


class DeploymentShareIn(serializers.Serializer):
    organizations = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.all(), many=True)


class ReplicaOut(serializers.ModelSerializer):
    class Meta:
        model = Replica
        fields = [
            "id",
            "deployment",
            "pool",
            "state",
            "endpoint",
            "last_heartbeat_at",
            "last_metrics",
            "last_error",
            "spec_hash",
            "drain_started_at",
            "created_at",
            "updated_at",
        ]


class ReplicaLogsQueryIn(serializers.Serializer):
    tail = serializers.IntegerField(
        min_value=1, max_value=LOG_BUFFER_LINES, default=100, help_text=f"How many lines (at most {LOG_BUFFER_LINES})."
    )


class ReplicaLogsOut(serializers.Serializer):
    """A replica's engine output as the worker captured it while the replica provisioned, started, was unhealthy
    or failed: the newest lines last, anything that looks like a credential masked."""

    replica = serializers.IntegerField()
    state = serializers.CharField()
    lines = serializers.ListField(child=serializers.CharField(allow_blank=True, trim_whitespace=False))


class DeploymentScaleIn(serializers.Serializer):
    replicas = serializers.IntegerField(min_value=0, max_value=1000)
    reason = serializers.CharField(max_length=300, required=False, default="")


class DeploymentStopIn(serializers.Serializer):
    reason = serializers.CharField(max_length=300, required=False, default="")


class RolloutProgressOut(serializers.Serializer):
    state = serializers.CharField()
    reason = serializers.CharField()
    spec_hash = serializers.CharField()
    previous_spec_hash = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    failures = serializers.IntegerField()
    new_replicas = serializers.DictField(child=serializers.IntegerField(), help_text="Live replicas on the new spec.")
    old_replicas = serializers.DictField(child=serializers.IntegerField(), help_text="Live replicas on older specs.")


class DeploymentEventOut(serializers.ModelSerializer):
    class Meta:
        model = DeploymentEvent
        fields = ["id", "from_state", "to_state", "reason", "created_at"]


class NodeHeartbeatIn(serializers.Serializer):
    """What a node behind NAT pushes: its state and, optionally, its engine's load."""

    state = serializers.ChoiceField(choices=["ready", "starting", "failed"])
    metrics = serializers.DictField(required=False, help_text="running, waiting, kv_cache (or vLLM's metric names).")


class NodeHeartbeatOut(serializers.Serializer):
    replica = serializers.IntegerField()
    state = serializers.CharField()
