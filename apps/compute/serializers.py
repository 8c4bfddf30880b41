"""REST shapes of providers, pools, deployments and replicas. Provider credentials are write-only."""

from __future__ import annotations

from rest_framework import serializers

from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.orgs.models import Organization
from apps.rbac.drf import TenantRelatedField


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
    "name",
    "model_id",
    "served_model_name",
    "engine",
    "engine_args",
    "min_replicas",
    "max_replicas",
    "desired_replicas",
    "state",
    "state_reason",
    "state_changed_at",
    "price_input_per_mtok_micros",
    "price_output_per_mtok_micros",
    "connect_timeout_s",
    "first_byte_timeout_s",
    "idle_timeout_s",
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
    min_replicas = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    max_replicas = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    desired_replicas = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    price_input_per_mtok_micros = serializers.IntegerField(min_value=0, required=False)
    price_output_per_mtok_micros = serializers.IntegerField(min_value=0, required=False)
    connect_timeout_s = serializers.FloatField(min_value=0, required=False, allow_null=True)
    first_byte_timeout_s = serializers.FloatField(min_value=0, required=False, allow_null=True)
    idle_timeout_s = serializers.FloatField(min_value=0, required=False, allow_null=True)


class DeploymentCreateIn(DeploymentUpdateIn):
    organization = TenantRelatedField(Organization)
    pool = TenantRelatedField(ComputePool)
    name = serializers.CharField(max_length=200)
    model_id = serializers.CharField(max_length=300)
    served_model_name = serializers.CharField(max_length=200)
    engine = serializers.CharField(max_length=32, default="vllm")


class DeploymentShareIn(serializers.Serializer):
    organizations = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.all(), many=True)


class ReplicaOut(serializers.ModelSerializer):
    class Meta:
        model = Replica
        fields = [
            "id",
            "deployment",
            "state",
            "endpoint",
            "last_heartbeat_at",
            "last_metrics",
            "last_error",
            "created_at",
            "updated_at",
        ]
