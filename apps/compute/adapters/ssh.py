"""`ssh`: each replica is a `vllm/vllm-openai` container that Inferia starts with Docker on a GPU host over SSH.

Every remote command is built as an argv list and sent as one shell-quoted line (`shell_join`), so engine
arguments can never become shell syntax on the host. The container publishes vLLM's port on a port Docker
chooses, read back with `docker port`, so several replicas share a host without clashing.

Provider config (the image is the deployment's): `host`, `port` (22), `username`, `gpus` ("all", or device
ids "0,1"), `advertise_host` (how the gateway reaches the host; default `host`), `cache_volume`
(inferia-hf-cache), `env_file` (a path on the host with HF_TOKEN=..., kept there rather than sent by us).
Credentials: `private_key` (OpenSSH/PEM text) or `password`; `host_key` (the host's public key line, required:
without it anyone on the path could impersonate the host and receive our commands).

With INFERIA_NODE_SERVER_URL set, a second container runs `inferia agent` (INFERIA_AGENT_IMAGE) on the host's
network, pushing the engine's heartbeats; its node token reaches the docker client's environment through stdin.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncssh
from django.conf import settings

from apps.compute.adapters.base import (
    AdapterError,
    ComputeAdapter,
    ProviderConfigError,
    ProvisionResult,
    ReplicaPhase,
    ReplicaStatus,
    engine_pending,
    engine_status_settle,
)
from apps.compute.engine import VLLM_DEFAULT_PORT, EngineSpec, shell_join, vllm_environment, vllm_serve_args
from apps.compute.node_tokens import NodeAgentHandover, node_agent_handover
from inferia_runtime.node_agent import TOKEN_ENV

if TYPE_CHECKING:
    from apps.compute.models import Replica

T = TypeVar("T")
CONNECT_TIMEOUT_S = 15.0
_GPUS_RE = re.compile(r"^(all|\d+(,\d+)*)$")
_SAFE_RE = re.compile(r"^[A-Za-z0-9_./:@-]+$")
_PORT_RE = re.compile(r":(\d+)\s*$", re.MULTILINE)


def container_name(replica: Replica) -> str:
    """The replica's container name on the host."""
    return f"inferia-d{replica.deployment_id}-r{replica.pk}"


def docker_run_argv(*, replica: Replica, spec: EngineSpec, config: dict[str, Any]) -> list[str]:
    """The `docker run` argv that starts `replica`: detached, on its GPUs, vLLM's port published, cache mounted."""
    gpus = str(config.get("gpus", "all"))
    if not _GPUS_RE.fullmatch(gpus):
        raise ProviderConfigError("gpus must be 'all' or device ids like 0,1")
    image = spec.container_image
    volume = str(config.get("cache_volume", "inferia-hf-cache"))
    for label, value in (("image", image), ("cache_volume", volume)):
        if not _SAFE_RE.fullmatch(value) or value.startswith("-"):
            raise ProviderConfigError(f"{label} {value!r} has characters Docker does not take")
    argv = [
        "docker", "run", "--detach",
        "--name", container_name(replica),
        "--label", "managed-by=inferia",
        "--label", f"inferia.replica={replica.pk}",
        # Docker's --gpus takes a CSV value: a device list needs its own quotes inside the argument.
        "--gpus", "all" if gpus == "all" else f'"device={gpus}"',
        "--ipc", "host",  # tensor-parallel workers share memory, as vLLM's docs ask
        "--publish", f"{VLLM_DEFAULT_PORT}",
        "--volume", f"{volume}:/root/.cache/huggingface",
        "--env", "VLLM_NO_USAGE_STATS=1",
    ]  # fmt: skip
    if config.get("env_file"):
        env_file = str(config["env_file"])
        if not _SAFE_RE.fullmatch(env_file):
            raise ProviderConfigError("env_file must be a plain path")
        argv += ["--env-file", env_file]
    for name, value in vllm_environment(spec).items():
        argv += ["--env", f"{name}={value}"]
    return [*argv, "--entrypoint", "vllm", image, "serve", *vllm_serve_args(spec, port=VLLM_DEFAULT_PORT)]


