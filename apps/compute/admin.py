from __future__ import annotations

from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.rbac.admin_mixins import TenantAdminMixin


@admin.register(Provider)
class ProviderAdmin(TenantAdminMixin, GuardedModelAdmin):
    list_display = ["name", "kind", "organization", "created_at"]
    list_filter = ["kind", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "organization__name"]


@admin.register(ComputePool)
class ComputePoolAdmin(TenantAdminMixin, GuardedModelAdmin):
    list_display = ["name", "provider", "organization", "region", "gpu_type", "gpus_per_node", "max_nodes"]
    list_filter = ["provider__kind", "organization", "gpu_type"]
    list_select_related = ["provider", "organization"]
    search_fields = ["name", "region", "gpu_type"]


class ReplicaInline(admin.TabularInline):
    model = Replica
    extra = 0
    fields = ["state", "endpoint", "last_heartbeat_at", "last_error"]
    readonly_fields = fields


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(TenantAdminMixin, GuardedModelAdmin):
    list_display = ["served_model_name", "model_id", "organization", "pool", "state", "desired_replicas"]
    list_filter = ["state", "engine", "organization"]
    list_select_related = ["organization", "pool"]
    search_fields = ["served_model_name", "model_id", "name"]
    filter_horizontal = ["shared_with"]
    inlines = [ReplicaInline]


@admin.register(Replica)
class ReplicaAdmin(TenantAdminMixin, admin.ModelAdmin):
    list_display = ["id", "deployment", "state", "endpoint", "last_heartbeat_at", "updated_at"]
    list_filter = ["state", "deployment__organization"]
    list_select_related = ["deployment"]
    search_fields = ["endpoint", "deployment__served_model_name"]
