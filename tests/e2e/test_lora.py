"""LoRA adapters end to end: added over REST to a deployment the worker runs on the simulator, loaded by the worker
on its READY replica, and served under the adapter's own model name through `/v1`."""

from __future__ import annotations

import json
import urllib.request

import pytest
from openai import OpenAI

from inferia_cli.remote import ApiClient
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

TIMEOUT_S = 30


def _models_of(endpoint: str) -> dict[str, str | None]:
    base = endpoint.rstrip("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as response:  # noqa: S310 - the replica's http URL
        return {card["id"]: card.get("parent") for card in json.load(response)["data"]}


@pytest.fixture(scope="module")
def lora_deployment(platform_supervisor):
    """A one-replica simulator deployment of its own (the shared demo deployment stays as other tests expect it),
    READY, with adapter `lora-e2e-sql` added over REST; stopped afterwards."""
    platform = platform_supervisor.running()
    api = ApiClient(platform.base_url, platform.manage_key)
    pool = next(p for p in api.pages("pools/", {"organization": platform.organization_id}) if p["name"] == "local-sim")
    body = {"organization": platform.organization_id, "pool": pool["id"], "name": "lora-base"}
    deployment = api.post("deployments/", {**body, "served_model_name": "lora-base", "model_id": "org/lora-base"})
    replicas = eventually(
        lambda: [r for r in api.get("replicas/", {"deployment": deployment["id"]})["results"] if r["state"] == "ready"],
        timeout=TIMEOUT_S,
        interval=0.3,
        what="the lora-base replica READY",
    )
    api.post(f"deployments/{deployment['id']}/adapters/", {"name": "lora-e2e-sql", "path": "org/sql-lora"})
    try:
        yield api, deployment, replicas[0]["endpoint"]
    finally:
        api.post(f"deployments/{deployment['id']}/stop/", {"reason": "e2e done"})


def test_the_worker_loads_an_added_adapter_on_the_running_replica(lora_deployment):
    _api, _deployment, endpoint = lora_deployment
    eventually(
        lambda: _models_of(endpoint).get("lora-e2e-sql") == "lora-base",
        timeout=TIMEOUT_S,
        interval=0.3,
        what="the adapter loaded on the replica",
    )


def test_an_adapter_is_served_under_its_own_model_name(platform, lora_deployment):
    test_the_worker_loads_an_added_adapter_on_the_running_replica(lora_deployment)
    client = OpenAI(base_url=f"{platform.base_url}/v1", api_key=platform.key, max_retries=0, timeout=10)
    answer = eventually(
        lambda: client.chat.completions.create(model="lora-e2e-sql", messages=[{"role": "user", "content": "select"}]),
        timeout=10,
        interval=0.3,
        ignoring=(Exception,),
        what="an answer from the adapter",
    )

    assert answer.model == "lora-e2e-sql"
