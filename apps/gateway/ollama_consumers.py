"""The consumers of Ollama's API under `/ollama` (apps.gateway.ollama): each answer goes through `OllamaSend`, which
puts it in Ollama's shapes; inference runs through the pipeline like `/v1`'s, under its own endpoint name and route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from apps.gateway import errors, ollama, pipeline, schemas
from apps.gateway.consumers import GatewayConsumer, Receive, Send
from apps.gateway.errors import GatewayError
from apps.gateway.exchange import Exchange
from apps.gateway.ollama_out import CHAT, EMBED, GENERATE, OllamaSend
from apps.gateway.ollama_schemas import ChatRequest, EmbedRequest, GenerateRequest, ShowRequest
from apps.gateway.runtime import runtime

PREFIX = "/ollama"
Request = TypeVar("Request", bound=BaseModel)


class _OllamaConsumer(GatewayConsumer):
    """Base of Ollama's endpoints: every answer, errors included, in Ollama's shapes."""

    answers = ""  # what OllamaSend translates: CHAT, GENERATE, EMBED, or "" (the answer is already Ollama's)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.out = OllamaSend(send, answers=self.answers)
        await super().__call__(scope, receive, self.out)

    # The inference its requests are, whose refusals are metered (None: not an inference).
    endpoint: schemas.Endpoint | None = None

    async def _translated(
        self, exchange: Exchange, schema: type[Request], translate: Callable[[Request], dict[str, Any]] | None = None
    ) -> tuple[Request, dict[str, Any]] | None:
        """The request and what it translates into, or None once a 400 was answered (to a caller whose key is good,
        and metered for an inference: a bad key is a 401 first)."""
        try:
            request = ollama.request_parse(exchange.body, schema)
            return request, translate(request) if translate is not None else {}
        except GatewayError as invalid:
            await pipeline.refusal_answer(exchange, invalid, self.endpoint)
        return None

    @staticmethod
    async def _inference(exchange: Exchange, document: dict[str, Any], endpoint: schemas.Endpoint) -> None:
        exchange.body = ollama.body_of(document)
        await pipeline.inference_handle(exchange, endpoint)

    async def _loaded(self, exchange: Exchange, model: str, *, chat: bool) -> None:
        """A request that only asks to load the model: answered once the key may use it."""
        try:
            await pipeline.model_usable(runtime(), exchange, model)
        except GatewayError as error:
            await exchange.respond_error(error)
            return
        self.out.answers = ""  # already Ollama's
        await exchange.respond(200, ollama.loaded_document(model, chat=chat))


class OllamaChatConsumer(_OllamaConsumer):
    """`POST /ollama/api/chat`."""

    route = "ollama.chat"
    answers = CHAT
    watch_disconnect = True
    fast_relay = True
    endpoint = schemas.OLLAMA_CHAT

    async def respond(self, exchange: Exchange) -> None:
        translated = await self._translated(exchange, ChatRequest, ollama.chat_document)
        if translated is None:
            return
        request, document = translated
        if not request.messages:
            await self._loaded(exchange, request.model, chat=True)
            return
        await self._inference(exchange, document, schemas.OLLAMA_CHAT)


class OllamaGenerateConsumer(_OllamaConsumer):
    """`POST /ollama/api/generate`."""

    route = "ollama.generate"
    answers = GENERATE
    watch_disconnect = True
    fast_relay = True
    endpoint = schemas.OLLAMA_GENERATE

    async def respond(self, exchange: Exchange) -> None:
        translated = await self._translated(exchange, GenerateRequest, ollama.generate_document)
        if translated is None:
            return
        request, document = translated
        if not request.prompt and not request.system:
            await self._loaded(exchange, request.model, chat=False)
            return
        await self._inference(
            exchange, document, schemas.OLLAMA_GENERATE_RAW if request.raw else schemas.OLLAMA_GENERATE
        )


class OllamaEmbedConsumer(_OllamaConsumer):
    """`POST /ollama/api/embed`."""

    route = "ollama.embed"
    answers = EMBED
    watch_disconnect = True
    endpoint = schemas.OLLAMA_EMBED

    async def respond(self, exchange: Exchange) -> None:
        translated = await self._translated(exchange, EmbedRequest, ollama.embed_document)
        if translated is not None:
            await self._inference(exchange, translated[1], schemas.OLLAMA_EMBED)


class OllamaTagsConsumer(_OllamaConsumer):
    """`GET /ollama/api/tags`: the models the key may use, as `/v1/models` lists them."""

    route = "ollama.tags"
    methods = ("GET",)

    async def respond(self, exchange: Exchange) -> None:
        rt = runtime()
        try:
            principal = await pipeline.authenticate(rt, exchange)
        except GatewayError as error:
            await exchange.respond_error(error)
            return
        await exchange.respond(200, ollama.tags_document(await pipeline.model_cards(rt, principal)))


class OllamaShowConsumer(_OllamaConsumer):
    """`POST /ollama/api/show`: one model the key may use."""

    route = "ollama.show"

    async def respond(self, exchange: Exchange) -> None:
        translated = await self._translated(exchange, ShowRequest)
        if translated is None:
            return
        try:
            principal, route = await pipeline.model_usable(runtime(), exchange, translated[0].model)
        except GatewayError as error:
            await exchange.respond_error(error)
            return
        await exchange.respond(200, ollama.show_document(pipeline.model_card(route, principal)))


class OllamaVersionConsumer(_OllamaConsumer):
    """`GET /ollama/api/version`: open, as Ollama's (it says nothing about any tenant)."""

    route = "ollama.version"
    methods = ("GET",)

    async def respond(self, exchange: Exchange) -> None:
        await exchange.respond(200, ollama.version_document())


class OllamaRootConsumer(_OllamaConsumer):
    """`GET /ollama`: the line Ollama's server answers, which clients probe to find one."""

    route = "ollama"
    methods = ("GET",)

    async def respond(self, exchange: Exchange) -> None:
        await exchange.respond(200, ollama.RUNNING, b"text/plain; charset=utf-8")


class OllamaNotFoundConsumer(_OllamaConsumer):
    """Any other `/ollama` path: 404 in Ollama's shape."""

    methods = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

    async def respond(self, exchange: Exchange) -> None:
        await exchange.respond_error(errors.not_found(exchange.path))


ROUTES = {
    PREFIX: OllamaRootConsumer.as_asgi(),
    f"{PREFIX}/api/chat": OllamaChatConsumer.as_asgi(),
    f"{PREFIX}/api/generate": OllamaGenerateConsumer.as_asgi(),
    f"{PREFIX}/api/embed": OllamaEmbedConsumer.as_asgi(),
    f"{PREFIX}/api/tags": OllamaTagsConsumer.as_asgi(),
    f"{PREFIX}/api/show": OllamaShowConsumer.as_asgi(),
    f"{PREFIX}/api/version": OllamaVersionConsumer.as_asgi(),
}
NOT_FOUND = OllamaNotFoundConsumer.as_asgi()