def agent_container_name(replica: Replica) -> str:
    """The container of the replica's `inferia agent` on the host."""
    return container_name(replica) + "-agent"


# The token goes through the command's stdin into the docker client's environment (`--env NAME` without a value takes
# it from there): never on a command line, which the host's process list and shell logs would show.
_TOKEN_FROM_STDIN = f'IFS= read -r {TOKEN_ENV} && export {TOKEN_ENV} && exec "$@"'


def agent_run_argv(*, replica: Replica, handover: NodeAgentHandover) -> list[str]:
    """The command that starts the replica's agent beside its engine, on the host's network (the engine's published
    port is on the host's loopback), restarted with Docker; the token is read from stdin (see _TOKEN_FROM_STDIN)."""
    argv = [
        "sh", "-c", _TOKEN_FROM_STDIN, "inferia-agent",
        "docker", "run", "--detach",
        "--name", agent_container_name(replica),
        "--label", "managed-by=inferia",
        "--label", f"inferia.replica={replica.pk}",
        "--network", "host",
        "--restart", "unless-stopped",
        "--env", TOKEN_ENV,
    ]  # fmt: skip
    for name, value in handover.public_environment().items():
        argv += ["--env", f"{name}={value}"]
    return [*argv, settings.INFERIA_AGENT_IMAGE, "inferia", "agent"]


