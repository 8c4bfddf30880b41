"""The SkyPilot adapter: its task YAML checked against SkyPilot's task schema, its calls checked against a fake API
server that speaks the real endpoints, bodies and request-id protocol (sky/server/server.py, payloads.py)."""

from __future__ import annotations

import json
import shlex
import uuid
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml

from apps.compute.adapters import ReplicaPhase, adapter_for, supported_kinds
from apps.compute.adapters.base import AdapterError, ProviderConfigError
from apps.compute.adapters.skypilot import (
    REQUEST_ID_HEADER,
    skypilot_cluster_name,
    skypilot_task_build,
    skypilot_task_schema,
    skypilot_task_yaml,
)
from apps.compute.engine import deployment_engine_spec, vllm_serve_argv
from apps.compute.health import replica_health_apply, replica_probe
from apps.compute.models import Provider, Replica
from apps.compute.node_tokens import node_token
from tests.compute.fakes import FakeServer

ENGINE_ARGS = {"tensor_parallel_size": 2, "max_model_len": 8192, "enable_lora": True}
POOL = {"gpu_type": "H100", "gpus_per_node": 2, "region": "us-east-1"}
CONFIG = {"infra": "aws", "use_spot": False, "disk_size": 256}
TOKEN = "sky_service_account_token"


@pytest.fixture
def sky_replica(make_replica):
    def make(api_server="http://sky.invalid", credentials=None, pool=None):
        return make_replica(
            Provider.Kind.SKYPILOT,
            config={**CONFIG, "api_server": api_server},
            credentials=credentials if credentials is not None else {"token": TOKEN, "hf_token": "hf_secret"},
            engine_args=ENGINE_ARGS,
            model_id="meta-llama/Llama-3.1-8B-Instruct",
            served="llama-8b",
            pool=pool or POOL,
        )

    return make


