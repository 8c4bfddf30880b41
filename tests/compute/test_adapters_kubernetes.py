"""The Kubernetes adapter: objects validated by the official client's models, HTTP calls checked against a fake
API server that speaks the real paths, methods and bodies."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from kubernetes import client as k8s

from apps.compute.adapters import ReplicaPhase, adapter_for
from apps.compute.adapters.base import AdapterError, ProviderConfigError
from apps.compute.adapters.kubernetes import (
    kubernetes_deployment_build,
    kubernetes_service_build,
    replica_object_name,
)
from apps.compute.engine import deployment_engine_spec, vllm_serve_args
from apps.compute.models import Provider
from apps.compute.node_tokens import node_token
from tests.compute.fakes import FakeServer

NS = "llm"
ENGINE_ARGS = {"tensor_parallel_size": 2, "max_model_len": 8192, "dtype": "bfloat16"}
CONFIG = {"namespace": NS, "cache_pvc": "hf-cache", "hf_token_secret": "hf", "node_selector": {"gpu": "a100"}}


def round_trip(obj, kind):
    """Serialise as the client sends it, then parse it back as the client would parse a server's answer."""
    api = k8s.ApiClient()
    wire = api.sanitize_for_serialization(obj)
    parsed = api.deserialize(SimpleNamespace(data=json.dumps(wire)), kind)
    return wire, parsed


@pytest.fixture
def k8s_replica(make_replica):
    return make_replica(
        Provider.Kind.KUBERNETES,
        config=CONFIG,
        engine_args=ENGINE_ARGS,
        model_id="meta-llama/Llama-3.1-70B",
        served="llama-70b",
    )