class SshDockerAdapter(ComputeAdapter):
    """Runs replicas as Docker containers on one SSH-reachable GPU host."""

    kind = "ssh"

    def _connect_options(self) -> dict[str, Any]:
        secrets = self.credentials()
        host_key = secrets.get("host_key")
        if not host_key:
            raise ProviderConfigError("ssh credentials need `host_key`, the host's public key line")
        options: dict[str, Any] = {
            "host": self.config_str("host"),
            "port": int(self.config.get("port", 22)),
            "username": self.config_str("username"),
            "connect_timeout": CONNECT_TIMEOUT_S,
        }
        try:
            options["known_hosts"] = asyncssh.import_known_hosts(f"{_known_host(options)} {host_key}\n")
            if secrets.get("private_key"):
                options["client_keys"] = [asyncssh.import_private_key(secrets["private_key"])]
            elif secrets.get("password"):
                options["password"] = secrets["password"]
                options["client_keys"] = None
            else:
                raise ProviderConfigError("ssh credentials need `private_key` or `password`")
        except (asyncssh.KeyImportError, ValueError) as error:
            raise ProviderConfigError(f"ssh credentials are not usable: {error}") from None
        options["agent_path"] = None  # only the provider's key, never the worker's own agent
        return options

    def _run(self, work: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]) -> T:
        async def session() -> T:
            async with asyncssh.connect(**self._connect_options()) as connection:
                return await work(connection)

        try:
            return asyncio.run(session())
        except (OSError, asyncssh.Error) as error:
            raise AdapterError(f"ssh {self.config.get('host')}: {error}") from None

    @staticmethod
    async def _sh(connection: asyncssh.SSHClientConnection, argv: list[str]) -> asyncssh.SSHCompletedProcess:
        return await connection.run(shell_join(argv), check=False)

    async def _agent_start(
        self, connection: asyncssh.SSHClientConnection, replica: Replica, handover: NodeAgentHandover
    ) -> None:
        # Started afresh on every provisioning: the engine's port may have changed.
        await self._sh(connection, ["docker", "rm", "--force", agent_container_name(replica)])
        argv = agent_run_argv(replica=replica, handover=handover)
        started = await connection.run(shell_join(argv), input=handover.token + "\n", check=False)
        if started.exit_status != 0:
            raise AdapterError(f"starting the heartbeat agent failed: {str(started.stderr).strip()[-500:]}")

    def _endpoint(self, port: int) -> str:
        host = str(self.config.get("advertise_host") or self.config_str("host"))
        return f"http://{host}:{port}"

    def connection_check(self, *, timeout_s: float) -> str:
        async def work(connection: asyncssh.SSHClientConnection) -> str:
            done = await asyncio.wait_for(
                self._sh(connection, ["docker", "version", "--format", "{{.Server.Version}}"]), timeout_s
            )
            if done.exit_status != 0:
                raise AdapterError(f"docker on {self.config.get('host')}: {str(done.stderr).strip()[-300:]}")
            return f"Signed in to {self.config.get('host')}; Docker {str(done.stdout).strip()[:40]} answers."

        return self._run(work)

    def provision(self, replica: Replica) -> ProvisionResult:
        name = container_name(replica)
        run_argv = docker_run_argv(replica=replica, spec=self.engine_spec(replica.deployment), config=self.config)

        async def work(connection: asyncssh.SSHClientConnection) -> tuple[int, str]:
            state = await self._sh(connection, ["docker", "inspect", "--format", "{{.State.Running}}", name])
            if state.exit_status == 0 and str(state.stdout).strip() == "true":
                message = f"container {name} already running"
            else:
                await self._sh(connection, ["docker", "rm", "--force", name])  # a dead leftover of an earlier try
                started = await self._sh(connection, run_argv)
                if started.exit_status != 0:
                    raise AdapterError(f"docker run failed: {str(started.stderr).strip()[-500:]}")
                message = f"started container {name}"
            published = await self._sh(connection, ["docker", "port", name, f"{VLLM_DEFAULT_PORT}/tcp"])
            match = _PORT_RE.search(str(published.stdout))
            if published.exit_status != 0 or match is None:
                raise AdapterError(f"cannot read the published port of {name}: {str(published.stderr).strip()}")
            port = int(match.group(1))
            handover = node_agent_handover(replica, engine_url=f"http://127.0.0.1:{port}")
            if handover is not None:
                await self._agent_start(connection, replica, handover)
                message += "; started its heartbeat agent"
            return port, message

        port, message = self._run(work)
        return ProvisionResult(
            endpoint=self._endpoint(port), handle={"container": name, "port": port}, messages=(message,)
        )

    def status(self, replica: Replica) -> ReplicaStatus:
        return engine_status_settle(self.node_status(replica))

    def node_status(self, replica: Replica) -> ReplicaStatus:
        name = (replica.provider_handle or {}).get("container")
        if not name:
            return ReplicaStatus(ReplicaPhase.STOPPED, "not provisioned")

        async def work(connection: asyncssh.SSHClientConnection) -> asyncssh.SSHCompletedProcess:
            return await self._sh(connection, ["docker", "inspect", "--format", "{{.State.Status}}", name])

        state = self._run(work)
        if state.exit_status != 0:
            return ReplicaStatus(ReplicaPhase.FAILED, f"container {name} is gone")
        text = str(state.stdout).strip()
        if text != "running":
            return ReplicaStatus(ReplicaPhase.FAILED, f"container {name} is {text}")
        return engine_pending(replica.endpoint)

    def logs(self, replica: Replica, tail: int = 200) -> str:
        name = (replica.provider_handle or {}).get("container") or container_name(replica)

        async def work(connection: asyncssh.SSHClientConnection) -> str:
            result = await self._sh(connection, ["docker", "logs", "--tail", str(max(int(tail), 0)), name])
            return str(result.stdout) + str(result.stderr)

        return self._run(work)

    def teardown(self, replica: Replica) -> None:
        name = (replica.provider_handle or {}).get("container") or container_name(replica)

        async def work(connection: asyncssh.SSHClientConnection) -> None:
            for container in (name + "-agent", name):  # the agent (if it had one) first: it would report the end
                result = await self._sh(connection, ["docker", "rm", "--force", container])
                if result.exit_status != 0 and "No such container" not in str(result.stderr):
                    raise AdapterError(f"docker rm failed: {str(result.stderr).strip()[-500:]}")

        self._run(work)


def _known_host(options: dict[str, Any]) -> str:
    return options["host"] if options["port"] == 22 else f"[{options['host']}]:{options['port']}"
