"""The database reads behind the gateway's in-process catalog. Called off the hot path (cold start, invalidation)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from apps.compute.credentials import CredentialsError, credentials_decrypt
from apps.compute.lora import lora_names
from apps.compute.models import ModelDeployment, ModelRoute, ModelRouteTarget, Provider, Replica
from apps.gateway.metrics import LiveLabels
from apps.orgs.models import Organization

logger = logging.getLogger(__name__)

# Deployments that no longer serve do not appear to clients at all.
_GONE_STATES = (ModelDeployment.State.STOPPED, ModelDeployment.State.FAILED)


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    """What the gateway needs of one deployment, read in one go with its READY replicas and share list."""

    id: int
    organization_id: int | None
    served_model_name: str
    model_id: str
    created: int
    price_input_per_mtok_micros: int
    price_output_per_mtok_micros: int
    connect_timeout_s: float | None
    first_byte_timeout_s: float | None
    idle_timeout_s: float | None
    replicas: tuple[tuple[int, str, dict[str, object]], ...]  # (id, endpoint, last_metrics)
    shared_with: tuple[int, ...]
    lora_names: tuple[str, ...] = ()  # the LoRA adapters it serves, each a model name of its own
    external: bool = False  # its replicas are user-supplied endpoints: SSRF-guarded, and `model` is its model_id
    # Headers every upstream request carries (the external provider's API key): never printed.
    upstream_headers: dict[str, str] = field(default_factory=dict, repr=False)
    provider: str = ""  # its provider's name, a metric label
    stream_interval_ms: int = 0
    stream_interval_chunks: int = 0


def deployment_rows_list() -> list[DeploymentRow]:
    """Every serving deployment with its provider's kind and credentials, READY replicas and the organisations it is
    shared with (3 queries)."""
    deployments = list(
        ModelDeployment.objects.exclude(state__in=_GONE_STATES).values(
            "id",
            "organization_id",
            "served_model_name",
            "created_at",
            "price_input_per_mtok_micros",
            "price_output_per_mtok_micros",
            "connect_timeout_s",
            "first_byte_timeout_s",
            "idle_timeout_s",
            "stream_interval_ms",
            "stream_interval_chunks",
            "model_id",
            "engine_args",
            "pool__provider_id",
            "pool__provider__name",
            "pool__provider__kind",
            "pool__provider__credentials_encrypted",
        )
    )
    ids = [row["id"] for row in deployments]
    replicas: dict[int, list[tuple[int, str, dict[str, object]]]] = defaultdict(list)
    for replica in (
        Replica.objects.filter(deployment_id__in=ids, state=Replica.State.READY)
        .exclude(endpoint="")
        .order_by("id")
        .values("id", "deployment_id", "endpoint", "last_metrics")
    ):
        replicas[replica["deployment_id"]].append((replica["id"], replica["endpoint"], replica["last_metrics"] or {}))
    shares: dict[int, list[int]] = defaultdict(list)
    for share in ModelDeployment.shared_with.through.objects.filter(modeldeployment_id__in=ids).values(
        "modeldeployment_id", "organization_id"
    ):
        shares[share["modeldeployment_id"]].append(share["organization_id"])
    headers: dict[int, dict[str, str]] = {}  # by provider: each provider's credentials decrypted once per load
    for row in deployments:
        if row["pool__provider__kind"] == Provider.Kind.EXTERNAL and row["pool__provider_id"] not in headers:
            headers[row["pool__provider_id"]] = _external_headers(
                row["pool__provider_id"], row["pool__provider__credentials_encrypted"]
            )
    return [
        DeploymentRow(
            id=row["id"],
            organization_id=row["organization_id"],
            served_model_name=row["served_model_name"],
            model_id=row["model_id"],
            created=int(row["created_at"].timestamp()),
            price_input_per_mtok_micros=row["price_input_per_mtok_micros"],
            price_output_per_mtok_micros=row["price_output_per_mtok_micros"],
            connect_timeout_s=row["connect_timeout_s"],
            first_byte_timeout_s=row["first_byte_timeout_s"],
            idle_timeout_s=row["idle_timeout_s"],
            replicas=tuple(replicas.get(row["id"], ())),
            shared_with=tuple(shares.get(row["id"], ())),
            lora_names=lora_names(row["engine_args"]),
            external=row["pool__provider__kind"] == Provider.Kind.EXTERNAL,
            upstream_headers=headers.get(row["pool__provider_id"], {}),
            provider=row["pool__provider__name"],
            stream_interval_ms=row["stream_interval_ms"],
            stream_interval_chunks=row["stream_interval_chunks"],
        )
        for row in deployments
    ]


@dataclass(frozen=True, slots=True)
class ModelRouteRow:
    """One model route as the gateway needs it: its owner, name, split targets (deployment id, weight) and
    fallbacks (deployment ids, in order)."""

    organization_id: int
    name: str
    created: int
    splits: tuple[tuple[int, int], ...]
    fallbacks: tuple[int, ...]


def model_route_rows_list() -> list[ModelRouteRow]:
    """Every model route with its targets in order (2 queries)."""
    routes = list(ModelRoute.objects.order_by("id").values("id", "organization_id", "name", "created_at"))
    splits: dict[int, list[tuple[int, int]]] = defaultdict(list)
    fallbacks: dict[int, list[int]] = defaultdict(list)
    for target in ModelRouteTarget.objects.order_by("route_id", "position").values(
        "route_id", "deployment_id", "role", "weight"
    ):
        if target["role"] == ModelRouteTarget.Role.SPLIT:
            splits[target["route_id"]].append((target["deployment_id"], target["weight"]))
        else:
            fallbacks[target["route_id"]].append(target["deployment_id"])
    return [
        ModelRouteRow(
            organization_id=row["organization_id"],
            name=row["name"],
            created=int(row["created_at"].timestamp()),
            splits=tuple(splits.get(row["id"], ())),
            fallbacks=tuple(fallbacks.get(row["id"], ())),
        )
        for row in routes
    ]


def _external_headers(provider_id: int, token: str) -> dict[str, str]:
    """The headers an external provider's credentials put on every upstream request; none (and an error logged,
    without the token) when they cannot be decrypted, so that one bad row cannot stop the whole catalog."""
    from apps.compute.adapters.external import external_upstream_headers

    try:
        return external_upstream_headers(credentials_decrypt(token))
    except CredentialsError as error:
        logger.error("provider %s: %s; its deployments are called without an API key", provider_id, error)
        return {}


def metric_labels_live() -> LiveLabels:
    """The label values `/metrics` may show: model names of existing deployments (any state, with their LoRA
    adapters) and of model routes, replica ids, organisation slugs and provider names (5 single-column queries, once
    per scrape)."""
    models: set[str] = set()
    for name, engine_args in ModelDeployment.objects.values_list("served_model_name", "engine_args"):
        models.add(name)
        models.update(lora_names(engine_args))
    models.update(ModelRoute.objects.values_list("name", flat=True))
    return LiveLabels(
        models=frozenset(models),
        replicas=frozenset(str(pk) for pk in Replica.objects.values_list("pk", flat=True)),
        organizations=frozenset(Organization.objects.values_list("slug", flat=True)),
        providers=frozenset(Provider.objects.values_list("name", flat=True)),
    )
