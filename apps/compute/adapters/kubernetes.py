"""`kubernetes`: each replica is a Kubernetes Deployment (one vLLM pod) plus a Service, through the official client.

One Deployment per replica, not one scaled Deployment per model: the gateway routes to each replica by its own
endpoint (least outstanding requests, circuit breaking), and the reconciler heals replicas one by one.

Provider config (the image is the deployment's): `namespace` (default "inferia"), `gpu_resource`
(default nvidia.com/gpu), `node_selector`, `tolerations`, `cache_pvc` (an existing PersistentVolumeClaim for the
model cache; an emptyDir otherwise), `hf_token_secret` (an existing Secret with key `token`), `service_type`,
`endpoint_host` (default `{service}.{namespace}.svc.cluster.local`), `cpu`/`memory` requests.
Credentials: `kubeconfig` (YAML text), or `host` + `token` (+ `ca_cert` PEM, or `verify_ssl: false`).

With INFERIA_NODE_SERVER_URL set, the pod also runs `inferia agent` (INFERIA_AGENT_IMAGE), which pushes the engine's
heartbeats with the replica's node token, kept in a Secret `<replica>-node` of its own rather than in the manifest.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import urllib3.exceptions as urllib3_errors
import yaml
from django.conf import settings
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from apps.compute.adapters.base import (
    AdapterError,
    ComputeAdapter,
    ProviderConfigError,
    ProvisionResult,
    ReplicaPhase,
    ReplicaStatus,
)
from apps.compute.engine import VLLM_DEFAULT_PORT, EngineSpec, vllm_environment, vllm_serve_args
from apps.compute.node_tokens import node_agent_handover
from inferia_runtime.node_agent import TOKEN_ENV

if TYPE_CHECKING:
    from apps.compute.models import Replica

CACHE_MOUNT = "/root/.cache/huggingface"
_AGENT_ENGINE_URL = f"http://127.0.0.1:{VLLM_DEFAULT_PORT}"  # vLLM, as the agent beside it in the pod sees it
MANAGED_BY = {"app.kubernetes.io/managed-by": "inferia", "app.kubernetes.io/name": "vllm"}
# Pod states that will not fix themselves: the reconciler should replace the replica.
FATAL_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
}
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def replica_object_name(replica: Replica) -> str:
    """The Deployment's and Service's name: DNS-1035 safe and unique per replica."""
    return f"inferia-d{replica.deployment_id}-r{replica.pk}"


def _labels(replica: Replica) -> dict[str, str]:
    return {
        **MANAGED_BY,
        "inferia.io/deployment": str(replica.deployment_id),
        "inferia.io/replica": str(replica.pk),
    }


def _tolerations(items: Any) -> list[k8s.V1Toleration]:
    try:
        return [k8s.V1Toleration(**item) for item in items]
    except (TypeError, ValueError) as error:
        raise ProviderConfigError(f"tolerations must be objects of key, operator, value, effect: {error}") from None


def kubernetes_deployment_build(
    *, replica: Replica, spec: EngineSpec, namespace: str, config: dict[str, Any]
) -> k8s.V1Deployment:
    """The V1Deployment that runs `replica`: one vLLM pod with its GPUs, probes on /health and a model cache."""
    name = replica_object_name(replica)
    labels = _labels(replica)
    gpu_resource = config.get("gpu_resource", "nvidia.com/gpu")
    requests: dict[str, str] = {gpu_resource: str(spec.gpus)}
    for key in ("cpu", "memory"):
        if config.get(key):
            requests[key] = str(config[key])
    env = [k8s.V1EnvVar(name="VLLM_NO_USAGE_STATS", value="1")]
    if config.get("hf_token_secret"):
        selector = k8s.V1SecretKeySelector(name=str(config["hf_token_secret"]), key="token")
        env.append(k8s.V1EnvVar(name="HF_TOKEN", value_from=k8s.V1EnvVarSource(secret_key_ref=selector)))
    env += [k8s.V1EnvVar(name=name, value=value) for name, value in vllm_environment(spec).items()]

    def probe(**kwargs: Any) -> k8s.V1Probe:
        return k8s.V1Probe(http_get=k8s.V1HTTPGetAction(path="/health", port="http"), **kwargs)

    container = k8s.V1Container(
        name="vllm",
        image=spec.container_image,
        command=["vllm", "serve"],
        args=vllm_serve_args(spec, host="0.0.0.0", port=VLLM_DEFAULT_PORT),  # noqa: S104 - inside the pod
        ports=[k8s.V1ContainerPort(name="http", container_port=VLLM_DEFAULT_PORT, protocol="TCP")],
        env=env,
        resources=k8s.V1ResourceRequirements(requests=requests, limits={gpu_resource: str(spec.gpus)}),
        # Loading weights can take many minutes: the startup probe holds off liveness until /health answers once.
        startup_probe=probe(period_seconds=10, failure_threshold=180),
        readiness_probe=probe(period_seconds=5, failure_threshold=3),
        liveness_probe=probe(period_seconds=10, failure_threshold=6),
        volume_mounts=[
            k8s.V1VolumeMount(name="model-cache", mount_path=CACHE_MOUNT),
            k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),  # noqa: S108 - the pod's shm, not a temp file
        ],
    )
    if config.get("cache_pvc"):
        cache = k8s.V1Volume(
            name="model-cache",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=str(config["cache_pvc"])),
        )
    else:
        cache = k8s.V1Volume(name="model-cache", empty_dir=k8s.V1EmptyDirVolumeSource())
    # Tensor parallel workers talk through shared memory; the container runtime's 64 MiB default is too small.
    shm = k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory"))
    containers = [container]
    agent = _agent_container(replica)
    if agent is not None:
        containers.append(agent)
    pod_spec = k8s.V1PodSpec(
        containers=containers,
        volumes=[cache, shm],
        node_selector=config.get("node_selector") or None,
        tolerations=_tolerations(config.get("tolerations", [])) or None,
        termination_grace_period_seconds=30,
    )
    return k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=k8s.V1DeploymentSpec(
            replicas=1,
            selector=k8s.V1LabelSelector(match_labels={"inferia.io/replica": str(replica.pk)}),
            # Recreate: a GPU pod cannot start beside the one it replaces when the node has no spare GPU.
            strategy=k8s.V1DeploymentStrategy(type="Recreate"),
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod_spec),
        ),
    )


def node_secret_name(replica: Replica) -> str:
    """The Secret holding the replica's node token, beside its Deployment."""
    return f"{replica_object_name(replica)}-node"


