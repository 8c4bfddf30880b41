"""Embeddings and token counts for knowledge bases, through Inferia's own gateway.

Knowledge never talks to an engine itself: it sends `/v1/embeddings` requests through the gateway, in-process (no
network hop, no URL to configure), with a key of the organisation, so that routing and failover, rate limits,
quotas and budgets, and usage metering apply to ingestion and to search queries as to any application's request.
The gateway sits above knowledge in the layers, so it installs its caller here at startup (`gateway_install`)
instead of knowledge importing it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from array import array
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from inferia_runtime.errors import DomainRefusal

EMBEDDINGS_PATH = "/v1/embeddings"
DIMENSIONS_PROBE_TEXT = "dimensions"
T = TypeVar("T")
# How long the tasks a job's loop leaves behind get to stop once cancelled.
LEFTOVER_TASKS_TIMEOUT_S = 5.0

logger = logging.getLogger(__name__)


class GatewayCaller(Protocol):
    """What the gateway offers knowledge: one request through its `/v1` pipeline, the engine's token count of a
    text, and closing the calling event loop's resources (a worker runs each job in a loop of its own)."""

    async def request(self, *, path: str, secret: str, body: bytes) -> tuple[int, bytes]: ...

    async def token_count(self, *, organization_id: int, model: str, text: str) -> int | None: ...

    async def close(self) -> None: ...


_caller: GatewayCaller | None = None


def gateway_install(caller: GatewayCaller) -> None:
    """Called by the gateway app when Django starts (every process: web, worker, CLI)."""
    global _caller
    _caller = caller


def gateway_caller() -> GatewayCaller:
    if _caller is None:
        raise RuntimeError("the gateway app is not installed: knowledge needs it for embeddings")
    return _caller


class EmbeddingError(DomainRefusal):
    """The gateway refused or failed an embedding request: its status, OpenAI error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Embedded:
    vectors: list[list[float]]
    prompt_tokens: int


def _decode(item: Any) -> list[float]:
    value = item.get("embedding") if isinstance(item, dict) else None
    if isinstance(value, str):  # base64 little-endian float32, what we ask for: a quarter of the JSON's size
        floats = array("f")
        floats.frombytes(base64.b64decode(value))
        return floats.tolist()
    if isinstance(value, list):
        return [float(x) for x in value]
    raise EmbeddingError(502, "bad_gateway", "the embedding model answered without an embedding")


def _error_of(status: int, payload: bytes) -> EmbeddingError:
    try:
        error = json.loads(payload)["error"]
        return EmbeddingError(status, str(error.get("code") or error.get("type") or "error"), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return EmbeddingError(status, "error", f"the embedding request failed with status {status}")


async def embeddings_create(*, secret: str, model: str, inputs: Sequence[str]) -> Embedded:
    """Embed `inputs` with `model` as the key `secret` may; EmbeddingError with the gateway's answer otherwise."""
    body = json.dumps({"model": model, "input": list(inputs), "encoding_format": "base64"}, ensure_ascii=False)
    status, payload = await gateway_caller().request(path=EMBEDDINGS_PATH, secret=secret, body=body.encode())
    if status != 200:
        raise _error_of(status, payload)
    try:
        document = json.loads(payload)
        data = sorted(document["data"], key=lambda item: item.get("index", 0))
        vectors = [_decode(item) for item in data]
        tokens = int((document.get("usage") or {}).get("prompt_tokens") or 0)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EmbeddingError(502, "bad_gateway", "the embedding model's answer could not be read") from None
    if len(vectors) != len(inputs):
        raise EmbeddingError(502, "bad_gateway", "the embedding model answered a different number of vectors")
    return Embedded(vectors=vectors, prompt_tokens=tokens)


async def token_count_of(*, organization_id: int, model: str, text: str) -> int | None:
    """How many tokens `model`'s engine cuts `text` into (`/tokenize`, without the strings: a smaller answer), or
    None when it cannot tell."""
    return await gateway_caller().token_count(organization_id=organization_id, model=model, text=text)


async def embedding_dimensions_probe(*, secret: str, model: str) -> int:
    """How many dimensions `model`'s vectors have: asked of the model itself, once, when a store is created."""
    embedded = await embeddings_create(secret=secret, model=model, inputs=[DIMENSIONS_PROBE_TEXT])
    return len(embedded.vectors[0])


def run_in_own_loop(work: Callable[[], Awaitable[T]]) -> T:
    """Run async embedding work from sync code (a Celery task, a CLI command, a Django view) in a fresh event loop,
    closing the gateway's resources of that loop afterwards.

    The loop runs on a thread of its own: a sync Django view served by ASGI runs inside asgiref's `async_to_sync`,
    where the gateway's own `sync_to_async` database calls could not be scheduled from the view's thread."""

    async def run() -> T:
        try:
            return await work()
        finally:
            await gateway_caller().close()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="knowledge-loop") as pool:
        return pool.submit(_run_bounded, run()).result()


def _run_bounded(coroutine: Awaitable[T]) -> T:
    """`asyncio.run`, but a task left behind that does not stop when cancelled is given up after
    LEFTOVER_TASKS_TIMEOUT_S: `asyncio.run` would wait for it, holding the job (or the request) forever."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coroutine)
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=LEFTOVER_TASKS_TIMEOUT_S))
            stuck = [task for task in leftovers if not task.done()]
            if stuck:
                logger.warning("gave up %d task(s) that did not stop when cancelled: %s", len(stuck), stuck)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
