"""URL dispatch plus the control endpoints: health, metrics, models and runtime LoRA adapters."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from inferia_sim import inference
from inferia_sim.engine import SimEngine
from inferia_sim.errors import ApiError
from inferia_sim.http import HttpRequest, HttpResponder
from inferia_sim.metrics import PROMETHEUS_CONTENT_TYPE, metrics_render

Endpoint = Callable[[SimEngine, HttpRequest, HttpResponder], Awaitable[None]]


async def health(engine: SimEngine, request: HttpRequest, responder: HttpResponder) -> None:
    """`GET /health`: 200 with an empty body once "loaded", 503 during the start-up delay."""
    responder.send(200 if engine.ready else 503, b"", b"")


async def metrics(engine: SimEngine, request: HttpRequest, responder: HttpResponder) -> None:
    """`GET /metrics`: Prometheus text with vLLM's metric names."""
    body = metrics_render(
        model_name=engine.config.base_model,
        stats=engine.stats,
        scheduler=engine.scheduler,
        prefix_cache=engine.prefix_cache,
    )
    responder.send(200, body, PROMETHEUS_CONTENT_TYPE)


def _model_card(
    engine: SimEngine, name: str, *, root: str, parent: str | None, max_model_len: int | None
) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": engine.created,
        "owned_by": "vllm",
        "root": root,
        "parent": parent,
        "max_model_len": max_model_len,
        "permission": [
            {
                "id": f"modelperm-{name}",
                "object": "model_permission",
                "created": engine.created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }


async def models(engine: SimEngine, request: HttpRequest, responder: HttpResponder) -> None:
    """`GET /v1/models`: every served name of the base model, then the loaded LoRA adapters (parent = base)."""
    engine.require_ready()
    config = engine.config
    cards = [
        _model_card(engine, name, root=config.base_model, parent=None, max_model_len=config.max_model_len)
        for name in config.models
    ]
    cards += [
        _model_card(engine, name, root=path, parent=config.base_model, max_model_len=None)
        for name, path in engine.lora_adapters.items()
    ]
    responder.send(200, json.dumps({"object": "list", "data": cards}).encode())


def _lora_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None


async def lora_load(engine: SimEngine, request: HttpRequest, responder: HttpResponder) -> None:
    """`POST /v1/load_lora_adapter`: nothing is read from `lora_path`; the adapter just becomes a servable name."""
    body = inference.json_object(request)
    name, path = _lora_field(body, "lora_name"), _lora_field(body, "lora_path")
    if name is None or path is None:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "Both 'lora_name' and 'lora_path' must be provided.", error_type="InvalidUserInput"
        )
    if name in engine.lora_adapters or name in engine.config.models:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"The lora adapter '{name}' has already been loaded.", error_type="InvalidUserInput"
        )
    engine.lora_adapters[name] = path
    responder.send(200, f"Success: LoRA adapter '{name}' added successfully.".encode(), b"text/plain; charset=utf-8")


async def lora_unload(engine: SimEngine, request: HttpRequest, responder: HttpResponder) -> None:
    """`POST /v1/unload_lora_adapter`."""
    body = inference.json_object(request)
    name = _lora_field(body, "lora_name")
    if name is None:
        raise ApiError(HTTPStatus.BAD_REQUEST, "'lora_name' needs to be provided.", error_type="InvalidUserInput")
    if name not in engine.lora_adapters:
        raise ApiError(HTTPStatus.NOT_FOUND, f"The lora adapter '{name}' cannot be found.", error_type="NotFoundError")
    del engine.lora_adapters[name]
    responder.send(200, f"Success: LoRA adapter '{name}' removed successfully.".encode(), b"text/plain; charset=utf-8")


ROUTES: dict[bytes, tuple[bytes, Endpoint]] = {
    b"/v1/chat/completions": (b"POST", inference.chat_completions),
    b"/v1/completions": (b"POST", inference.completions),
    b"/v1/embeddings": (b"POST", inference.embeddings),
    b"/v1/models": (b"GET", models),
    b"/health": (b"GET", health),
    b"/metrics": (b"GET", metrics),
    b"/tokenize": (b"POST", inference.tokenize),
    b"/v1/load_lora_adapter": (b"POST", lora_load),
    b"/v1/unload_lora_adapter": (b"POST", lora_unload),
}


def request_handler(engine: SimEngine) -> Callable[[HttpRequest, HttpResponder], Awaitable[None]]:
    """The connection-level handler: route by path and turn `ApiError` into an error response."""

    async def handle(request: HttpRequest, responder: HttpResponder) -> None:
        route = ROUTES.get(request.path)
        try:
            if route is None:
                responder.send(404, b'{"detail":"Not Found"}')  # FastAPI's answer for unknown paths, as vLLM's
                return
            method, endpoint = route
            if request.method != method:
                responder.send(405, b'{"detail":"Method Not Allowed"}')
                return
            await endpoint(engine, request, responder)
        except ApiError as error:
            if responder.started:
                responder.close()  # too late for a status code: the client sees a truncated response
            else:
                responder.send(error.status, error.body())

    return handle
