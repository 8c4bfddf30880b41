"""External deployments end to end: an OpenAI-compatible server the user already runs (here an `inferia-sim` the
test starts, serving under its own model id) is registered through the REST API, adopted by the worker as a READY
replica, and serves `/v1/chat/completions` under the served name Inferia's clients ask for."""

from __future__ import annotations

import pytest
from openai import OpenAI

from inferia_cli.remote import ApiClient
from tests.kit.processes import sim_start
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

UPSTREAM_MODEL = "upstream-org/upstream-model"
READY_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def upstream_url():
    """An engine Inferia did not start: an inferia-sim serving `UPSTREAM_MODEL` (not the served name clients use)."""
    with sim_start(models=(UPSTREAM_MODEL,)) as engine:
        yield engine.url


def _wait_ready(api: ApiClient, deployment_id: int) -> list[dict]:
    def all_ready() -> list[dict]:
        replicas = api.get("replicas/", {"deployment": deployment_id})["results"]
        return replicas if replicas and all(replica["state"] == "ready" for replica in replicas) else []

    return eventually(all_ready, timeout=READY_TIMEOUT_S, interval=0.3, what="every replica READY")


def _chat_until_served(base_url: str, key: str, model: str) -> str:
    """The first answer to a chat under `model`, retried while the gateways' catalogs catch up (a second or so)."""
    client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=10)
    answer = eventually(
        lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]),
        timeout=10,
        interval=0.3,
        ignoring=(Exception,),
        what=f"an answer under {model}",
    )
    return answer.model


def _register(platform, upstream_url: str, served: str, **fields) -> dict:
    """The one REST call that adopts the upstream, then the wait for the worker to make its replica READY."""
    api = ApiClient(platform.base_url, platform.manage_key)
    body = {"organization": platform.organization_id, "served_model_name": served, "base_urls": [upstream_url]}
    deployment = api.post("deployments/external/", {**body, **fields})
    replicas = _wait_ready(api, deployment["id"])
    assert [replica["endpoint"] for replica in replicas] == [upstream_url]
    return deployment


def test_an_external_deployment_registered_in_one_rest_call_serves_chat(platform, upstream_url):
    _register(platform, upstream_url, UPSTREAM_MODEL)

    assert _chat_until_served(platform.base_url, platform.key, UPSTREAM_MODEL) == UPSTREAM_MODEL


def test_an_external_deployment_serves_chat_under_a_served_name_other_than_the_upstream_model(platform, upstream_url):
    _register(platform, upstream_url, "ext-e2e", model_id=UPSTREAM_MODEL)

    assert _chat_until_served(platform.base_url, platform.key, "ext-e2e") == "ext-e2e"