def kubernetes_node_secret_build(*, replica: Replica, namespace: str) -> k8s.V1Secret | None:
    """The Secret that hands the node agent its token (None when nodes do not push heartbeats): the token stays out
    of the Deployment's manifest, which anyone who may read Deployments in the namespace can see."""
    handover = node_agent_handover(replica, engine_url=_AGENT_ENGINE_URL)
    if handover is None:
        return None
    return k8s.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=k8s.V1ObjectMeta(name=node_secret_name(replica), namespace=namespace, labels=_labels(replica)),
        type="Opaque",
        string_data={"token": handover.token},
    )


def _agent_container(replica: Replica) -> k8s.V1Container | None:
    """`inferia agent` beside vLLM in the pod (they share its network: the engine is on localhost), its token from
    the replica's Secret."""
    handover = node_agent_handover(replica, engine_url=_AGENT_ENGINE_URL)
    if handover is None:
        return None
    token = k8s.V1SecretKeySelector(name=node_secret_name(replica), key="token")
    env = [k8s.V1EnvVar(name=name, value=value) for name, value in handover.public_environment().items()]
    env.append(k8s.V1EnvVar(name=TOKEN_ENV, value_from=k8s.V1EnvVarSource(secret_key_ref=token)))
    return k8s.V1Container(
        name="inferia-agent",
        image=settings.INFERIA_AGENT_IMAGE,
        command=["inferia", "agent"],
        env=env,
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": "10m", "memory": "64Mi"}, limits={"cpu": "200m", "memory": "256Mi"}
        ),
    )


