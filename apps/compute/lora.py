"""LoRA adapters on a deployment: each one a model name of its own, served by the deployment's replicas.

What a deployment should serve lives in its engine arguments (`engine_args.lora_modules`, with `enable_lora`), so a
replica provisioned later starts with every adapter (vLLM's `--enable-lora --lora-modules name=path`; the simulator
serves each name). Replicas already running get an adapter at runtime: after commit, `deployment_lora_sync_run`
asks every READY replica's engine to load what is missing (`POST /v1/load_lora_adapter`) and to drop what was
removed (`POST /v1/unload_lora_adapter`), as vLLM does with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`. The sync is
idempotent, so it also runs when a replica becomes READY (it may have started from older arguments).

The gateway routes an adapter's name to its deployment's replicas with the name unchanged in the body (vLLM
selects the adapter by `model`), and policies govern it by that name like any model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from django.db import transaction

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_record
from apps.compute.adapters.http import http_call
from apps.compute.engine import engine_spec_build, model_name_valid
from apps.compute.enqueue import DEPLOYMENT_LORA_SYNC, task_send
from apps.compute.events import ReplicaAdaptersSynced
from apps.compute.models import ModelDeployment, Provider, Replica
from apps.compute.routing import endpoint_base
from inferia_runtime.errors import DomainRefusal
from inferia_runtime.events import event_publish

logger = logging.getLogger(__name__)

LORA_HTTP_TIMEOUT_S = 30.0  # loading reads the adapter's weights (from disk or the Hub) before answering


def lora_names(engine_args: Any) -> tuple[str, ...]:
    """The adapter names in a deployment's stored engine arguments (never raises: for readers such as the gateway's
    catalog, which must not fail on one odd row)."""
    modules = (engine_args or {}).get("lora_modules") if isinstance(engine_args, dict) else None
    if isinstance(modules, dict):
        names = list(modules)
    elif isinstance(modules, list):
        names = [module.get("name") for module in modules if isinstance(module, dict)]
    else:
        return ()
    return tuple(name for name in names if model_name_valid(name))


def _modules(engine_args: dict[str, Any]) -> list[dict[str, str]]:
    modules = engine_args.get("lora_modules") or []
    if isinstance(modules, dict):
        return [{"name": name, "path": path} for name, path in modules.items()]
    return [{"name": module["name"], "path": module.get("path", "")} for module in modules]


def _name_taken(deployment: ModelDeployment, name: str) -> bool:
    """Whether `name` already means something else to the deployment's owner: another deployment's served name or
    adapter (the gateway resolves a model name within the owner, so it must be unambiguous there)."""
    # organization_id None (a platform deployment) matches the other platform ones: Django reads it as IS NULL.
    owner = deployment.organization_id
    others = ModelDeployment.objects.filter(organization_id=owner).exclude(pk=deployment.pk)  # type: ignore[misc]
    if others.filter(served_model_name=name).exists():
        return True
    return any(name in lora_names(args) for args in others.values_list("engine_args", flat=True))


@transaction.atomic
def deployment_lora_add(
    *, deployment: ModelDeployment, name: str, path: str, actor: Actor, context: AuditContext | None = None
) -> ModelDeployment:
    """Serve the LoRA adapter at `path` (a Hub repo id or a path on the node) as model `name` on `deployment`:
    new replicas start with it, running ones load it after commit."""
    locked = ModelDeployment.objects.select_for_update().select_related("pool__provider").get(pk=deployment.pk)
    if locked.pool.provider.kind == Provider.Kind.EXTERNAL:
        raise DomainRefusal("an external deployment's adapters are its operator's to load; Inferia does not run it")
    args = dict(locked.engine_args or {})
    modules = _modules(args)
    if any(module["name"] == name for module in modules):
        raise DomainRefusal(f"the deployment already serves an adapter named {name!r}")
    if _name_taken(locked, name):
        raise DomainRefusal(f"{name!r} already names another model of this owner")
    args["lora_modules"] = [*modules, {"name": name, "path": path}]
    args["enable_lora"] = True
    engine_spec_build(model_id=locked.model_id, served_model_name=locked.served_model_name, engine_args=args)
    locked.engine_args = args
    locked.save(update_fields=["engine_args", "updated_at"])
    audit_record(
        action="deployment.lora_add", actor=actor, target=locked, changes={"name": name, "path": path}, context=context
    )
    transaction.on_commit(lambda: enqueue_lora_sync(locked.pk))
    return locked


@transaction.atomic
def deployment_lora_remove(
    *, deployment: ModelDeployment, name: str, actor: Actor, context: AuditContext | None = None
) -> ModelDeployment:
    """Stop serving adapter `name`: it leaves routing at once, running replicas unload it after commit."""
    locked = ModelDeployment.objects.select_for_update().get(pk=deployment.pk)
    args = dict(locked.engine_args or {})
    modules = _modules(args)
    kept = [module for module in modules if module["name"] != name]
    if len(kept) == len(modules):
        raise DomainRefusal(f"the deployment has no adapter named {name!r}")
    args["lora_modules"] = kept  # enable_lora stays: the engines keep their LoRA capacity for the next one
    locked.engine_args = args
    locked.save(update_fields=["engine_args", "updated_at"])
    audit_record(action="deployment.lora_remove", actor=actor, target=locked, changes={"name": name}, context=context)
    transaction.on_commit(lambda: enqueue_lora_sync(locked.pk))
    return locked


def enqueue_lora_sync(deployment_id: int) -> None:
    """Ask the worker to bring the deployment's running replicas in line with its adapters."""
    task_send(DEPLOYMENT_LORA_SYNC, deployment_id)  # when the broker is down, the next READY replica syncs again


