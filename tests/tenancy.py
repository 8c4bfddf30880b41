"""Builders for a complete tenant: one of everything an organisation owns, for tests that cross tenant lines."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.compute.models import ComputePool, ModelDeployment, ModelRoute, ModelRouteTarget, Provider, Replica
from apps.keys.models import ApiKey
from apps.keys.services import IssuedKey, api_key_create
from apps.knowledge.models import KnowledgeFile, VectorStore, VectorStoreFile
from apps.notifications.models import Channel, Delivery, EventKind
from apps.orgs.models import Invitation, Organization, Team
from apps.policies.models import GuardrailProfile, Policy, PromptTemplate
from apps.policies.prompts.services import prompt_template_create
from apps.rbac.models import Role
from apps.usage.models import UsageRecord, UsageRollup
from apps.usage.rollups import usage_rollups_rebuild
from tests.factories import ModelDeploymentFactory, ReplicaFactory, TeamFactory


@dataclass
class Tenant:
    """An organisation and one row of every kind it owns."""

    org: Organization
    team: Team
    role: Role
    provider: Provider
    pool: ComputePool
    deployment: ModelDeployment
    replica: Replica
    key: IssuedKey
    service_key: IssuedKey
    event: AuditEvent
    usage: UsageRecord
    invitation: Invitation
    guardrail_profile: GuardrailProfile
    policy: Policy
    template: PromptTemplate
    knowledge_file: KnowledgeFile
    vector_store: VectorStore
    vector_store_file: VectorStoreFile
    model_route: ModelRoute | None = None
    channel: Channel | None = None
    delivery: Delivery | None = None

    def rows(self) -> dict[str, Any]:
        return {
            "organization": self.org,
            "team": self.team,
            "role": self.role,
            "provider": self.provider,
            "pool": self.pool,
            "deployment": self.deployment,
            "replica": self.replica,
            "key": self.key.key,
            "event": self.event,
            "usage": self.usage,
            "membership": self.org.memberships.order_by("pk").first(),
            "invitation": self.invitation,
            "guardrail_profile": self.guardrail_profile,
            "policy": self.policy,
            "template": self.template,
            "knowledge_file": self.knowledge_file,
            "vector_store": self.vector_store,
            "vector_store_file": self.vector_store_file,
            "model_route": self.model_route,
            "channel": self.channel,
            "delivery": self.delivery,
        }


def tenant_build(*, org: Organization, owner: Any, tag: str) -> Tenant:
    """Fill `org` with a team, custom role, provider, pool, deployment, replica, keys, audit event, usage, a guardrail
    profile, a policy of the team, a prompt template, and a knowledge file attached to a vector store (rows only:
    no bytes are stored and nothing is embedded)."""
    team = TeamFactory(organization=org, name=f"{tag} team", slug=f"{tag}-team")
    role = Role.objects.create(organization=org, slug=f"{tag}-auditor", name=f"{tag} auditor")
    replica = ReplicaFactory(
        deployment__organization=org,
        deployment__pool__provider__name=f"{tag}-provider",
        deployment__pool__name=f"{tag}-pool",
        deployment__pool__max_nodes=4,
        deployment__name=f"{tag}-deployment",
        deployment__model_id="sim/tiny",
        deployment__served_model_name=f"{tag}-model",
        endpoint=f"http://127.0.0.1:9/{tag}",
    )
    deployment = replica.deployment
    pool = deployment.pool
    provider = pool.provider
    key = api_key_create(organization=org, name=f"{tag} owner key", scopes=["read", "manage"], owner=owner, actor=owner)
    service_key = api_key_create(organization=org, name=f"{tag} service key", scopes=["read"], actor=owner)
    event = audit_record(action=f"{tag}.happened", actor=owner, target=org)
    usage = UsageRecord.objects.create(
        request_id=f"{tag}-{uuid.uuid4().hex}",
        started_at=timezone.now(),
        organization=org,
        team=team,
        api_key=key.key,
        deployment=deployment,
        replica=replica,
        endpoint="chat.completions",
        model=deployment.served_model_name,
        prompt_tokens=10,
        completion_tokens=20,
        cost_micros=300,
        latency_ms=12.5,
        status_code=200,
        outcome=UsageRecord.Outcome.OK,
    )
    UsageRollup.objects.create(
        hour=usage.started_at.replace(minute=0, second=0, microsecond=0),
        organization=org,
        team=team,
        api_key=key.key,
        model=usage.model,
        requests=1,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_micros=usage.cost_micros,
    )
    usage_rollups_rebuild(since=usage.started_at, until=usage.started_at)  # the per-model and per-key grains too
    invitation = Invitation.objects.create(
        organization=org,
        email=f"new@{tag}.test",
        role=Role.objects.get(organization=None, slug="member"),
        token_hash=uuid.uuid4().hex,
        expires_at=timezone.now() + timezone.timedelta(days=1),
    )
    profile = GuardrailProfile.objects.create(
        organization=org, name=f"{tag}-guardrails", input_actions={"email": "flag"}
    )
    policy = Policy.objects.create(organization=org, team=team, requests_per_minute=600, guardrail_profile=profile)
    template = prompt_template_create(
        actor=owner,
        organization=org,
        name=f"{tag}-template",
        messages=[{"role": "system", "content": f"You are {tag}'s assistant for {{{{topic}}}}."}],
        variables=[{"name": "topic"}],
    ).template
    knowledge_file = KnowledgeFile.objects.create(
        organization=org, filename=f"{tag}-notes.txt", purpose="assistants", bytes=0, storage_name=f"files/{tag}"
    )
    vector_store = VectorStore.objects.create(organization=org, name=f"{tag}-store", embedding_model="x", dimensions=8)
    vector_store_file = VectorStoreFile.objects.create(
        organization=org, vector_store=vector_store, file=knowledge_file, chunk_max_tokens=800, chunk_overlap_tokens=400
    )
    model_route = ModelRoute.objects.create(organization=org, name=f"{tag}-route")
    ModelRouteTarget.objects.create(route=model_route, deployment=deployment, weight=1)
    channel = Channel.objects.create(
        organization=org, name=f"{tag}-channel", kind=Channel.Kind.SLACK, url="https://hooks.example.com/x"
    )
    delivery = Delivery.objects.create(
        organization=org, channel=channel, event_kind=EventKind.TEST, event_key=f"{tag}-test", summary="test"
    )
    return Tenant(
        org, team, role, provider, pool, deployment, replica, key, service_key, event, usage, invitation, profile,
        policy, template, knowledge_file, vector_store, vector_store_file, model_route, channel, delivery,
    )  # fmt: skip


def platform_deployment(*, shared_with: list[Organization]) -> ModelDeployment:
    """A deployment the platform owns, shared with the given organisations."""
    deployment = ModelDeploymentFactory(
        organization=None, pool__provider__name="platform-provider", pool__name="platform-pool", name="platform",
        model_id="sim/big", served_model_name="platform-model",
    )  # fmt: skip
    deployment.shared_with.set(shared_with)
    return deployment


__all__ = ["ApiKey", "Tenant", "platform_deployment", "tenant_build"]
