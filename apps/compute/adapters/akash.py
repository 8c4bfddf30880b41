"""`akash`: the Akash SDL (Stack Definition Language, version 2.0) that runs one vLLM replica, and its validation.

Spec-validated, not run live: creating an Akash deployment is a transaction signed with the tenant's wallet, then
a bid to accept and a manifest to send to the winning provider; Inferia holds no wallet, so there is no Akash
adapter in the registry and the console does not offer the kind (see `SPEC_ONLY_KINDS` in the package).
What is here is exact and tested: the SDL is validated against Akash's published SDL JSON schema (vendored from
@akashnetwork/chain-sdk, see schemas/akash_sdl.schema.yaml) plus the cross-reference checks Akash's SDK runs after
the schema (validateSDL: placements, pricing, compute profiles, storage mounts, GPU attributes).

Provider config used by the SDL (the image is the deployment's): `cpu_units` (default 8), `memory`
(default 64Gi), `ephemeral_storage` (default 20Gi), `cache_storage` (default 200Gi, persistent, class beta3),
`gpu_interface` (pcie/sxm), `price_uakt` (default 100000 per block), `signed_by` (auditor addresses).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from apps.compute.adapters.base import AdapterError, ProviderConfigError
from apps.compute.engine import VLLM_DEFAULT_PORT, EngineSpec, vllm_environment, vllm_serve_args

if TYPE_CHECKING:
    from apps.compute.models import ComputePool

SCHEMA_PATH = Path(__file__).parent / "schemas" / "akash_sdl.schema.yaml"
SERVICE = "vllm"
PLACEMENT = "akash"
CACHE_MOUNT = "/root/.cache/huggingface"
_SIZE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
# "H100", "a100-80gb", "RTX4090": Akash's GPU model names are lower case; a trailing size is the GPU's RAM.
_GPU_RE = re.compile(r"^(?P<model>[a-z0-9]+?)(?:[-_](?P<ram>[0-9]+)gb?)?$")


class AkashSdlError(AdapterError):
    """An SDL that Akash would refuse."""


@cache
def akash_sdl_schema() -> dict[str, Any]:
    """Akash's SDL input schema (vendored; the file header gives origin and license)."""
    schema: dict[str, Any] = yaml.safe_load(SCHEMA_PATH.read_text())
    return schema


def _size(config: dict[str, Any], key: str, default: str) -> str:
    value = str(config.get(key, default))
    if not _SIZE_RE.fullmatch(value):
        raise ProviderConfigError(f"{key} {value!r} must be a size such as 64Gi")
    return value


def akash_gpu_attributes(pool: ComputePool, config: dict[str, Any]) -> dict[str, Any]:
    """The SDL's `gpu.attributes` for the pool's GPU type: `vendor: nvidia: - model: h100` (with `ram`, `interface`)."""
    match = _GPU_RE.fullmatch((pool.gpu_type or "").strip().lower())
    if not match:
        raise ProviderConfigError(f"pool {pool.name}: an Akash pool needs a GPU type such as H100 or A100-80GB")
    model: dict[str, str] = {"model": match["model"]}
    if match["ram"]:
        model["ram"] = f"{match['ram']}Gi"
    if config.get("gpu_interface"):
        model["interface"] = str(config["gpu_interface"])
    return {"vendor": {"nvidia": [model]}}


