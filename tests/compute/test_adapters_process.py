"""The simulator and local adapters: real detached processes, tracked by pidfiles, healed and torn down."""

from __future__ import annotations

import os
import signal
import sys

import psutil
import pytest

from apps.compute.adapters import ReplicaPhase, adapter_for, supported_kinds
from apps.compute.adapters.base import AdapterError, ProviderConfigError
from apps.compute.adapters.http import http_call
from apps.compute.adapters.process import REPLICA_ENV, process_replicas_stop_all, replica_key, replicas_dir
from apps.compute.models import Provider
from tests.kit.waiting import eventually


def wait_for(adapter, replica, phase, timeout=20.0):
    """The adapter's status of `replica` once it is in `phase`."""
    return eventually(
        lambda: (status := adapter.status(replica)).phase == phase and status,
        timeout=timeout,
        interval=0.2,
        what=f"the replica {phase}",
    )


def marked(key):
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(REPLICA_ENV) == key:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def provisioned(adapter, replica):
    result = adapter.provision(replica)
    replica.endpoint = result.endpoint
    replica.provider_handle = result.handle
    replica.save()
    return result


@pytest.fixture
def sim_replica(make_replica):
    replica = make_replica(
        Provider.Kind.SIMULATOR,
        config={"sim": {"ttft_ms": 1, "itl_ms": 1}},
        engine_args={"max_model_len": 4096, "lora_modules": {"sql-lora": "org/sql"}},
        served="sim-model",
    )
    yield replica
    adapter_for(replica.deployment.pool.provider).teardown(replica)


@pytest.mark.django_db(transaction=True)
def test_the_simulator_starts_a_detached_engine_that_serves_the_deployment(sim_replica):
    adapter = adapter_for(sim_replica.deployment.pool.provider)
    result = provisioned(adapter, sim_replica)
    assert result.endpoint.startswith("http://127.0.0.1:")
    assert wait_for(adapter, sim_replica, ReplicaPhase.READY).phase == ReplicaPhase.READY

    proc = psutil.Process(result.handle["pid"])
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(os.getpid())  # its own group: outlives the worker
    assert "--max-model-len" in proc.cmdline()
    models = http_call("GET", f"{result.endpoint}/v1/models").json()
    assert {model["id"] for model in models["data"]} >= {"sim-model", "sql-lora"}
    assert (replicas_dir() / f"{result.handle['key']}.json").exists()

    again = adapter.provision(sim_replica)
    assert again.handle["pid"] == result.handle["pid"]  # a re-run adopts it, no duplicate
    assert len(marked(result.handle["key"])) == 1


@pytest.mark.django_db(transaction=True)
def test_a_killed_engine_reads_as_failed_and_teardown_removes_everything(sim_replica):
    adapter = adapter_for(sim_replica.deployment.pool.provider)
    result = provisioned(adapter, sim_replica)
    wait_for(adapter, sim_replica, ReplicaPhase.READY)
    os.kill(result.handle["pid"], signal.SIGKILL)
    status = wait_for(adapter, sim_replica, ReplicaPhase.FAILED, timeout=5)
    assert status.phase == ReplicaPhase.FAILED
    assert "exited" in status.detail

    adapter.teardown(sim_replica)
    assert not (replicas_dir() / f"{result.handle['key']}.json").exists()
    assert adapter.status(sim_replica).phase == ReplicaPhase.FAILED  # handle kept by the caller, process gone
    adapter.teardown(sim_replica)  # idempotent


@pytest.mark.django_db(transaction=True)
def test_an_orphan_started_before_its_pidfile_was_written_is_replaced_not_duplicated(sim_replica):
    adapter = adapter_for(sim_replica.deployment.pool.provider)
    first = provisioned(adapter, sim_replica)
    key = first.handle["key"]
    (replicas_dir() / f"{key}.json").unlink()  # the worker died right after starting the process

    second = provisioned(adapter, sim_replica)
    assert second.handle["pid"] != first.handle["pid"]
    assert not psutil.pid_exists(first.handle["pid"]) or psutil.Process(first.handle["pid"]).status() == "zombie"
    assert [proc.pid for proc in marked(key)] == [second.handle["pid"]]


