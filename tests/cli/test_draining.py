"""Liveness, readiness and draining, as an orchestrator sees them: `/livez` whatever the dependencies, `/readyz`
failing once `inferia drain` has run while the server still serves, and a restarted web ready again."""

from __future__ import annotations

import os

import pytest
import requests
from django.test import Client

from inferia_cli import commands
from inferia_runtime.draining import draining
from inferia_runtime.redis_clients import sync_redis
from tests.kit.processes import child_database_url, inferia_start, port_reserve

pytestmark = pytest.mark.django_db


def test_readiness_follows_the_dependencies_and_draining_while_liveness_does_not(settings, tmp_path, monkeypatch):
    settings.DATA_DIR = tmp_path
    client = Client()
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200
    monkeypatch.setenv("INFERIA_DATA_DIR", str(tmp_path))  # restored after: child processes read it
    assert commands.command_drain(wait_s=0) == 0
    assert draining(tmp_path)
    answer = client.get("/readyz")
    assert (answer.status_code, answer.json()["checks"]) == (503, {"draining": "yes"})
    assert client.get("/livez").status_code == 200
    assert client.get("/healthz").status_code == 200  # the dependencies still answer

    settings.CACHE_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    sync_redis.cache_clear()
    try:
        (tmp_path / "draining").unlink()
        answer = client.get("/readyz")
        assert (answer.status_code, answer.json()["checks"]["redis"]) == (503, "error")
        assert client.get("/livez").status_code == 200
    finally:
        sync_redis.cache_clear()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_drained_web_serves_on_and_a_restarted_one_is_ready_again(tmp_path):
    port = port_reserve()
    env = {**os.environ, "DATABASE_URL": child_database_url(), "INFERIA_DATA_DIR": str(tmp_path)}
    web = inferia_start(["start", "web", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        web.wait_http(f"{base}/readyz")
        drain = inferia_start(["drain", "--wait", "0"], env=env)
        assert drain.popen.wait(timeout=30) == 0
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 503
        assert requests.get(f"{base}/livez", timeout=5).status_code == 200  # still serving meanwhile
        web.stop()
        web = inferia_start(["start", "web", "--port", str(port)], env=env)  # the marker is still on the volume
        web.wait_http(f"{base}/readyz")
    finally:
        web.kill_everything()
