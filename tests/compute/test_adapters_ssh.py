"""The SSH adapter against an SSH server the test starts in-process, whose `docker` records every command."""

from __future__ import annotations

import asyncio
import itertools
import shlex
import threading

import asyncssh
import pytest

from apps.compute.adapters import ReplicaPhase, adapter_for
from apps.compute.adapters.base import AdapterError, ProviderConfigError
from apps.compute.adapters.ssh import agent_container_name, container_name, docker_run_argv
from apps.compute.engine import deployment_engine_spec, vllm_serve_args
from apps.compute.models import Provider
from apps.compute.node_tokens import node_token
from tests.compute.fakes import FakeServer


class FakeDockerHost:
    """An SSH server whose only program is a fake `docker` keeping containers in memory."""

    def __init__(self, health_port):
        self.commands = []
        self.containers = {}
        self.health_port = health_port
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _start(self):
        return await asyncssh.create_server(
            None, "127.0.0.1", 0, server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(self.client_key.export_public_key().decode()),
            process_factory=self._process,
        )  # fmt: skip

    async def _process(self, process):
        self.commands.append(process.command)
        argv = shlex.split(process.command)
        env = {}
        if argv[:2] == ["sh", "-c"]:  # the agent's start: a variable read from stdin, then `exec "$@"`
            name = argv[2].split("read -r ", 1)[1].split(" ", 1)[0]
            env[name] = (await process.stdin.readline()).rstrip("\n")
            argv = argv[4:]
        out, err, code = self.docker(argv, env)
        process.stdout.write(out)
        process.stderr.write(err)
        process.exit(code)

    def docker(self, argv, env=None):
        assert argv[0] == "docker", argv
        verb, args = argv[1], argv[2:]
        if verb == "inspect":
            container = self.containers.get(args[-1])
            if container is None:
                return "", f"Error: No such object: {args[-1]}\n", 1
            field = {
                "{{.State.Running}}": str(container["status"] == "running").lower(),
                "{{.State.Status}}": container["status"],
            }[args[1]]
            return field + "\n", "", 0
        if verb == "rm":
            assert args[0] == "--force"
            if self.containers.pop(args[1], None) is None:
                return "", f"Error response from daemon: No such container: {args[1]}\n", 1
            return args[1] + "\n", "", 0
        if verb == "run":
            name = args[args.index("--name") + 1]
            if name in self.containers:
                return "", "Conflict. The container name is already in use\n", 125
            # `--env NAME` without a value takes NAME from the docker client's environment.
            passed = {value: (env or {}).get(value) for flag, value in itertools.pairwise(args) if flag == "--env"}
            self.containers[name] = {"status": "running", "argv": argv, "env_from_client": passed}
            return "f00dcafe\n", "", 0
        if verb == "port":
            assert args[1] == "8000/tcp"
            return f"0.0.0.0:{self.health_port}\n[::]:{self.health_port}\n", "", 0
        if verb == "logs":
            return "INFO:     Started server process\n", "WARNING loading\n", 0
        return "", f"unknown verb {verb}\n", 1

    def public_host_key(self):
        return self.host_key.export_public_key().decode().strip()

    def close(self):
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def engine():
    server = FakeServer({("GET", "/health"): lambda exchange: (200, {})})
    yield server
    server.close()


@pytest.fixture
def docker_host(engine):
    host = FakeDockerHost(engine.server.server_address[1])
    yield host
    host.close()


@pytest.fixture
def ssh_replica(make_replica, docker_host):
    return make_replica(
        Provider.Kind.SSH,
        config={"host": "127.0.0.1", "port": docker_host.port, "username": "gpu", "gpus": "0,1"},
        credentials={
            "private_key": docker_host.client_key.export_private_key().decode(),
            "host_key": docker_host.public_host_key(),
        },
        engine_args={"tensor_parallel_size": 2, "extra_args": ["--chat-template", "{{ x }}; rm -rf / $(id)"]},
        model_id="mistralai/Mistral-7B-Instruct-v0.3",
        served="mistral",
    )


