"""The management REST API, mounted at `/api/`: one router for every resource, plus the OpenAPI schema and docs.

New viewsets register here and join the isolation walk (tests/api/test_isolation.py walks this router)."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from apps.audit.api import AuditCheckpointViewSet, AuditEventViewSet
from apps.compute.api import DeploymentViewSet, NodeHeartbeatView, PoolViewSet, ProviderViewSet, ReplicaViewSet
from apps.compute.route_api import ModelRouteViewSet
from apps.keys.api import ApiKeyViewSet, SocketTokenView
from apps.knowledge.api import KnowledgeFileViewSet, VectorStoreFileViewSet, VectorStoreViewSet
from apps.notifications.api import ChannelViewSet, DeliveryViewSet
from apps.orgs.api import InvitationViewSet, MembershipViewSet, OrganizationViewSet, TeamViewSet
from apps.policies.api import GuardrailProfileViewSet, PolicyViewSet, PromptTemplateViewSet
from apps.rbac.api import RoleViewSet
from apps.usage.api import UsageRecordViewSet

router = DefaultRouter()
router.register("organizations", OrganizationViewSet, basename="organization")
router.register("teams", TeamViewSet, basename="team")
router.register("members", MembershipViewSet, basename="membership")
router.register("invitations", InvitationViewSet, basename="invitation")
router.register("roles", RoleViewSet, basename="role")
router.register("keys", ApiKeyViewSet, basename="apikey")
router.register("providers", ProviderViewSet, basename="provider")
router.register("pools", PoolViewSet, basename="pool")
router.register("deployments", DeploymentViewSet, basename="deployment")
router.register("replicas", ReplicaViewSet, basename="replica")
router.register("model-routes", ModelRouteViewSet, basename="modelroute")
router.register("usage", UsageRecordViewSet, basename="usage")
router.register("audit-events", AuditEventViewSet, basename="auditevent")
router.register("audit-checkpoints", AuditCheckpointViewSet, basename="auditcheckpoint")
# Policies, guardrail profiles and prompt templates (apps/policies).
router.register("policies", PolicyViewSet, basename="policy")
router.register("guardrail-profiles", GuardrailProfileViewSet, basename="guardrailprofile")
router.register("templates", PromptTemplateViewSet, basename="prompttemplate")

# Knowledge bases: files, vector stores and the files attached to them (apps/knowledge).
router.register("knowledge-files", KnowledgeFileViewSet, basename="knowledgefile")
router.register("vector-stores", VectorStoreViewSet, basename="vectorstore")
router.register("vector-store-files", VectorStoreFileViewSet, basename="vectorstorefile")
# Notification channels and their deliveries (apps/notifications).
router.register("notification-channels", ChannelViewSet, basename="notificationchannel")
router.register("notification-deliveries", DeliveryViewSet, basename="notificationdelivery")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("nodes/heartbeat", NodeHeartbeatView.as_view(), name="node-heartbeat"),
    path("socket-tokens/", SocketTokenView.as_view(), name="socket-token"),
    path("", include(router.urls)),
]
