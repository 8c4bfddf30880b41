"""`inferia start all`: every process starts, and Ctrl-C stops every one of them, grandchildren included."""

from __future__ import annotations

import os
import sys

import psutil
import pytest

from inferia_cli.launcher import ProcessSpec, Supervisor
from tests.kit.ports import port_reserve
from tests.kit.processes import child_database_url, inferia_start

SLEEPER = [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"]


def test_a_child_that_dies_stops_the_others_and_fails_the_supervisor(capsys):
    supervisor = Supervisor(
        [ProcessSpec("sleeper", SLEEPER), ProcessSpec("crasher", [sys.executable, "-c", "raise SystemExit(3)"])],
        stop_timeout_s=5,
        colour=False,
    )
    supervisor.start()

    code = supervisor.supervise()

    assert code == 1
    assert all(child.poll() is not None for child in supervisor.children.values())
    assert "crasher exited with code 3" in capsys.readouterr().out


def test_stopping_kills_the_grandchildren_too(tmp_path):
    supervisor = Supervisor([ProcessSpec("sleeper", SLEEPER)], stop_timeout_s=5, colour=False)
    supervisor.start()
    leader = psutil.Process(supervisor.children["sleeper"].pid)
    supervisor.wait_until(lambda: leader.children(), timeout_s=10, what="grandchild")
    family = [leader, *leader.children(recursive=True)]

    supervisor.stop()

    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_each_line_is_prefixed_with_the_process_name(capsys):
    supervisor = Supervisor(
        [ProcessSpec("web", [sys.executable, "-c", "print('hello'); print('world')"])], colour=False
    )
    supervisor.start()
    supervisor.supervise()

    out = capsys.readouterr().out.splitlines()
    assert "web     | hello" in out
    assert "web     | world" in out


@pytest.mark.e2e
def test_ctrl_c_on_start_all_leaves_no_process_behind(django_db_setup, tmp_path):
    port = port_reserve()
    env = {**os.environ, "DATABASE_URL": child_database_url(), "INFERIA_DATA_DIR": str(tmp_path)}
    env["INFERIA_WORKER_CONCURRENCY"] = "2"
    platform = inferia_start(["start", "all", "--port", str(port)], env=env)
    try:
        platform.wait_http(f"http://127.0.0.1:{port}/healthz")
        platform.wait_line("ready.")  # the Celery worker, once its pool processes exist
        platform.wait_line("celery beat v")  # its banner (celery.beat logs only warnings, see celery_app)
        running = platform.session_processes()
        names = " ".join(" ".join(p.cmdline()) for p in running)
        assert all(role in names for role in ("uvicorn", "celery -A celery_app worker", "beat"))
        assert "inferia_sim" not in names  # model replicas are the worker's to provision
        assert len(running) >= 5  # supervisor, web, worker + 2 pool processes, beat

        code = platform.interrupt()

        assert code == 0, platform.output[-3000:]
        assert not platform.session_processes()
        assert not [p for p in running if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        platform.kill_everything()