@dataclass
class LoraSyncReport:
    """What a sync did, per replica id: adapters loaded and unloaded, and errors (kept as the replica's last error)."""

    loaded: dict[int, list[str]] = field(default_factory=dict)
    unloaded: dict[int, list[str]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


def _post(base: str, path: str, body: dict[str, str]) -> tuple[int, str]:
    response = http_call("POST", base + path, json_body=body, timeout_s=LORA_HTTP_TIMEOUT_S)
    return response.status, response.text


def replica_lora_sync(*, base: str, served_model_name: str, wanted: dict[str, str]) -> tuple[list[str], list[str]]:
    """Make the engine at `base` serve exactly the adapters `wanted` (name -> path); returns (loaded, unloaded).

    Reads `GET /v1/models`: adapters are the cards with a `parent`; a name the engine serves as the base model
    (the simulator's start-up names) counts as present. Raises RuntimeError naming the first refusal."""
    response = http_call("GET", base + "/v1/models", timeout_s=LORA_HTTP_TIMEOUT_S)
    if response.status != 200:
        raise RuntimeError(f"/v1/models answered {response.status}")
    cards = response.json().get("data", [])
    served = {card.get("id") for card in cards}
    runtime = {card.get("id") for card in cards if card.get("parent")}
    loaded, unloaded = [], []
    for name, path in wanted.items():
        if name in served:
            continue
        status, text = _post(base, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if status != 200 and "already been loaded" not in text:
            raise RuntimeError(f"loading LoRA {name} answered {status}: {text[:300]}")
        loaded.append(name)
    for name in sorted(runtime - set(wanted) - {served_model_name}):
        status, text = _post(base, "/v1/unload_lora_adapter", {"lora_name": name})
        if status not in (200, 404):  # 404: gone already
            raise RuntimeError(f"unloading LoRA {name} answered {status}: {text[:300]}")
        unloaded.append(name)
    return loaded, unloaded


def deployment_lora_sync_run(*, deployment_id: int) -> LoraSyncReport:
    """Sync the adapters of every READY replica of a deployment Inferia runs (endpoints it started are trusted, so
    no SSRF guard); a replica that refuses keeps the error as its last error and is retried on the next sync."""
    report = LoraSyncReport()
    deployment = ModelDeployment.objects.select_related("pool__provider").filter(pk=deployment_id).first()
    if deployment is None or deployment.pool.provider.kind == Provider.Kind.EXTERNAL:
        return report
    wanted = {module["name"]: module["path"] for module in _modules(deployment.engine_args or {})}
    replicas = Replica.objects.filter(deployment=deployment, state=Replica.State.READY).exclude(endpoint="")
    for replica in replicas:
        try:
            loaded, unloaded = replica_lora_sync(
                base=endpoint_base(replica.endpoint), served_model_name=deployment.served_model_name, wanted=wanted
            )
        except (RuntimeError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
            report.errors[replica.pk] = f"LoRA sync: {error}"[:2000]
            Replica.objects.filter(pk=replica.pk).update(last_error=report.errors[replica.pk])
            continue
        report.loaded[replica.pk], report.unloaded[replica.pk] = loaded, unloaded
    if any(report.loaded.values()) or any(report.unloaded.values()):
        event_publish(ReplicaAdaptersSynced(deployment_id=deployment.pk))
    return report
