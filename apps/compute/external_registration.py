"""Adopting OpenAI-compatible servers the user already runs (vLLM, SGLang, TGI, a hosted API) as a deployment, in one
call: the REST API's `POST /api/deployments/external/`, `inferia deploy --external` and the admin's form.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.audit.actors import Actor
from apps.audit.services import AuditContext
from apps.compute.adapters.external import external_base_urls_check
from apps.compute.inventory_services import (
    REGISTRATION_MARK,
    deployment_create,
    owner_name_check,
    pool_create,
    provider_create,
)
from apps.compute.models import ModelDeployment, Provider
from apps.orgs.models import Organization
from inferia_runtime.errors import DomainRefusal


@transaction.atomic
def external_deployment_create(
    *,
    organization: Organization | None,
    served_model_name: str,
    base_urls: list[str],
    actor: Actor,
    model_id: str = "",
    api_key: str = "",
    name: str = "",
    replicas: int | None = None,
    health_path: str = "",
    price_input_per_mtok_micros: int = 0,
    price_output_per_mtok_micros: int = 0,
    context: AuditContext | None = None,
) -> ModelDeployment:
    """Adopt OpenAI-compatible servers the user already runs (vLLM, SGLang, TGI, a hosted API) as one deployment,
    in one transaction: an `external` provider holding the SSRF-checked `base_urls` and the upstream `api_key`
    (encrypted), a pool on it, and the deployment serving `served_model_name` from the upstream's `model_id`
    (default: the same name). Each write is audited; the worker adopts one URL per replica after commit. The
    provider is marked as made for this deployment, so that deleting the deployment deletes it and the pool."""
    urls = external_base_urls_check(base_urls)  # UnsafeUrlError is a ValueError: a 400 naming the URL
    owner_id = getattr(organization, "pk", None)
    owner_name_check(
        ModelDeployment, organization_id=owner_id, field="served_model_name", value=served_model_name, pk=None
    )
    config: dict[str, Any] = {"base_urls": urls, REGISTRATION_MARK: True}
    if health_path:
        if not health_path.startswith("/"):
            raise DomainRefusal("health_path must start with /")
        config["health_path"] = health_path
    count = len(urls) if replicas is None else replicas
    if not 1 <= count <= len(urls):
        raise DomainRefusal(f"replicas must be from 1 to {len(urls)}: each replica adopts one base URL")
    label = f"external: {served_model_name}"
    provider = provider_create(
        organization=organization,
        name=label,
        kind=Provider.Kind.EXTERNAL,
        config=config,
        credentials={"api_key": api_key} if api_key else None,
        actor=actor,
        context=context,
    )
    pool = pool_create(
        organization=organization, provider=provider, name=label, max_nodes=len(urls), actor=actor, context=context
    )
    return deployment_create(
        organization=organization,
        pool=pool,
        name=name or served_model_name,
        served_model_name=served_model_name,
        model_id=model_id or served_model_name,
        min_replicas=count,
        desired_replicas=count,
        max_replicas=count,
        price_input_per_mtok_micros=price_input_per_mtok_micros,
        price_output_per_mtok_micros=price_output_per_mtok_micros,
        actor=actor,
        context=context,
    )


def external_deployment_register(
    *,
    organization: Organization | None,
    served_model_name: str,
    base_urls: list[str],
    model_id: str = "",
    **fields: Any,
) -> tuple[ModelDeployment, bool]:
    """`external_deployment_create`, idempotent: registering the same base URLs and upstream model under a served
    name again returns the deployment that has them, unchanged, and False; the same served name with other URLs or
    another model is a NameTakenError naming the deployment that holds it."""
    urls = external_base_urls_check(base_urls)
    existing = (
        ModelDeployment.objects.select_related("pool__provider")
        .filter(organization=organization, served_model_name=served_model_name)
        .first()
    )
    if existing is not None and _registered_as(existing, urls, model_id or served_model_name):
        return existing, False
    deployment = external_deployment_create(
        organization=organization, served_model_name=served_model_name, base_urls=urls, model_id=model_id, **fields
    )
    return deployment, True


def _registered_as(deployment: ModelDeployment, urls: list[str], model_id: str) -> bool:
    provider = deployment.pool.provider
    config = provider.config or {}
    return (
        provider.kind == Provider.Kind.EXTERNAL
        and config.get(REGISTRATION_MARK) is True
        and config.get("base_urls") == urls
        and deployment.model_id == model_id
    )
