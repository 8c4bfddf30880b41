"""`skypilot`: each replica is a SkyPilot cluster running vLLM, driven through a SkyPilot API server over HTTP.

The `skypilot` package is not installed (its pins conflict with Celery's): the adapter speaks the API server's
REST protocol, as sky/server/server.py and sky/server/requests/payloads.py define it. Every operation is a
request: `POST /launch`, `/status`, `/endpoints`, `/down` (and `/logs`, which streams) answer at once with an
`X-Skypilot-Request-ID` header; `GET /api/status?request_ids=...` says where a request stands without waiting,
`GET /api/get?request_id=...` waits for its result (`return_value`, JSON text).

The task YAML: `resources.accelerators` is the pool's `{gpu_type}:{gpus_per_node}`, `ports` vLLM's, `run` the
exact `vllm serve` command from engine.py (quoted with `shell_join`), `setup` installs vLLM (or only checks it
when `image_id` is a vLLM container). HF_TOKEN goes under `secrets:`, which SkyPilot keeps out of its logs and
dashboard; it still travels inside the launch request (the API server takes the task as YAML text), so the API
server must be reached over HTTPS. `skypilot_task_yaml` without the token is what tests and the console show.

Provider config: `api_server` (URL, required), `infra` (e.g. "aws", "gcp", "k8s/my-context"; "*" by default,
the pool's region appended), `use_spot`, `disk_size`, `image_id`, `vllm_version`, `setup` (replaces the default),
`labels`, `request_timeout_s`. Credentials: `token` (a service account token, sent as a Bearer token) and
`hf_token`.

With INFERIA_NODE_SERVER_URL set, the job also runs `inferia agent` in the background (pip-installed in the setup),
its node token among the task's secrets.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp
import jsonschema
import yaml
from django.conf import settings

from apps.compute.adapters.base import (
    AdapterError,
    ComputeAdapter,
    ProviderConfigError,
    ProvisionResult,
    ReplicaPhase,
    ReplicaStatus,
    engine_status_settle,
)
from apps.compute.adapters.http import HttpResponse, http_call
from apps.compute.engine import VLLM_DEFAULT_PORT, EngineSpec, shell_join, vllm_environment, vllm_serve_argv
from apps.compute.node_tokens import node_agent_handover
from inferia_runtime.node_agent import TOKEN_ENV

if TYPE_CHECKING:
    from apps.compute.models import ComputePool, Replica

SCHEMA_PATH = Path(__file__).parent / "schemas" / "skypilot_task.schema.json"
REQUEST_ID_HEADER = "X-Skypilot-Request-ID"
# SkyPilot's request states (sky/server/requests/requests.py RequestStatus).
REQUEST_ACTIVE = {"PENDING", "RUNNING"}
REQUEST_FAILED = {"FAILED", "CANCELLED"}
# Cluster names SkyPilot accepts (sky/utils/common_utils.py check_cluster_name_is_valid).
_CLUSTER_RE = re.compile(r"^[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$")
_GPU_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@cache
def skypilot_task_schema() -> dict[str, Any]:
    """The vendored subset of SkyPilot's task JSON schema (see the file's `$comment` for origin and license)."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def skypilot_cluster_name(replica: Replica) -> str:
    """The cluster's name: unique per replica, and valid for SkyPilot and every cloud's name rules."""
    return f"inferia-d{replica.deployment_id}-r{replica.pk}"


def _accelerators(pool: ComputePool, spec: EngineSpec) -> str:
    gpu_type = (pool.gpu_type or "").strip()
    if not _GPU_RE.fullmatch(gpu_type):
        raise ProviderConfigError(f"pool {pool.name}: a SkyPilot pool needs a GPU type such as H100 or A100-80GB")
    if pool.gpus_per_node < spec.gpus:
        raise ProviderConfigError(
            f"pool {pool.name} has {pool.gpus_per_node} GPU(s) per node; the deployment needs {spec.gpus}"
        )
    return f"{gpu_type}:{pool.gpus_per_node}"