@pytest.mark.django_db
def test_the_task_asks_for_the_pools_gpus_and_runs_the_exact_vllm_command(sky_replica):
    replica = sky_replica()
    spec = deployment_engine_spec(replica.deployment)
    task = skypilot_task_build(replica=replica, spec=spec, config=CONFIG)
    parsed = yaml.safe_load(skypilot_task_yaml(task))
    jsonschema.validate(parsed, skypilot_task_schema())

    assert parsed["resources"] == {
        "infra": "aws/us-east-1",
        "accelerators": "H100:2",
        "ports": [8000],
        "use_spot": False,
        "disk_size": 256,
    }
    assert parsed["num_nodes"] == 1
    assert parsed["run"].startswith("exec ")
    assert shlex.split(parsed["run"])[1:] == vllm_serve_argv(spec, host="0.0.0.0", port=8000)  # noqa: S104
    assert parsed["setup"] == "pip install vllm"
    assert parsed["envs"] == {"VLLM_NO_USAGE_STATS": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    assert "secrets" not in parsed
    assert "HF_TOKEN" not in skypilot_task_yaml(task)


@pytest.mark.django_db
def test_the_hf_token_goes_under_secrets_not_envs(sky_replica):
    replica = sky_replica()
    task = skypilot_task_build(
        replica=replica, spec=deployment_engine_spec(replica.deployment), config=CONFIG, hf_token="hf_x"
    )
    assert task["secrets"] == {"HF_TOKEN": "hf_x"}
    assert "HF_TOKEN" not in task["envs"]


@pytest.mark.django_db
def test_where_nodes_push_heartbeats_the_job_runs_the_agent_with_its_token_among_the_secrets(sky_replica, settings):
    settings.INFERIA_NODE_SERVER_URL = "https://inferia.example.com"
    replica = sky_replica()

    task = skypilot_task_build(replica=replica, spec=deployment_engine_spec(replica.deployment), config=CONFIG)

    assert task["secrets"] == {"INFERIA_NODE_TOKEN": node_token(replica)}
    assert task["envs"]["INFERIA_SERVER_URL"] == "https://inferia.example.com"
    assert task["envs"]["INFERIA_AGENT_ENGINE_URL"] == "http://127.0.0.1:8000"
    assert node_token(replica) not in json.dumps(task["envs"]) + task["run"] + task["setup"]
    assert task["run"].startswith("(inferia agent >> ~/inferia-agent.log 2>&1 &)\nexec vllm serve")
    assert task["setup"].endswith("pip install inferia")


@pytest.mark.django_db
def test_without_a_server_url_for_nodes_the_job_runs_no_agent(sky_replica, settings):
    settings.INFERIA_NODE_SERVER_URL = ""
    replica = sky_replica()

    task = skypilot_task_build(replica=replica, spec=deployment_engine_spec(replica.deployment), config=CONFIG)

    assert "inferia agent" not in task["run"]
    assert "INFERIA_NODE_TOKEN" not in skypilot_task_yaml(task)


def test_the_vendored_schema_refuses_what_skypilot_refuses():
    schema = skypilot_task_schema()
    for bad in (
        {"resources": {"acelerators": "H100:1"}},  # a misspelt key
        {"envs": {"1BAD": "x"}},  # not an env var name
        {"run": ["vllm", "serve"]},  # run is a string
        {"num_nodes": "1"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


@pytest.mark.django_db
def test_a_pool_without_a_gpu_type_or_with_too_few_gpus_is_a_config_error(sky_replica, make_replica):
    replica = sky_replica(pool={"gpu_type": "", "gpus_per_node": 2})
    spec = deployment_engine_spec(replica.deployment)
    with pytest.raises(ProviderConfigError, match="GPU type"):
        skypilot_task_build(replica=replica, spec=spec, config=CONFIG)
    replica.pool.gpu_type, replica.pool.gpus_per_node = "A100", 1
    with pytest.raises(ProviderConfigError, match="needs 2"):
        skypilot_task_build(replica=replica, spec=spec, config=CONFIG)


@pytest.mark.django_db
def test_a_docker_vllm_image_needs_no_install(sky_replica):
    replica = sky_replica()
    config = {**CONFIG, "image_id": "docker:vllm/vllm-openai:v0.11.0"}
    task = skypilot_task_build(replica=replica, spec=deployment_engine_spec(replica.deployment), config=config)
    assert task["setup"] == "vllm --version"
    assert task["resources"]["image_id"] == "docker:vllm/vllm-openai:v0.11.0"


class FakeSkyPilot:
    """The slice of the SkyPilot API server the adapter uses: requests with ids, clusters, endpoints and logs."""

    def __init__(self):
        self.requests = {}  # request id -> payload (RequestPayload fields)
        self.clusters = {}  # name -> status
        self.launch_state = "RUNNING"
        self.server = FakeServer(
            {
                ("POST", "/launch"): self.launch,
                ("POST", "/status"): self.status,
                ("POST", "/endpoints"): self.endpoints,
                ("POST", "/down"): self.down,
                ("POST", "/logs"): self.logs,
                ("GET", "/api/get"): self.api_get,
                ("GET", "/api/status"): self.api_status,
                ("GET", "/health"): lambda exchange: (200, ""),  # the vLLM engine, on the same fake
            }
        )

    def check_auth(self, exchange):
        assert exchange.headers.get("authorization") == f"Bearer {TOKEN}", "bad bearer token"

    def schedule(self, name, *, cluster=None, value=None, error=None, status="SUCCEEDED"):
        request_id = uuid.uuid4().hex
        self.requests[request_id] = {
            "request_id": request_id,
            "name": f"sky.{name}",
            "entrypoint": "",
            "request_body": "{}",
            "status": status,
            "created_at": 0.0,
            "user_id": "inferia",
            "return_value": json.dumps(value),
            "error": json.dumps(error) if error else "",
            "pid": None,
            "schedule_type": "short",
            "cluster_name": cluster,
            "status_msg": None,
        }
        return 200, None, {REQUEST_ID_HEADER: request_id}

    def launch(self, exchange):
        self.check_auth(exchange)
        body = exchange.body
        assert set(body) <= {"task", "cluster_name", "retry_until_up"}, body
        task = yaml.safe_load(body["task"])
        jsonschema.validate(task, skypilot_task_schema())
        assert task["secrets"] == {"HF_TOKEN": "hf_secret"}
        assert task["resources"]["accelerators"] == "H100:2"
        self.clusters[body["cluster_name"]] = "INIT"
        self.launched = body
        return self.schedule("launch", cluster=body["cluster_name"], status=self.launch_state)

    def status(self, exchange):
        self.check_auth(exchange)
        assert exchange.body["refresh"] == "NONE"
        names = exchange.body["cluster_names"]
        value = [{"name": name, "status": self.clusters[name]} for name in names if name in self.clusters]
        return self.schedule("status", value=value)

    def endpoints(self, exchange):
        self.check_auth(exchange)
        assert exchange.body["port"] == 8000
        assert exchange.body["cluster"] in self.clusters
        address = self.server.url.removeprefix("http://")
        return self.schedule("endpoints", cluster=exchange.body["cluster"], value={"8000": address})

    def down(self, exchange):
        self.check_auth(exchange)
        assert exchange.body == {"cluster_name": exchange.body["cluster_name"], "purge": False}
        if self.clusters.pop(exchange.body["cluster_name"], None) is None:
            error = {"type": "ClusterDoesNotExist", "message": "Cluster does not exist."}
            return self.schedule("down", error=error, status="FAILED")
        return self.schedule("down", value=None)

    def logs(self, exchange):
        self.check_auth(exchange)
        assert exchange.body["follow"] is False
        assert exchange.body["tail"] == 50
        return 200, "INFO loading weights\nINFO Application startup complete.\n"

    def query(self, exchange):
        return parse_qs(urlsplit(exchange.path).query)

    def api_get(self, exchange):
        self.check_auth(exchange)
        payload = self.requests.get(self.query(exchange)["request_id"][0])
        if payload is None:
            return 404, {"detail": "not found"}
        if payload["error"]:
            return 500, {"detail": payload}
        return 200, payload

    def api_status(self, exchange):
        self.check_auth(exchange)
        query = self.query(exchange)
        if "request_ids" in query:
            wanted = query["request_ids"]
            return 200, [p for p in self.requests.values() if p["request_id"] in wanted]
        (cluster,) = query["cluster_name"]
        active = [p for p in self.requests.values() if p["cluster_name"] == cluster]
        return 200, [p for p in active if p["status"] in ("PENDING", "RUNNING")]


@pytest.fixture
def sky():
    fake = FakeSkyPilot()
    yield fake
    fake.server.close()


@pytest.mark.django_db
def test_provision_status_logs_and_teardown_speak_the_skypilot_api(sky_replica, sky):
    replica = sky_replica(api_server=sky.server.url)
    name = skypilot_cluster_name(replica)
    adapter = adapter_for(replica.deployment.pool.provider)

    result = adapter.provision(replica)
    assert result.handle["cluster"] == name
    launch_id = result.handle["launch_request"]
    assert sky.requests[launch_id]["name"] == "sky.launch"
    assert sky.launched["cluster_name"] == name
    assert sky.launched["retry_until_up"] is False
    # A re-run (the task was killed after POST /launch) takes the launch over instead of launching twice.
    again = adapter.provision(replica)
    assert again.handle["launch_request"] == launch_id
    assert "already under way" in again.messages[0]
    replica.provider_handle = result.handle

    assert adapter.status(replica).phase == ReplicaPhase.STARTING
    sky.requests[launch_id]["status"] = "SUCCEEDED"
    sky.clusters[name] = "UP"
    ready = adapter.status(replica)
    assert ready.phase == ReplicaPhase.READY
    assert ready.endpoint == sky.server.url
    # With the launch done and the cluster there, provisioning again launches nothing.
    assert "already exists" in adapter.provision(replica).messages[0]

    assert "startup complete" in adapter.logs(replica, tail=50)

    adapter.teardown(replica)
    assert sky.clusters == {}
    adapter.teardown(replica)  # ClusterDoesNotExist: already gone
    assert adapter.status(replica).phase == ReplicaPhase.FAILED
    assert sky.server.errors == []
    assert sum(1 for exchange in sky.server.exchanges if exchange.path == "/launch") == 1


@pytest.mark.django_db
def test_a_failed_launch_fails_the_replica_with_skypilots_reason(sky_replica, sky):
    replica = sky_replica(api_server=sky.server.url)
    adapter = adapter_for(replica.deployment.pool.provider)
    replica.provider_handle = adapter.provision(replica).handle
    payload = sky.requests[replica.provider_handle["launch_request"]]
    payload.update(status="FAILED", error=json.dumps({"type": "ResourcesUnavailableError", "message": "no H100"}))
    status = adapter.status(replica)
    assert status.phase == ReplicaPhase.FAILED
    assert "ResourcesUnavailableError: no H100" in status.detail


@pytest.mark.django_db
def test_the_health_check_records_the_endpoint_skypilot_reports(sky_replica, sky):
    replica = sky_replica(api_server=sky.server.url)
    adapter = adapter_for(replica.deployment.pool.provider)
    result = adapter.provision(replica)
    sky.requests[result.handle["launch_request"]]["status"] = "SUCCEEDED"
    sky.clusters[skypilot_cluster_name(replica)] = "UP"
    Replica.objects.filter(pk=replica.pk).update(
        state=Replica.State.STARTING, provider_handle=result.handle, endpoint=""
    )
    replica = Replica.objects.select_related("deployment__pool__provider").get(pk=replica.pk)

    probe = replica_probe(replica)
    assert probe.phase == ReplicaPhase.READY
    assert probe.endpoint == sky.server.url
    assert replica_health_apply(replica=replica, probe=probe) == "healthy"
    replica.refresh_from_db()
    assert replica.endpoint == sky.server.url
    assert replica.state == Replica.State.READY
    # Known now: later checks do not ask SkyPilot for it again.
    assert replica_probe(replica).phase == ReplicaPhase.READY
    assert sum(1 for exchange in sky.server.exchanges if exchange.path == "/endpoints") == 1


@pytest.mark.django_db
def test_a_wrong_token_is_a_config_error(sky_replica, sky):
    replica = sky_replica(api_server=sky.server.url, credentials={"token": "wrong"})
    sky.server.routes[("GET", "/api/status")] = lambda exchange: (401, {"detail": "unauthorized"})
    with pytest.raises(ProviderConfigError, match="token"):
        adapter_for(replica.deployment.pool.provider).provision(replica)


@pytest.mark.django_db
def test_an_unreachable_api_server_is_an_adapter_error(sky_replica):
    replica = sky_replica(api_server="http://127.0.0.1:9")
    with pytest.raises(AdapterError, match="SkyPilot API server"):
        adapter_for(replica.deployment.pool.provider).provision(replica)


def test_skypilot_is_offered():
    assert "skypilot" in supported_kinds()
