"""INFERIA_LOG_FORMAT=json: one JSON object a line from the web process, the worker and the simulated engine, and a
request's lines carry its request id, organisation, key prefix, model and deployment."""

from __future__ import annotations

import json
import os

import pytest
import requests

from tests.factories import OrganizationFactory, api_key_issue, deployment_serving
from tests.kit.ports import port_reserve
from tests.kit.processes import child_database_url, inferia_start, sim_start, web_start
from tests.kit.waiting import eventually

pytestmark = pytest.mark.slow
JSON = {"INFERIA_LOG_FORMAT": "json", "INFERIA_UPSTREAM_ALLOW_PRIVATE": "1"}


def _objects(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_failed_requests_line_says_which_request_tenant_key_model_and_deployment(transactional_db):
    organization = OrganizationFactory(slug="logged")
    nothing_listens = f"http://127.0.0.1:{port_reserve()}"
    deployment, _ = deployment_serving(organization, "logged-chat", [nothing_listens])
    issued = api_key_issue(organization=organization, scopes=("inference",))
    web = web_start(child_database_url(), extra_env=JSON)
    try:
        answer = requests.post(
            f"{web.url}/v1/chat/completions",
            json={"model": "logged-chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {issued.secret}"},
            timeout=30,
        )
        assert answer.status_code >= 500
        request_id = answer.headers["x-request-id"]
        line = eventually(
            lambda: next((o for o in _request_lines(web, request_id) if "request failed" in o["message"]), None),
            timeout=10,
            what="the failed request's log line",
        )
    finally:
        web.stop()
    assert line["level"] == "WARNING"
    # Before it, the replica's failure, with why: what an operator reads first when a replica goes bad.
    (replica_line,) = (o for o in _request_lines(web, request_id) if "failed before answering" in o["message"])
    assert "ClientConnectorError" in replica_line["message"]
    assert (line["organization"], line["model"], line["deployment"]) == ("logged", "logged-chat", deployment.pk)
    assert line["key_prefix"] == issued.key.prefix
    assert issued.secret not in json.dumps(_objects(web.lines))
    # Every line the web process wrote is JSON, the server's own included.
    assert all(line.startswith("{") for line in web.lines if line.strip()), web.lines[:5]


def _request_lines(web, request_id: str) -> list[dict]:
    return [o for o in _objects(web.lines) if o.get("request_id") == request_id]


def test_the_worker_and_the_engine_write_json_lines(transactional_db, tmp_path):
    env = {**os.environ, **JSON, "DATABASE_URL": child_database_url(), "INFERIA_DATA_DIR": str(tmp_path)}
    worker = inferia_start(["start", "worker"], env=env)
    engine = sim_start("--log-level", "INFO", models=("logged-sim",), env={**os.environ, "INFERIA_LOG_FORMAT": "json"})
    try:
        ready = worker.wait_until(
            lambda: next((o for o in _objects(worker.lines) if "ready" in o.get("message", "")), None),
            what="the worker's ready line as JSON",
        )
        assert {"time", "level", "logger", "message"} <= set(ready)
        requests.get(f"{engine.url}/v1/models", timeout=5)
        engine_lines = eventually(lambda: _objects(engine.lines), timeout=10, what="the engine's JSON lines")
        assert all({"level", "logger", "message"} <= set(line) for line in engine_lines)
    finally:
        engine.stop()
        worker.kill_everything()