def _setup(config: dict[str, Any]) -> str:
    if config.get("setup"):
        return str(config["setup"])
    if str(config.get("image_id", "")).startswith("docker:vllm/"):
        return "vllm --version"  # the vLLM image brings it
    version = str(config.get("vllm_version", "")).strip()
    if version and not re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version):
        raise ProviderConfigError(f"vllm_version {version!r} is not a version number")
    return shell_join(["pip", "install", f"vllm=={version}" if version else "vllm"])


def skypilot_task_build(
    *, replica: Replica, spec: EngineSpec, config: dict[str, Any], hf_token: str | None = None
) -> dict[str, Any]:
    """The SkyPilot task (as a dict) that runs `replica`: the pool's GPUs, vLLM's port, vLLM as the job."""
    pool = replica.pool
    infra = str(config.get("infra") or "*")
    if pool.region and infra.count("/") == 0 and not infra.lower().startswith(("k8s", "kubernetes")):
        infra = f"{infra}/{pool.region}"
    resources: dict[str, Any] = {
        "infra": infra,
        "accelerators": _accelerators(pool, spec),
        "ports": [VLLM_DEFAULT_PORT],
    }
    for key in ("use_spot", "disk_size", "image_id", "labels"):
        if key in config:
            resources[key] = config[key]
    envs = {"VLLM_NO_USAGE_STATS": "1", **vllm_environment(spec)}
    # exec: vLLM becomes the job's process, so its exit ends the job and SkyPilot sees it.
    run = "exec " + shell_join(vllm_serve_argv(spec, host="0.0.0.0", port=VLLM_DEFAULT_PORT))  # noqa: S104
    setup = _setup(config)
    secrets: dict[str, str] = {"HF_TOKEN": hf_token} if hf_token else {}
    handover = node_agent_handover(replica, engine_url=f"http://127.0.0.1:{VLLM_DEFAULT_PORT}")
    if handover is not None:
        # The agent runs beside vLLM in the job, in the background, its output in a file; the token is one of the
        # task's secrets (an environment variable SkyPilot does not show), the rest plain envs.
        envs.update(handover.public_environment())
        secrets[TOKEN_ENV] = handover.token
        setup += " && " + shell_join(["pip", "install", settings.INFERIA_AGENT_PIP_SPEC])
        run = "(inferia agent >> ~/inferia-agent.log 2>&1 &)\n" + run
    task: dict[str, Any] = {
        "name": skypilot_cluster_name(replica),
        "num_nodes": 1,
        "resources": resources,
        "envs": envs,
        "setup": setup,
        "run": run,
    }
    if secrets:
        task["secrets"] = secrets
    skypilot_task_validate(task)
    return task


def skypilot_task_validate(task: dict[str, Any]) -> None:
    """Raise AdapterError unless `task` passes SkyPilot's task schema (the vendored subset)."""
    try:
        jsonschema.validate(task, skypilot_task_schema())
    except jsonschema.ValidationError as error:
        raise AdapterError(f"SkyPilot task is invalid at {'/'.join(map(str, error.path))}: {error.message}") from None


def skypilot_task_yaml(task: dict[str, Any]) -> str:
    """The task as the YAML text `POST /launch` takes."""
    return yaml.safe_dump(task, sort_keys=False, default_flow_style=False)