def kubernetes_service_build(*, replica: Replica, namespace: str, config: dict[str, Any]) -> k8s.V1Service:
    """The V1Service in front of `replica`'s pod, on vLLM's port."""
    return k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=k8s.V1ObjectMeta(name=replica_object_name(replica), namespace=namespace, labels=_labels(replica)),
        spec=k8s.V1ServiceSpec(
            type=config.get("service_type", "ClusterIP"),
            selector={"inferia.io/replica": str(replica.pk)},
            ports=[k8s.V1ServicePort(name="http", port=VLLM_DEFAULT_PORT, target_port="http", protocol="TCP")],
        ),
    )


class KubernetesAdapter(ComputeAdapter):
    """Creates, watches and deletes each replica's Deployment and Service through AppsV1Api and CoreV1Api."""

    kind = "kubernetes"

    @property
    def namespace(self) -> str:
        namespace = self.config_str("namespace", "inferia")
        if not _NAME_RE.fullmatch(namespace):
            raise ProviderConfigError(f"namespace {namespace!r} is not a valid Kubernetes name")
        return namespace

    @contextlib.contextmanager
    def api_client(self) -> Iterator[k8s.ApiClient]:
        """An ApiClient for the provider's cluster, closed afterwards."""
        secrets = self.credentials()
        with tempfile.TemporaryDirectory() as scratch:
            if secrets.get("kubeconfig"):
                try:
                    api = k8s_config.new_client_from_config_dict(yaml.safe_load(secrets["kubeconfig"]))
                except (yaml.YAMLError, k8s_config.ConfigException) as error:
                    raise ProviderConfigError(f"kubeconfig is not usable: {type(error).__name__}") from None
            elif secrets.get("host") and secrets.get("token"):
                configuration = k8s.Configuration(host=str(secrets["host"]).rstrip("/"))
                configuration.api_key = {"authorization": f"Bearer {secrets['token']}"}
                if secrets.get("ca_cert"):
                    path = f"{scratch}/ca.pem"
                    with open(path, "w") as file:
                        file.write(str(secrets["ca_cert"]))
                    configuration.ssl_ca_cert = path
                configuration.verify_ssl = bool(secrets.get("verify_ssl", True))
                api = k8s.ApiClient(configuration)
            else:
                raise ProviderConfigError("kubernetes credentials need `kubeconfig`, or `host` and `token`")
            try:
                yield api
            finally:
                api.close()

    def _endpoint(self, name: str) -> str:
        template = self.config.get("endpoint_host", "{service}.{namespace}.svc.cluster.local")
        return f"http://{template.format(service=name, namespace=self.namespace)}:{VLLM_DEFAULT_PORT}"

    def connection_check(self, *, timeout_s: float) -> str:
        namespace = self.namespace
        with self.api_client() as api:
            try:
                version = k8s.VersionApi(api).get_code(_request_timeout=timeout_s)
                k8s.CoreV1Api(api).list_namespaced_service(namespace, limit=1, _request_timeout=timeout_s)
            except ApiException as error:
                raise AdapterError(f"the cluster answered {error.status} {error.reason}") from None
            except (OSError, urllib3_errors.HTTPError) as error:
                raise AdapterError(f"the cluster is not reachable ({type(error).__name__})") from None
        return f"Kubernetes {version.git_version} answers; namespace {namespace!r} is readable."

    def provision(self, replica: Replica) -> ProvisionResult:
        namespace = self.namespace
        deployment = kubernetes_deployment_build(
            replica=replica, spec=self.engine_spec(replica.deployment), namespace=namespace, config=self.config
        )
        service = kubernetes_service_build(replica=replica, namespace=namespace, config=self.config)
        secret = kubernetes_node_secret_build(replica=replica, namespace=namespace)
        name = replica_object_name(replica)
        messages = []
        with self.api_client() as api:
            creates: list[tuple[str, Callable[[], Any]]] = []
            if secret is not None:  # before the pod that reads it
                creates.append(("Secret", lambda: k8s.CoreV1Api(api).create_namespaced_secret(namespace, secret)))
            creates += [
                ("Deployment", lambda: k8s.AppsV1Api(api).create_namespaced_deployment(namespace, deployment)),
                ("Service", lambda: k8s.CoreV1Api(api).create_namespaced_service(namespace, service)),
            ]
            for label, create in creates:
                try:
                    create()
                    messages.append(f"created {label} {namespace}/{name}")
                except ApiException as error:
                    if error.status != 409:  # 409: it exists already (a re-run); anything else is a failure
                        raise AdapterError(f"creating {label} {name}: {error.status} {error.reason}") from None
                    messages.append(f"{label} {namespace}/{name} already exists")
        handle = {"namespace": namespace, "name": name}
        return ProvisionResult(endpoint=self._endpoint(name), handle=handle, messages=tuple(messages))

    def status(self, replica: Replica) -> ReplicaStatus:
        handle = replica.provider_handle or {}
        if not handle.get("name"):
            return ReplicaStatus(ReplicaPhase.STOPPED, "not provisioned")
        namespace, name = handle["namespace"], handle["name"]
        with self.api_client() as api:
            core = k8s.CoreV1Api(api)
            try:
                deployment = k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace)
            except ApiException as error:
                if error.status == 404:
                    return ReplicaStatus(ReplicaPhase.FAILED, f"Deployment {namespace}/{name} is gone")
                raise AdapterError(f"reading Deployment {name}: {error.status} {error.reason}") from None
            pods = core.list_namespaced_pod(namespace, label_selector=f"inferia.io/replica={replica.pk}").items
            phases = {pod.metadata.name: pod.status.phase for pod in pods}
            for pod in pods:
                for container in pod.status.container_statuses or []:
                    waiting = container.state.waiting if container.state else None
                    if waiting is not None and waiting.reason in FATAL_WAITING:
                        return ReplicaStatus(
                            ReplicaPhase.FAILED, f"{pod.metadata.name}: {waiting.reason}", extra={"pods": phases}
                        )
                if pod.status.phase == "Failed":
                    return ReplicaStatus(ReplicaPhase.FAILED, f"{pod.metadata.name} failed", extra={"pods": phases})
            if (deployment.status.ready_replicas or 0) >= 1:
                return ReplicaStatus(ReplicaPhase.READY, extra={"pods": phases})
            detail = ", ".join(f"{pod} {phase}" for pod, phase in phases.items()) or "no pod yet"
            warning = self._last_warning(core, namespace, [pod.metadata.name for pod in pods])
            return ReplicaStatus(
                ReplicaPhase.STARTING, f"{detail}{'; ' + warning if warning else ''}", extra={"pods": phases}
            )

    @staticmethod
    def _last_warning(core: k8s.CoreV1Api, namespace: str, pods: list[str]) -> str:
        warnings = []
        for pod in pods:
            events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod},type=Warning")
            warnings += [f"{event.reason}: {event.message}" for event in events.items]
        return warnings[-1] if warnings else ""

    def logs(self, replica: Replica, tail: int = 200) -> str:
        handle = replica.provider_handle or {}
        if not handle.get("name"):
            return ""
        with self.api_client() as api:
            core = k8s.CoreV1Api(api)
            pods = core.list_namespaced_pod(handle["namespace"], label_selector=f"inferia.io/replica={replica.pk}")
            texts = []
            for pod in pods.items:
                try:
                    text = core.read_namespaced_pod_log(
                        pod.metadata.name, handle["namespace"], container="vllm", tail_lines=tail
                    )
                except ApiException as error:
                    text = f"(logs unavailable: {error.status} {error.reason})"
                texts.append(text)
            return "\n".join(texts)

    def teardown(self, replica: Replica) -> None:
        handle = replica.provider_handle or {}
        namespace = handle.get("namespace", self.namespace)
        name = handle.get("name", replica_object_name(replica))
        options = k8s.V1DeleteOptions(propagation_policy="Foreground")
        with self.api_client() as api:
            secret = node_secret_name(replica)
            for label, delete in (
                ("Service", lambda: k8s.CoreV1Api(api).delete_namespaced_service(name, namespace, body=options)),
                ("Deployment", lambda: k8s.AppsV1Api(api).delete_namespaced_deployment(name, namespace, body=options)),
                # Whether or not this replica had an agent: a 404 is what we want either way.
                ("Secret", lambda: k8s.CoreV1Api(api).delete_namespaced_secret(secret, namespace, body=options)),
            ):
                try:
                    delete()
                except ApiException as error:
                    if error.status != 404:  # already gone is what we wanted
                        raise AdapterError(f"deleting {label} {name}: {error.status} {error.reason}") from None
