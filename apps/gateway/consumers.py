"""The Channels consumers that serve `/v1`: they read the request body, watch for the client leaving, and hand the
request to the pipeline.

They replace `AsyncConsumer.__call__`: the stock one opens a channel-layer channel per request and hops to a
thread before every message to close stale database connections. The data plane uses neither (it never touches
the database on a warm path, and its rare cold lookups close stale connections themselves), and on the hot path
each of those costs more than the rest of the request's CPU.

Every `/v1` request, whatever its route and outcome, is timed from its arrival to its last byte
(`inferia_gateway_request_duration_seconds`, labelled by the consumer's `route`).
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABCMeta, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from apps.gateway import errors, messages, metrics, pipeline, responses, responses_store, schemas, vector_search
from apps.gateway.exchange import Exchange
from apps.gateway.messages_out import MessagesSend
from apps.gateway.messages_schemas import CountTokensRequest, MessagesRequest
from apps.gateway.responses_out import ResponsesSend
from apps.gateway.runtime import runtime
from apps.gateway.translated_send import TranslatedSend
from inferia_runtime.body_writer import BODY_WRITER, ON_CLIENT_GONE, OnClientGone
from inferia_runtime.json_codec import json_compact

# A body over the limit is still read (and dropped) up to this size before the 413, because a client that is
# still sending when the server answers and closes sees a reset instead of the error. Past it, answer at once.
DRAIN_CAP_BYTES = 64 * 1024 * 1024

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class GatewayConsumer(AsyncHttpConsumer, metaclass=ABCMeta):  # type: ignore[misc]  # Channels is untyped
    """Base of the `/v1` consumers: a lean ASGI entry that gives `respond(exchange)` the whole body."""

    methods: tuple[str, ...] = ("POST",)
    watch_disconnect = False
    route = "other"  # the latency metric's label: one per consumer, never the path a client sent
    # Whether its streams may go through the fast relay: the engine's events are the answer, or an edge translates
    # them in step (`TranslatedSend.fast_writer`).
    fast_relay = False

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.scope = scope
        self.base_send = send
        exchange = Exchange(scope, send)
        extensions = scope.get("extensions") or {}
        self.on_client_gone: OnClientGone | None = extensions.get(ON_CLIENT_GONE)
        if self.fast_relay:
            writer = extensions.get(BODY_WRITER)
            if writer is not None and isinstance(send, TranslatedSend):
                writer = send.fast_writer(writer)  # the edge's translation in front of the server's writes
            exchange.body_writer = writer
        try:
            await self._serve(exchange, receive)
        finally:
            # A client that left before any answer counts as 499, as the usage event records it.
            metrics.request_finished(
                route=self.route,
                model=exchange.model,
                status=exchange.status or 499,
                seconds=time.perf_counter() - exchange.started,
            )

    async def _serve(self, exchange: Exchange, receive: Receive) -> None:
        if exchange.method not in self.methods:
            await exchange.respond_error(errors.method_not_allowed(exchange.method))
            return
        limit = settings.INFERIA_MAX_BODY_BYTES
        if exchange.content_length is not None and exchange.content_length > max(limit, DRAIN_CAP_BYTES):
            await exchange.respond_error(errors.body_too_large(limit), close=True)
            return
        body = await self._body(receive, limit)
        if body is None:
            return  # the client left before sending it all
        if isinstance(body, errors.GatewayError):
            await exchange.respond_error(body, close=True)
            return
        exchange.body = body
        if not self.watch_disconnect:
            await self.respond(exchange)
            return
        client_gone = _client_gone(exchange, asyncio.current_task())
        on_client_gone = self.on_client_gone
        if on_client_gone is not None:  # the server says so itself: no task waiting on receive()
            on_client_gone(client_gone)
            try:
                await self.respond(exchange)
            finally:
                exchange.finishing = True
                on_client_gone(None)  # the callback refers to the exchange: no cycle left behind
            return
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(_disconnect_message(client_gone))
        try:
            await self.respond(exchange)
        finally:
            exchange.finishing = True
            if not watcher.done():
                watcher.cancel()

    @staticmethod
    async def _body(receive: Receive, limit: int) -> bytes | errors.GatewayError | None:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            return body if len(body) <= limit else errors.body_too_large(limit)
        parts = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            part = message.get("body", b"")
            size += len(part)
            if size <= limit:
                parts.append(part)
            elif size > DRAIN_CAP_BYTES:
                return errors.body_too_large(limit)
            elif parts:
                parts = []  # over the limit: keep reading (so the client sees the 413), keep nothing
            if not message.get("more_body"):
                return b"".join(parts) if size <= limit else errors.body_too_large(limit)

    @abstractmethod
    async def respond(self, exchange: Exchange) -> None:
        """Answer the exchange, whose body has been read and checked against the size limit."""


def _client_gone(exchange: Exchange, task: asyncio.Task[Any] | None) -> Callable[[], None]:
    """What a client leaving before its answer is finishing does: the request's task is cancelled."""

    def gone() -> None:
        if task is not None and not exchange.finishing:
            exchange.client_gone = True
            task.cancel()

    return gone