class SkyPilotAdapter(ComputeAdapter):
    """Launches, watches and tears down one SkyPilot cluster per replica through the SkyPilot API server."""

    kind = "skypilot"

    @property
    def api_server(self) -> str:
        url = self.config_str("api_server").rstrip("/")
        if urlsplit(url).scheme not in ("http", "https"):
            raise ProviderConfigError("api_server must be an http(s) URL")
        return url

    def _headers(self) -> dict[str, str]:
        token = self.credentials().get("token")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _call(self, method: str, path: str, body: Any = None, *, timeout_s: float = 30.0) -> HttpResponse:
        try:
            response = http_call(
                method, self.api_server + path, json_body=body, headers=self._headers(), timeout_s=timeout_s
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise AdapterError(f"SkyPilot API server {path}: {type(error).__name__}") from None
        if response.status in (401, 403):
            raise ProviderConfigError(f"SkyPilot API server refused the token ({response.status})")
        return response

    def _schedule(self, path: str, body: dict[str, Any]) -> str:
        """POST a request; returns its request id."""
        response = self._call("POST", path, body)
        headers = {key.lower(): value for key, value in response.headers.items()}
        request_id = headers.get(REQUEST_ID_HEADER.lower())
        if response.status != 200 or not request_id:
            raise AdapterError(f"SkyPilot {path} answered {response.status}: {response.text[:300]}")
        return request_id

    def _result(self, request_id: str) -> Any:
        """Wait for a (short) request and return its decoded return value."""
        timeout = float(self.config.get("request_timeout_s", 120))
        response = self._call("GET", f"/api/get?request_id={quote(request_id)}", timeout_s=timeout)
        if response.status != 200:
            raise AdapterError(f"SkyPilot request {request_id} failed ({response.status}): {response.text[:500]}")
        value = response.json().get("return_value") or "null"
        return json.loads(value)

    def _request_state(self, request_id: str) -> dict[str, Any] | None:
        """A request's payload without waiting for it (None: the server no longer knows it)."""
        response = self._call("GET", f"/api/status?request_ids={quote(request_id)}&all_status=true")
        if response.status != 200:
            raise AdapterError(f"SkyPilot /api/status answered {response.status}")
        matches = [item for item in response.json() if item.get("request_id", "").startswith(request_id)]
        return matches[0] if matches else None

    def _cluster(self, name: str) -> dict[str, Any] | None:
        request_id = self._schedule("/status", {"cluster_names": [name], "refresh": "NONE", "all_users": True})
        clusters = self._result(request_id) or []
        return next((cluster for cluster in clusters if cluster.get("name") == name), None)

    def _active_launch(self, name: str) -> str | None:
        """The id of a launch of cluster `name` still pending or running (a re-run after a killed task)."""
        response = self._call("GET", f"/api/status?cluster_name={quote(name)}")
        if response.status != 200:
            raise AdapterError(f"SkyPilot /api/status answered {response.status}")
        for item in response.json():
            if item.get("name", "").endswith("launch") and item.get("status") in REQUEST_ACTIVE:
                return str(item["request_id"])
        return None

    def connection_check(self, *, timeout_s: float) -> str:
        response = self._call("GET", "/api/health", timeout_s=timeout_s)
        if response.status != 200:
            raise AdapterError(f"SkyPilot /api/health answered {response.status}")
        return "The SkyPilot API server answers and accepts the token."

    def provision(self, replica: Replica) -> ProvisionResult:
        name = skypilot_cluster_name(replica)
        spec = self.engine_spec(replica.deployment)
        hf_token = self.credentials().get("hf_token")
        task = skypilot_task_build(replica=replica, spec=spec, config=self.config, hf_token=hf_token)
        # Idempotent: a launch already under way, or a cluster already there, is taken over rather than doubled.
        request_id = self._active_launch(name)
        if request_id:
            messages = (f"launch of cluster {name} already under way ({request_id})",)
        elif self._cluster(name) is not None:
            request_id, messages = None, (f"cluster {name} already exists",)
        else:
            body = {"task": skypilot_task_yaml(task), "cluster_name": name, "retry_until_up": False}
            request_id = self._schedule("/launch", body)
            messages = (f"launching cluster {name} on {task['resources']['accelerators']} ({request_id})",)
        # The endpoint is known only once the cluster is up: status() reports it.
        return ProvisionResult(endpoint="", handle={"cluster": name, "launch_request": request_id}, messages=messages)

    def status(self, replica: Replica) -> ReplicaStatus:
        return engine_status_settle(self.node_status(replica))

    def node_status(self, replica: Replica) -> ReplicaStatus:
        handle = replica.provider_handle or {}
        name = handle.get("cluster")
        if not name:
            return ReplicaStatus(ReplicaPhase.STOPPED, "not provisioned")
        cluster = self._cluster(name)
        cluster_state = str((cluster or {}).get("status", ""))
        if cluster is None or cluster_state == "INIT":
            # Not up yet: the launch request says whether it is still coming or has failed.
            launch_id = handle.get("launch_request")
            # {}: the server has dropped the request from its history; the cluster says the rest.
            launch: dict[str, Any] = (self._request_state(launch_id) or {}) if launch_id else {}
            state = str(launch.get("status", ""))
            if state in REQUEST_FAILED:
                return ReplicaStatus(ReplicaPhase.FAILED, f"launch {state.lower()}: {_request_error(launch)}")
            if state in REQUEST_ACTIVE:
                return ReplicaStatus(ReplicaPhase.STARTING, f"launch {state.lower()}: {launch.get('status_msg') or ''}")
            if cluster is None:
                return ReplicaStatus(ReplicaPhase.FAILED, f"cluster {name} is gone")
            return ReplicaStatus(ReplicaPhase.STARTING, f"cluster {name} is INIT")
        if cluster_state != "UP":
            return ReplicaStatus(ReplicaPhase.FAILED, f"cluster {name} is {cluster_state or 'unknown'}")
        # The address is asked for once; afterwards the replica has it (the health check records it).
        endpoint = replica.endpoint or self._endpoint(name)
        return ReplicaStatus(ReplicaPhase.STARTING, f"cluster {name} UP", endpoint=endpoint, engine=endpoint)

    def _endpoint(self, name: str) -> str:
        ports = self._result(self._schedule("/endpoints", {"cluster": name, "port": VLLM_DEFAULT_PORT})) or {}
        url = ports.get(str(VLLM_DEFAULT_PORT)) if isinstance(ports, dict) else None
        if not url:
            raise AdapterError(f"cluster {name} has no endpoint for port {VLLM_DEFAULT_PORT} yet")
        return url if "://" in url else f"http://{url}"

    def logs(self, replica: Replica, tail: int = 200) -> str:
        name = (replica.provider_handle or {}).get("cluster")
        if not name:
            return ""
        # /logs streams the job's output; with follow off it ends at the last line.
        body = {"cluster_name": name, "job_id": None, "follow": False, "tail": tail}
        response = self._call("POST", "/logs", body, timeout_s=60)
        if response.status != 200:
            return f"(logs unavailable: {response.status})"
        return response.text

    def teardown(self, replica: Replica) -> None:
        name = (replica.provider_handle or {}).get("cluster") or skypilot_cluster_name(replica)
        _check_cluster_name(name)
        request_id = self._schedule("/down", {"cluster_name": name, "purge": False})
        timeout = float(self.config.get("request_timeout_s", 600))
        response = self._call("GET", f"/api/get?request_id={quote(request_id)}", timeout_s=timeout)
        if response.status == 200 or "ClusterDoesNotExist" in response.text or "does not exist" in response.text:
            return  # down, or already gone
        raise AdapterError(f"SkyPilot down of {name} failed ({response.status}): {response.text[:500]}")


def _check_cluster_name(name: str) -> None:
    if not _CLUSTER_RE.fullmatch(name):
        raise AdapterError(f"{name!r} is not a SkyPilot cluster name")


def _request_error(payload: dict[str, Any] | None) -> str:
    """A failed request's error message (SkyPilot stores it as JSON text with `type` and `message`)."""
    raw = (payload or {}).get("error") or ""
    try:
        error = json.loads(raw)
    except (TypeError, ValueError):
        return str(raw)[:500] or "no error recorded"
    if isinstance(error, dict):
        return f"{error.get('type', 'Error')}: {error.get('message', '')}"[:500]
    return str(error)[:500]