def akash_sdl_build(
    *, pool: ComputePool, spec: EngineSpec, config: dict[str, Any], hf_token: str | None = None
) -> dict[str, Any]:
    """The SDL (as a dict) that runs one vLLM replica of `spec` on one of the pool's GPU nodes, validated."""
    if pool.gpus_per_node < spec.gpus:
        raise ProviderConfigError(
            f"pool {pool.name} has {pool.gpus_per_node} GPU(s) per node; the deployment needs {spec.gpus}"
        )
    env = [f"{name}={value}" for name, value in {"VLLM_NO_USAGE_STATS": "1", **vllm_environment(spec)}.items()]
    if hf_token:
        # The manifest goes to the lease's provider only (the chain stores its hash), but the provider sees it.
        env.append(f"HF_TOKEN={hf_token}")
    placement: dict[str, Any] = {
        "pricing": {SERVICE: {"denom": "uakt", "amount": int(config.get("price_uakt", 100_000))}},
    }
    if config.get("signed_by"):
        placement["signedBy"] = {"anyOf": [str(address) for address in config["signed_by"]]}
    sdl: dict[str, Any] = {
        "version": "2.0",
        "services": {
            SERVICE: {
                "image": spec.container_image,
                "command": ["vllm", "serve"],
                "args": vllm_serve_args(spec, host="0.0.0.0", port=VLLM_DEFAULT_PORT),  # noqa: S104 - in the container
                "env": env,
                "expose": [{"port": VLLM_DEFAULT_PORT, "as": 80, "proto": "tcp", "to": [{"global": True}]}],
                "params": {"storage": {"model-cache": {"mount": CACHE_MOUNT, "readOnly": False}}},
            }
        },
        "profiles": {
            "compute": {
                SERVICE: {
                    "resources": {
                        "cpu": {"units": config.get("cpu_units", 8)},
                        "memory": {"size": _size(config, "memory", "64Gi")},
                        "gpu": {"units": spec.gpus, "attributes": akash_gpu_attributes(pool, config)},
                        "storage": [
                            {"size": _size(config, "ephemeral_storage", "20Gi")},
                            {
                                "name": "model-cache",
                                "size": _size(config, "cache_storage", "200Gi"),
                                "attributes": {"persistent": True, "class": "beta3"},
                            },
                        ],
                    }
                }
            },
            "placement": {PLACEMENT: placement},
        },
        "deployment": {SERVICE: {PLACEMENT: {"profile": SERVICE, "count": 1}}},
    }
    akash_sdl_validate(sdl)
    return sdl


def akash_sdl_yaml(sdl: dict[str, Any]) -> str:
    """The SDL as the YAML file `akash tx deployment create` and Akash Console take."""
    return yaml.safe_dump(sdl, sort_keys=False, default_flow_style=False)


def akash_sdl_validate(sdl: dict[str, Any]) -> None:
    """Raise AkashSdlError unless `sdl` passes Akash's SDL schema and the SDK's cross-reference checks."""
    try:
        jsonschema.validate(sdl, akash_sdl_schema())
    except jsonschema.ValidationError as error:
        path = "/".join(map(str, error.absolute_path))
        raise AkashSdlError(f"SDL is invalid at /{path}: {error.message}") from None
    errors = _relation_errors(sdl)
    if errors:
        raise AkashSdlError("; ".join(errors))


def _relation_errors(sdl: dict[str, Any]) -> list[str]:
    # The checks @akashnetwork/chain-sdk's validateSDL runs after the schema (the schema cannot express them).
    errors = []
    profiles = sdl["profiles"]
    for name, service in sdl["services"].items():
        placements = sdl["deployment"].get(name)
        if not placements:
            errors.append(f'service "{name}" is not in the deployment section')
            continue
        for placement_name, target in placements.items():
            placement = profiles["placement"].get(placement_name)
            compute = profiles["compute"].get(target["profile"])
            if placement is None:
                errors.append(f'placement "{placement_name}" is not defined')
            elif target["profile"] not in placement["pricing"]:
                errors.append(f'placement "{placement_name}" has no pricing for profile "{target["profile"]}"')
            if compute is None:
                errors.append(f'compute profile "{target["profile"]}" is not defined')
                continue
            resources = compute["resources"]
            storages = resources["storage"] if isinstance(resources["storage"], list) else [resources["storage"]]
            mounts = (service.get("params") or {}).get("storage") or {}
            names = {storage.get("name") for storage in storages}
            errors += [
                f'service "{name}" mounts undefined volume "{volume}"' for volume in mounts if volume not in names
            ]
            for storage in storages:
                persistent = str((storage.get("attributes") or {}).get("persistent", False)).lower() == "true"
                if persistent and not (mounts.get(storage.get("name") or "") or {}).get("mount"):
                    errors.append(f'persistent storage "{storage.get("name", "default")}" needs a mount path')
            gpu = resources.get("gpu")
            if gpu and str(gpu.get("units", 0)) not in ("0", "") and not (gpu.get("attributes") or {}).get("vendor"):
                errors.append(f'GPU units in profile "{target["profile"]}" need a vendor attribute')
    return errors
