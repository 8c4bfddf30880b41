"""vLLM's runtime LoRA API: loaded adapters are listed under their base model and servable by name."""

from __future__ import annotations

import json

from tests.sim.conftest import chat_body, post, request


def _model_cards(url: str) -> dict[str, dict]:
    _status, _headers, body = request(url, "GET", "/v1/models")
    return {card["id"]: card for card in json.loads(body)["data"]}


def test_a_loaded_adapter_is_listed_with_its_parent_and_servable(sim):
    status, _headers, body = post(sim.url, "/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": "/loras/sql"})
    served_status, _headers, served = post(sim.url, "/v1/chat/completions", chat_body(model="sql", max_tokens=2))

    assert status == 200
    assert body == b"Success: LoRA adapter 'sql' added successfully."
    card = _model_cards(sim.url)["sql"]
    assert card["parent"] == "inferia/sim-model"
    assert card["root"] == "/loras/sql"
    assert served_status == 200
    assert json.loads(served)["model"] == "sql"


def test_an_unloaded_adapter_disappears_and_is_no_longer_servable(sim):
    post(sim.url, "/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": "/loras/sql"})

    status, _headers, body = post(sim.url, "/v1/unload_lora_adapter", {"lora_name": "sql"})
    served_status, _headers, _served = post(sim.url, "/v1/chat/completions", chat_body(model="sql"))

    assert status == 200
    assert body == b"Success: LoRA adapter 'sql' removed successfully."
    assert "sql" not in _model_cards(sim.url)
    assert served_status == 404


def test_loading_an_adapter_twice_is_a_400(sim):
    post(sim.url, "/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": "/loras/sql"})

    status, _headers, body = post(sim.url, "/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": "/loras/sql"})

    assert status == 400
    assert json.loads(body)["error"] == {
        "message": "The lora adapter 'sql' has already been loaded.",
        "type": "InvalidUserInput",
        "param": None,
        "code": 400,
    }


def test_loading_without_a_path_is_a_400(sim):
    status, _headers, body = post(sim.url, "/v1/load_lora_adapter", {"lora_name": "sql"})

    assert status == 400
    assert json.loads(body)["error"]["type"] == "InvalidUserInput"


def test_unloading_an_unknown_adapter_is_a_404_like_current_vllm(sim):
    status, _headers, body = post(sim.url, "/v1/unload_lora_adapter", {"lora_name": "ghost"})

    assert status == 404
    assert json.loads(body)["error"]["type"] == "NotFoundError"