@pytest.mark.django_db
def test_the_docker_command_runs_vllm_on_the_gpus_with_the_exact_engine_arguments(ssh_replica):
    spec = deployment_engine_spec(ssh_replica.deployment)
    argv = docker_run_argv(replica=ssh_replica, spec=spec, config={"gpus": "0,1", "env_file": "/etc/inferia/hf.env"})
    assert argv[:3] == ["docker", "run", "--detach"]
    assert argv[argv.index("--gpus") + 1] == '"device=0,1"'
    assert argv[argv.index("--publish") + 1] == "8000"
    assert argv[argv.index("--env-file") + 1] == "/etc/inferia/hf.env"
    entry = argv.index("--entrypoint")
    assert argv[entry : entry + 4] == ["--entrypoint", "vllm", "vllm/vllm-openai:latest", "serve"]
    assert argv[entry + 4 :] == vllm_serve_args(spec, port=8000)
    with pytest.raises(ProviderConfigError):
        docker_run_argv(replica=ssh_replica, spec=spec, config={"gpus": "all; reboot"})


@pytest.mark.django_db
def test_provision_runs_the_container_over_ssh_and_the_host_sees_the_same_argv(ssh_replica, docker_host):
    adapter = adapter_for(ssh_replica.deployment.pool.provider)
    result = adapter.provision(ssh_replica)
    name = container_name(ssh_replica)
    assert result.endpoint == f"http://127.0.0.1:{docker_host.health_port}"
    assert result.handle == {"container": name, "port": docker_host.health_port}
    run = docker_host.containers[name]["argv"]
    expected = docker_run_argv(
        replica=ssh_replica, spec=deployment_engine_spec(ssh_replica.deployment), config=adapter.config
    )
    assert run == expected  # the hostile chat template arrived as one argument, not as shell
    assert "{{ x }}; rm -rf / $(id)" in run

    again = adapter.provision(ssh_replica)  # running already: adopted, not started twice
    assert again.messages == (f"container {name} already running",)
    assert sum(command.startswith("docker run") for command in docker_host.commands) == 1

    ssh_replica.provider_handle, ssh_replica.endpoint = result.handle, result.endpoint
    assert adapter.status(ssh_replica).phase == ReplicaPhase.READY
    assert "Started server process" in adapter.logs(ssh_replica, tail=20)
    assert "docker logs --tail 20 " + name in docker_host.commands

    docker_host.containers[name]["status"] = "exited"
    assert adapter.status(ssh_replica).phase == ReplicaPhase.FAILED
    replacement = adapter.provision(ssh_replica)  # a dead container is removed and started again
    assert replacement.messages == (f"started container {name}",)

    adapter.teardown(ssh_replica)
    assert name not in docker_host.containers
    adapter.teardown(ssh_replica)  # already gone
    assert adapter.status(ssh_replica).phase == ReplicaPhase.FAILED


@pytest.mark.django_db
def test_where_nodes_push_heartbeats_an_agent_container_gets_the_token_through_stdin(
    ssh_replica, docker_host, settings
):
    settings.INFERIA_NODE_SERVER_URL = "https://inferia.example.com"
    adapter = adapter_for(ssh_replica.deployment.pool.provider)

    result = adapter.provision(ssh_replica)

    agent = docker_host.containers[agent_container_name(ssh_replica)]
    token = node_token(ssh_replica)
    assert agent["env_from_client"]["INFERIA_NODE_TOKEN"] == token
    assert f"INFERIA_AGENT_ENGINE_URL=http://127.0.0.1:{docker_host.health_port}" in agent["argv"]
    assert "INFERIA_SERVER_URL=https://inferia.example.com" in agent["argv"]
    assert agent["argv"][-3:] == ["inferia:latest", "inferia", "agent"]
    assert not any(token in command for command in docker_host.commands)  # never on a command line
    assert result.messages == (f"started container {container_name(ssh_replica)}; started its heartbeat agent",)

    ssh_replica.provider_handle = result.handle
    adapter.teardown(ssh_replica)
    assert docker_host.containers == {}


@pytest.mark.django_db
def test_a_host_presenting_another_key_is_refused(make_replica, docker_host):
    replica = make_replica(
        Provider.Kind.SSH,
        config={"host": "127.0.0.1", "port": docker_host.port, "username": "gpu"},
        credentials={
            "private_key": docker_host.client_key.export_private_key().decode(),
            "host_key": asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip(),
        },
    )
    with pytest.raises(AdapterError, match=r"ssh 127\.0\.0\.1"):
        adapter_for(replica.deployment.pool.provider).provision(replica)
    assert docker_host.commands == []


@pytest.mark.django_db
def test_credentials_without_a_host_key_are_refused(make_replica):
    replica = make_replica(Provider.Kind.SSH, config={"host": "h", "username": "u"}, credentials={"password": "p"})
    with pytest.raises(ProviderConfigError, match="host_key"):
        adapter_for(replica.deployment.pool.provider).provision(replica)
