"""`nosana`: the Nosana job definition that runs one vLLM replica, and its validation.

Spec-validated, not run live: posting a Nosana job is a Solana transaction signed with the poster's wallet (the
SDK's `listJob`), so there is no Nosana adapter in the registry and the console does not offer the kind (see
`SPEC_ONLY_KINDS` in the package). The job definition is validated against the JSON schema that @nosana/sdk
publishes for its `JobDefinition` type (vendored: schemas/nosana_job.schema.json), plus the checks the SDK's typia
validator adds beyond that schema (unique op ids, unique exposed ports, no unknown top-level keys).

A job definition is uploaded to IPFS, where anyone can read it: it never carries the Hugging Face token, so only
models that download without one can run on Nosana from Inferia. Nor does it carry a node token for `inferia agent`
(whoever read it could push heartbeats for the replica): Nosana replicas are judged by polling alone.

Provider config used by the job (the image is the deployment's): `required_vram` (GB, optional).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from apps.compute.adapters.base import AdapterError, ProviderConfigError
from apps.compute.engine import VLLM_DEFAULT_PORT, EngineSpec, vllm_environment, vllm_serve_args

SCHEMA_PATH = Path(__file__).parent / "schemas" / "nosana_job.schema.json"
OP_ID = "vllm"


class NosanaJobError(AdapterError):
    """A job definition that Nosana's SDK would refuse."""


@cache
def nosana_job_schema() -> dict[str, Any]:
    """@nosana/sdk's JobDefinition schema (vendored; its `$comment` gives origin and license)."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def nosana_job_build(*, spec: EngineSpec, config: dict[str, Any]) -> dict[str, Any]:
    """The job definition (as a dict) that serves `spec` with vLLM on one Nosana GPU node, validated."""
    if spec.gpus != 1:
        # A job definition cannot ask for a GPU count (only `gpu: true`), so a multi-GPU node cannot be assumed.
        raise ProviderConfigError(
            "Nosana jobs cannot ask for several GPUs: tensor and pipeline parallel size must be 1"
        )
    args: dict[str, Any] = {
        "image": spec.container_image,
        "entrypoint": ["vllm", "serve"],
        "cmd": vllm_serve_args(spec, host="0.0.0.0", port=VLLM_DEFAULT_PORT),  # noqa: S104 - in the container
        "gpu": True,
        "env": {"VLLM_NO_USAGE_STATS": "1", **vllm_environment(spec)},
        "expose": [
            {
                "port": VLLM_DEFAULT_PORT,
                "type": "api",
                "health_checks": [
                    {"type": "http", "path": "/health", "method": "GET", "expected_status": 200, "continuous": True}
                ],
            }
        ],
    }
    if "required_vram" in config:
        vram = config["required_vram"]
        if isinstance(vram, bool) or not isinstance(vram, int | float) or vram <= 0:
            raise ProviderConfigError("required_vram must be a number of GB")
        args["required_vram"] = vram
    job = {
        "version": "0.1",
        "type": "container",
        "meta": {"trigger": "inferia"},
        "ops": [{"type": "container/run", "id": OP_ID, "args": args}],
    }
    nosana_job_validate(job)
    return job


def nosana_job_validate(job: dict[str, Any]) -> None:
    """Raise NosanaJobError unless `job` passes the SDK's JobDefinition schema and its extra checks."""
    schema = nosana_job_schema()
    try:
        jsonschema.validate(job, schema)
    except jsonschema.ValidationError as error:
        path = "/".join(map(str, error.absolute_path))
        raise NosanaJobError(f"job definition is invalid at /{path}: {error.message[:300]}") from None
    # What the SDK's typia validator checks beyond the schema (its tags): see @nosana/sdk dist/types/job.d.ts.
    known = set(schema["components"]["schemas"]["JobDefinition"]["properties"])
    if set(job) - known:
        raise NosanaJobError(f"unknown job keys: {', '.join(sorted(set(job) - known))}")
    ids = [op["id"] for op in job["ops"]]
    if len(set(ids)) != len(ids):
        raise NosanaJobError("op ids must be unique")
    for op in job["ops"]:
        expose = op["args"].get("expose") if isinstance(op["args"], dict) else None
        if isinstance(expose, list):
            ports = [item["port"] if isinstance(item, dict) else item for item in expose]
            if len(set(map(str, ports))) != len(ports):
                raise NosanaJobError(f"op {op['id']}: exposed ports must be unique")