@pytest.mark.django_db(transaction=True)
def test_teardown_kills_the_whole_process_group(sim_replica):
    adapter = adapter_for(sim_replica.deployment.pool.provider)
    result = provisioned(adapter, sim_replica)
    pgid = result.handle["pid"]
    wait_for(adapter, sim_replica, ReplicaPhase.READY)
    assert adapter.logs(sim_replica, tail=5) != ""
    adapter.teardown(sim_replica)
    remaining = [proc for proc in psutil.process_iter() if _pgid(proc) == pgid and proc.status() != "zombie"]
    assert remaining == []
    assert adapter.logs(sim_replica, tail=5) == ""  # its log went with it


def _pgid(proc):
    try:
        return os.getpgid(proc.pid)
    except (ProcessLookupError, PermissionError):
        return None


@pytest.mark.django_db(transaction=True)
def test_stop_all_stops_every_tracked_replica(make_replica):
    provider_replicas = [make_replica(Provider.Kind.SIMULATOR, served=f"s{index}") for index in range(2)]
    adapter = adapter_for(provider_replicas[0].deployment.pool.provider)
    pids = [provisioned(adapter, replica).handle["pid"] for replica in provider_replicas]
    assert process_replicas_stop_all() >= 2
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not list(replicas_dir().glob(f"{replica_key(provider_replicas[0])}.*json"))


@pytest.mark.django_db
def test_unknown_simulator_options_are_refused(make_replica):
    replica = make_replica(Provider.Kind.SIMULATOR, config={"sim": {"ttft": 5}})
    with pytest.raises(ProviderConfigError, match="unknown simulator option"):
        adapter_for(replica.deployment.pool.provider).provision(replica)


@pytest.mark.django_db
def test_the_local_adapter_runs_the_exact_vllm_command_with_secrets_only_in_the_environment(make_replica, settings):
    replica = make_replica(
        Provider.Kind.LOCAL,
        config={"cuda_visible_devices": "0,1"},
        credentials={"hf_token": "hf_secret"},
        engine_args={"tensor_parallel_size": 2, "dtype": "bfloat16"},
        model_id="Qwen/Qwen2.5-7B-Instruct",
        served="qwen",
    )
    adapter = adapter_for(replica.deployment.pool.provider)
    argv = adapter.command(replica, host="127.0.0.1", port=9001)
    assert argv == [
        "vllm",
        "serve",
        "Qwen/Qwen2.5-7B-Instruct",
        "--served-model-name",
        "qwen",
        "--host",
        "127.0.0.1",
        "--port",
        "9001",
        "--tensor-parallel-size",
        "2",
        "--dtype",
        "bfloat16",
    ]
    assert adapter.environment(replica) == {"CUDA_VISIBLE_DEVICES": "0,1", "HF_TOKEN": "hf_secret"}
    assert "hf_secret" not in " ".join(argv)


@pytest.mark.django_db(transaction=True)
def test_the_local_adapter_reports_a_missing_vllm_and_a_crash(make_replica, settings, tmp_path):
    replica = make_replica(Provider.Kind.LOCAL, served="crashy")
    adapter = adapter_for(replica.deployment.pool.provider)
    settings.INFERIA_VLLM_BIN = str(tmp_path / "no-vllm-here")
    with pytest.raises(AdapterError, match="cannot start"):
        adapter.provision(replica)

    fake = tmp_path / "vllm"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('args', sys.argv[1:3])\nsys.exit(3)\n")
    fake.chmod(0o755)
    settings.INFERIA_VLLM_BIN = str(fake)
    provisioned(adapter, replica)
    status = wait_for(adapter, replica, ReplicaPhase.FAILED, timeout=10)
    assert status.phase == ReplicaPhase.FAILED
    assert "args ['serve', 'org/model']" in adapter.logs(replica)
    adapter.teardown(replica)


def test_the_registry_offers_only_working_adapters():
    kinds = supported_kinds()
    assert {"simulator", "local", "external"} <= set(kinds)
    assert set(kinds) <= set(Provider.Kind.values)