@pytest.mark.django_db
def test_the_deployment_manifest_is_a_valid_v1_deployment_running_vllm_on_gpus(k8s_replica):
    spec = deployment_engine_spec(k8s_replica.deployment)
    obj = kubernetes_deployment_build(replica=k8s_replica, spec=spec, namespace=NS, config=CONFIG)
    wire, parsed = round_trip(obj, "V1Deployment")
    assert parsed == obj

    assert wire["apiVersion"] == "apps/v1"
    assert wire["metadata"] == {
        "name": replica_object_name(k8s_replica),
        "namespace": NS,
        "labels": wire["metadata"]["labels"],
    }
    pod = wire["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("vllm/vllm-openai:")
    assert container["command"] == ["vllm", "serve"]
    assert container["args"] == vllm_serve_args(spec, host="0.0.0.0", port=8000)  # noqa: S104
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["ports"] == [{"containerPort": 8000, "name": "http", "protocol": "TCP"}]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"key": "token", "name": "hf"}}} in container["env"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hf-cache"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    assert pod["nodeSelector"] == {"gpu": "a100"}
    selector = wire["spec"]["selector"]["matchLabels"]
    assert selector.items() <= wire["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.django_db
def test_the_service_manifest_selects_the_replica_pod_on_the_http_port(k8s_replica):
    obj = kubernetes_service_build(replica=k8s_replica, namespace=NS, config=CONFIG)
    wire, parsed = round_trip(obj, "V1Service")
    assert parsed == obj
    assert wire["spec"]["selector"] == {"inferia.io/replica": str(k8s_replica.pk)}
    assert wire["spec"]["ports"] == [{"name": "http", "port": 8000, "protocol": "TCP", "targetPort": "http"}]


def test_the_client_models_refuse_what_kubernetes_would():
    with pytest.raises(ValueError, match="name"):
        k8s.V1Container(name=None, image="x")


@pytest.mark.django_db
def test_bad_tolerations_are_a_config_error(k8s_replica):
    spec = deployment_engine_spec(k8s_replica.deployment)
    with pytest.raises(ProviderConfigError):
        kubernetes_deployment_build(replica=k8s_replica, spec=spec, namespace=NS, config={"tolerations": [{"x": 1}]})


class FakeCluster:
    """The slice of the Kubernetes API the adapter uses, keeping objects in memory and checking every request."""

    def __init__(self):
        self.objects = {}
        self.ready = 0
        self.waiting_reason = None
        base_apps, base_core = f"/apis/apps/v1/namespaces/{NS}", f"/api/v1/namespaces/{NS}"
        self.name = None
        routes = {
            ("POST", f"{base_apps}/deployments"): self.create("deployments", "V1Deployment"),
            ("POST", f"{base_core}/services"): self.create("services", "V1Service"),
            ("POST", f"{base_core}/secrets"): self.create("secrets", "V1Secret"),
            ("GET", f"{base_core}/pods"): self.pods,
            ("GET", f"{base_core}/events"): self.events,
        }
        self.server = FakeServer(routes)
        self.base_apps, self.base_core = base_apps, base_core

    def route_object(self, name):
        self.name = name
        self.server.routes.update(
            {
                ("GET", f"{self.base_apps}/deployments/{name}"): self.read,
                ("DELETE", f"{self.base_apps}/deployments/{name}"): self.delete("deployments"),
                ("DELETE", f"{self.base_core}/services/{name}"): self.delete("services"),
                ("DELETE", f"{self.base_core}/secrets/{name}-node"): self.delete("secrets", f"{name}-node"),
                ("GET", f"{self.base_core}/pods/{name}-abc/log"): lambda e: (200, "INFO loading weights\nINFO ready\n"),
            }
        )

    def check_auth(self, exchange):
        assert exchange.headers.get("authorization") == "Bearer cluster-token", "bad bearer token"

    def create(self, collection, kind):
        def handler(exchange):
            self.check_auth(exchange)
            obj = k8s.ApiClient().deserialize(SimpleNamespace(data=json.dumps(exchange.body)), kind)
            assert obj.metadata.namespace == NS
            assert obj.metadata.name
            key = (collection, obj.metadata.name)
            if key in self.objects:
                return 409, {"kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409}
            self.objects[key] = exchange.body
            return 201, exchange.body

        return handler

    def read(self, exchange):
        self.check_auth(exchange)
        body = self.objects.get(("deployments", self.name))
        if body is None:
            return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
        return 200, {**body, "status": {"replicas": 1, "readyReplicas": self.ready}}

    def pods(self, exchange):
        self.check_auth(exchange)
        assert "labelSelector=inferia.io%2Freplica%3D" in exchange.path, exchange.path
        if ("deployments", self.name) not in self.objects:
            return 200, {"kind": "PodList", "items": []}
        state = {"waiting": {"reason": self.waiting_reason}} if self.waiting_reason else {"running": {}}
        pod = {
            "metadata": {"name": f"{self.name}-abc"},
            "status": {
                "phase": "Running" if self.ready else "Pending",
                "containerStatuses": [
                    {
                        "name": "vllm",
                        "image": "x",
                        "imageID": "",
                        "ready": bool(self.ready),
                        "restartCount": 0,
                        "state": state,
                    }
                ],
            },
        }
        return 200, {"kind": "PodList", "items": [pod]}

    def events(self, exchange):
        assert "fieldSelector=involvedObject.name%3D" in exchange.path, exchange.path
        event = {
            "metadata": {"name": "e1"},
            "involvedObject": {"name": f"{self.name}-abc"},
            "type": "Warning",
            "reason": "FailedScheduling",
            "message": "0/3 nodes have enough nvidia.com/gpu",
        }
        return 200, {"kind": "EventList", "items": [event]}

    def delete(self, collection, name=None):
        def handler(exchange):
            self.check_auth(exchange)
            assert exchange.body["propagationPolicy"] == "Foreground"
            if self.objects.pop((collection, name or self.name), None) is None:
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
            return 200, {"kind": "Status", "status": "Success"}

        return handler


@pytest.fixture
def cluster():
    fake = FakeCluster()
    yield fake
    fake.server.close()


@pytest.mark.django_db
def test_provision_status_logs_and_teardown_speak_the_kubernetes_api(make_replica, cluster):
    replica = make_replica(
        Provider.Kind.KUBERNETES,
        config={"namespace": NS},
        credentials={"host": cluster.server.url, "token": "cluster-token"},
        engine_args=ENGINE_ARGS,
        served="llama",
    )
    name = replica_object_name(replica)
    cluster.route_object(name)
    adapter = adapter_for(replica.deployment.pool.provider)

    result = adapter.provision(replica)
    assert result.endpoint == f"http://{name}.{NS}.svc.cluster.local:8000"
    assert set(cluster.objects) == {("deployments", name), ("services", name)}
    again = adapter.provision(replica)  # a re-run meets 409 AlreadyExists and carries on
    assert "already exists" in again.messages[0]
    replica.provider_handle = result.handle

    starting = adapter.status(replica)
    assert starting.phase == ReplicaPhase.STARTING
    assert "FailedScheduling" in starting.detail
    cluster.ready = 1
    assert adapter.status(replica).phase == ReplicaPhase.READY
    cluster.waiting_reason = "CrashLoopBackOff"
    failed = adapter.status(replica)
    assert failed.phase == ReplicaPhase.FAILED
    assert "CrashLoopBackOff" in failed.detail

    assert "INFO ready" in adapter.logs(replica, tail=50)
    assert any("tailLines=50" in exchange.path for exchange in cluster.server.exchanges)

    adapter.teardown(replica)
    assert cluster.objects == {}
    adapter.teardown(replica)  # 404s: already gone
    assert adapter.status(replica).phase == ReplicaPhase.FAILED
    assert cluster.server.errors == []


@pytest.mark.django_db
def test_where_nodes_push_heartbeats_the_agent_runs_in_the_pod_with_its_token_in_a_secret(
    make_replica, cluster, settings
):
    settings.INFERIA_NODE_SERVER_URL = "https://inferia.example.com"
    replica = make_replica(
        Provider.Kind.KUBERNETES,
        config={"namespace": NS},
        credentials={"host": cluster.server.url, "token": "cluster-token"},
    )
    name = replica_object_name(replica)
    cluster.route_object(name)
    adapter = adapter_for(replica.deployment.pool.provider)
    token = node_token(replica)

    replica.provider_handle = adapter.provision(replica).handle

    assert cluster.objects[("secrets", f"{name}-node")]["stringData"] == {"token": token}
    deployment = cluster.objects[("deployments", name)]
    assert token not in json.dumps(deployment)  # readable by whoever may list Deployments
    (agent,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "inferia-agent"]
    assert agent["command"] == ["inferia", "agent"]
    env = {item["name"]: item for item in agent["env"]}
    assert env["INFERIA_NODE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-node", "key": "token"}
    assert env["INFERIA_AGENT_ENGINE_URL"]["value"] == "http://127.0.0.1:8000"
    assert env["INFERIA_SERVER_URL"]["value"] == "https://inferia.example.com"

    adapter.teardown(replica)
    assert cluster.objects == {}
    assert cluster.server.errors == []


@pytest.mark.django_db
def test_api_errors_surface_as_adapter_errors(make_replica, cluster):
    replica = make_replica(
        Provider.Kind.KUBERNETES, config={"namespace": NS}, credentials={"host": cluster.server.url, "token": "wrong"}
    )
    cluster.route_object(replica_object_name(replica))
    with pytest.raises(AdapterError, match="creating Deployment"):
        adapter_for(replica.deployment.pool.provider).provision(replica)


@pytest.mark.django_db
def test_missing_credentials_are_a_config_error(make_replica):
    replica = make_replica(Provider.Kind.KUBERNETES, config={"namespace": NS})
    with pytest.raises(ProviderConfigError, match="kubeconfig"):
        adapter_for(replica.deployment.pool.provider).provision(replica)
