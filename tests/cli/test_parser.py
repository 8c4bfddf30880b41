"""The `inferia` command line, and the process command lines it builds."""

from __future__ import annotations

import os

import pytest

from inferia_cli import build_parser, processes
from inferia_cli.processes import WORKER_QUEUES, endpoints_from_env, web_spec
from inferia_runtime.env import ConfigError


def test_the_worker_consumes_every_queue_celery_routes_to():
    from celery_app.app import QUEUE_NAMES

    assert set(WORKER_QUEUES) == set(QUEUE_NAMES)


@pytest.mark.parametrize("role", ["all", "web", "worker", "beat", "sim"])
def test_start_accepts_every_role(role):
    assert build_parser().parse_args(["start", role]).role == role


def test_start_defaults_to_all():
    assert build_parser().parse_args(["start"]).role == "all"


def test_the_web_server_is_uvicorn_with_uvloop_and_httptools_by_default(monkeypatch):
    monkeypatch.delenv("INFERIA_SERVER", raising=False)
    monkeypatch.setenv("INFERIA_PORT", "9123")

    argv = web_spec(endpoints_from_env()).argv

    assert argv[1:4] == ["-m", "uvicorn", "inferia_site.asgi:application"]
    assert argv[argv.index("--loop") : argv.index("--loop") + 2] == ["--loop", "uvloop"]
    # httptools, in the protocol that adds the transport limits
    assert argv[argv.index("--http") + 1] == "inferia_cli.transport.uvicorn_http:GuardedHttpToolsProtocol"
    assert "9123" in argv


def test_daphne_when_asked_and_the_port_flag_wins(monkeypatch):
    monkeypatch.setenv("INFERIA_SERVER", "daphne")
    monkeypatch.setenv("INFERIA_PORT", "9123")

    argv = web_spec(endpoints_from_env(port=9555)).argv

    assert argv[1:3] == ["-m", "inferia_cli.transport.daphne_http"]  # daphne, with the transport limits
    assert argv[argv.index("-p") + 1] == "9555"


def test_an_unknown_server_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("INFERIA_SERVER", "gunicorn")

    with pytest.raises(ConfigError):
        web_spec(endpoints_from_env())


def test_several_web_workers_share_a_fresh_metrics_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("INFERIA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("INFERIA_WEB_WORKERS", "3")
    stale = tmp_path / "prometheus" / "9123" / "counter_41.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")

    spec = web_spec(endpoints_from_env(port=9123))

    assert spec.argv[spec.argv.index("--workers") + 1] == "3"
    assert spec.env["PROMETHEUS_MULTIPROC_DIR"] == str(stale.parent)
    assert not stale.exists()


def test_one_web_worker_keeps_its_metrics_in_memory(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("INFERIA_WEB_WORKERS", "1")

    assert "PROMETHEUS_MULTIPROC_DIR" not in web_spec(endpoints_from_env()).env


def test_web_workers_default_to_the_cores_the_process_may_use(monkeypatch):
    monkeypatch.delenv("INFERIA_WEB_WORKERS", raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    cores = processes.cores_available()

    spec = web_spec(endpoints_from_env())

    assert 1 <= cores <= len(os.sched_getaffinity(0))
    if cores > 1:
        assert spec.argv[spec.argv.index("--workers") + 1] == str(cores)
    else:
        assert "--workers" not in spec.argv


@pytest.mark.parametrize(
    ("cpu_max", "cores"), [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1), ("400000 100000", 4)]
)
def test_a_containers_cpu_limit_caps_the_workers(tmp_path, cpu_max, cores):
    limit = tmp_path / "cpu.max"
    limit.write_text(cpu_max + "\n")

    assert processes.cgroup_cpu_quota(limit) == cores
    assert processes.cgroup_cpu_quota(tmp_path / "absent") is None