def _disconnect_message(gone: Callable[[], None]) -> Callable[[asyncio.Future[Any]], None]:
    def on_message(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None and future.result().get("type") == "http.disconnect":
            gone()

    return on_message


class ChatCompletionsConsumer(GatewayConsumer):
    """`POST /v1/chat/completions`."""

    route = "chat.completions"

    watch_disconnect = True
    fast_relay = True

    async def respond(self, exchange: Exchange) -> None:
        await pipeline.inference_handle(exchange, schemas.CHAT_COMPLETIONS)


class CompletionsConsumer(GatewayConsumer):
    """`POST /v1/completions`."""

    route = "completions"

    watch_disconnect = True
    fast_relay = True

    async def respond(self, exchange: Exchange) -> None:
        await pipeline.inference_handle(exchange, schemas.COMPLETIONS)


class EmbeddingsConsumer(GatewayConsumer):
    """`POST /v1/embeddings`."""

    route = "embeddings"

    watch_disconnect = True

    async def respond(self, exchange: Exchange) -> None:
        await pipeline.inference_handle(exchange, schemas.EMBEDDINGS)


class _AnthropicConsumer(GatewayConsumer):
    """Base of Anthropic's endpoints: `x-api-key` read as the key, every answer translated into Anthropic's shapes."""

    translates_answers = True

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.out = MessagesSend(send, answers=self.translates_answers)
        scope = {**scope, "headers": messages.headers_with_api_key(scope["headers"])}
        await super().__call__(scope, receive, self.out)

    async def _translated(
        self, exchange: Exchange, schema: type[CountTokensRequest], endpoint: schemas.Endpoint | None
    ) -> tuple[CountTokensRequest, dict[str, Any]] | None:
        """The request and the chat completion it becomes, or None once a 400 was answered (to a caller whose key is
        good, and metered for an inference `endpoint`: a bad key is a 401 first)."""
        try:
            request = messages.request_parse(exchange.body, schema)
            return request, messages.chat_document(request)
        except errors.GatewayError as invalid:
            await pipeline.refusal_answer(exchange, invalid, endpoint)
        return None


class MessagesConsumer(_AnthropicConsumer):
    """`POST /v1/messages`: Anthropic's Messages API, as a chat completion through the same pipeline."""

    route = "messages"

    watch_disconnect = True
    fast_relay = True

    async def respond(self, exchange: Exchange) -> None:
        translated = await self._translated(exchange, MessagesRequest, schemas.MESSAGES)
        if translated is None:
            return
        request, document = translated
        assert isinstance(request, MessagesRequest)
        self.out.stop_sequences = tuple(request.stop_sequences or ())
        exchange.body = json_compact(document)
        await pipeline.inference_handle(exchange, schemas.MESSAGES)


class CountTokensConsumer(_AnthropicConsumer):
    """`POST /v1/messages/count_tokens`."""

    route = "messages.count_tokens"
    translates_answers = False

    async def respond(self, exchange: Exchange) -> None:
        translated = await self._translated(exchange, CountTokensRequest, None)
        if translated is not None:
            request, document = translated
            await pipeline.tokens_count(exchange, request.model, document)


class ResponsesConsumer(GatewayConsumer):
    """`POST /v1/responses`: OpenAI's Responses API, as a chat completion through the same pipeline. The caller is
    authenticated first here, since `previous_response_id` and storing read its organisation."""

    route = "responses"

    watch_disconnect = True
    fast_relay = True

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.out = ResponsesSend(send)
        await super().__call__(scope, receive, self.out)

    async def respond(self, exchange: Exchange) -> None:
        rt = runtime()
        try:
            request = responses.request_parse(exchange.body)
        except errors.GatewayError as invalid:
            await pipeline.refusal_answer(exchange, invalid, schemas.RESPONSES)  # a bad key is a 401 first
            return
        try:
            principal = await pipeline.authenticate(rt, exchange)
        except errors.GatewayError as unauthenticated:
            await exchange.respond_error(unauthenticated)
            return
        try:
            policy = await pipeline.policy_resolve(rt, principal)
            earlier = None
            if request.previous_response_id is not None:
                stored = await responses_store.stored_response_get(
                    rt.redis, organization_id=principal.organization_id, response_id=request.previous_response_id
                )
                if stored is None:
                    raise responses_store.response_not_found(request.previous_response_id, param="previous_response_id")
                earlier = stored["conversation"]
            document, conversation = responses.chat_document(request, earlier=earlier)
        except errors.GatewayError as refused:
            await pipeline.refusal_answer(exchange, refused, schemas.RESPONSES, principal)
            return
        storing = policy.responses_store and request.store is not False
        self.out.response_id = responses_store.response_id_new()
        self.out.echo = responses.response_echo(request, stored=storing)
        self.out.exchange_follow(exchange)
        if "retrieval" in document:
            self.out.search_query = responses.last_user_text(document["messages"])
        if storing:

            async def store(response: dict[str, Any]) -> None:
                kept = await responses_store.stored_response_put(
                    rt.redis,
                    organization_id=principal.organization_id,
                    response=response,
                    input_items=responses_store.input_items_of(request),
                    conversation=[*conversation, responses_store.assistant_message(response)],
                )
                response["store"] = kept

            self.out.completed = store
        exchange.body = json_compact(document)
        await pipeline.inference_handle(exchange, schemas.RESPONSES, principal)


class StoredResponseConsumer(GatewayConsumer):
    """`GET` and `DELETE /v1/responses/{id}`, and `GET /v1/responses/{id}/input_items`: a response stored for the
    caller's organisation."""

    route = "responses.stored"

    methods = ("GET", "DELETE")

    async def respond(self, exchange: Exchange) -> None:
        rt = runtime()
        response_id, _, listing = exchange.path[len("/v1/responses/") :].partition("/")
        try:
            principal = await pipeline.authenticate(rt, exchange)
            organization_id = principal.organization_id
            if listing:
                if exchange.method != "GET":
                    raise errors.method_not_allowed(exchange.method)
                stored = await responses_store.stored_response_get(
                    rt.redis, organization_id=organization_id, response_id=response_id
                )
                if stored is None:
                    raise responses_store.response_not_found(response_id)
                body = responses_store.input_items_page(stored["input_items"], self.scope.get("query_string", b""))
            elif exchange.method == "DELETE":
                if not await responses_store.stored_response_delete(
                    rt.redis, organization_id=organization_id, response_id=response_id
                ):
                    raise responses_store.response_not_found(response_id)
                body = {"id": response_id, "object": "response", "deleted": True}
            else:
                stored = await responses_store.stored_response_get(
                    rt.redis, organization_id=organization_id, response_id=response_id
                )
                if stored is None:
                    raise responses_store.response_not_found(response_id)
                body = stored["response"]
        except errors.GatewayError as error:
            await exchange.respond_error(error)
            return
        await exchange.respond(200, json.dumps(body, ensure_ascii=False).encode())


class ModelsConsumer(GatewayConsumer):
    """`GET /v1/models` and `GET /v1/models/{model}`."""

    route = "models"

    methods = ("GET",)

    async def respond(self, exchange: Exchange) -> None:
        model = exchange.path[len("/v1/models") :].lstrip("/")
        if model:
            await pipeline.model_retrieve(exchange, model)
        else:
            await pipeline.models_list(exchange)


class VectorStoreSearchConsumer(GatewayConsumer):
    """`POST /v1/vector_stores/{id}/search`."""

    route = "vector_stores.search"

    watch_disconnect = True

    async def respond(self, exchange: Exchange) -> None:
        store_id = vector_search.search_store_id(exchange.path)
        await vector_search.vector_store_search(exchange, store_id or "")


class NotFoundConsumer(GatewayConsumer):
    """Any other `/v1` path: 404 in OpenAI's shape."""

    methods = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

    async def respond(self, exchange: Exchange) -> None:
        await exchange.respond_error(errors.not_found(exchange.path))
