"""Simulated text generation for `/v1/chat/completions` and `/v1/completions`, streamed (SSE) or whole.

The stream is assembled from bytes prepared ahead of time: per endpoint, each vocabulary word's JSON tail and
chunk-size line are computed once, and per request only the chunk head (id, created, model) is built. With zero
delays a whole 64-token stream is one `transport.write`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from http import HTTPStatus
from typing import Any

from inferia_sim.config import FailureType
from inferia_sim.engine import SimEngine
from inferia_sim.errors import ApiError, bad_request
from inferia_sim.http import HttpResponder, chunk_frame
from inferia_sim.tokens import OUTPUT_WORDS

SSE_CONTENT_TYPE = b"text/event-stream; charset=utf-8"
# With no inter-token delay, tokens go out in batches of this many per write, yielding to other streams between.
STREAM_BATCH_TOKENS = 256
_DONE_FRAMES = chunk_frame(b"data: [DONE]\n\n") + HttpResponder.stream_end()


class ChunkFormat:
    """Byte layout of one endpoint's streamed token chunks: `<size>\\r\\n<head><word><tail>\\r\\n`."""

    def __init__(
        self, *, object_name: str, id_prefix: str, token_prefix: bytes, token_suffix: bytes, final_suffix: bytes
    ) -> None:
        self.object_name = object_name
        self.id_prefix = id_prefix
        self.token_prefix = token_prefix  # after the common `data: {"id":...,"model":...,` part
        self.final_suffix = final_suffix  # `%s` takes the finish reason
        self.word_json = [json.dumps(word).encode() for word in OUTPUT_WORDS]
        self.tails = [word + token_suffix + b"\r\n" for word in self.word_json]
        self._size_lines: dict[int, list[bytes]] = {}

    def size_lines(self, head_len: int) -> list[bytes]:
        """Each word's chunk-size line for a request whose chunk head is `head_len` bytes (cached: it rarely varies)."""
        lines = self._size_lines.get(head_len)
        if lines is None:
            lines = self._size_lines[head_len] = [b"%x\r\n" % (head_len + len(tail) - 2) for tail in self.tails]
        return lines


CHAT_CHUNKS = ChunkFormat(
    object_name="chat.completion.chunk",
    id_prefix="chatcmpl-",
    token_prefix=b'"choices":[{"index":0,"delta":{"content":',
    token_suffix=b'},"logprobs":null,"finish_reason":null}]}\n\n',
    final_suffix=b'},"logprobs":null,"finish_reason":"%s","stop_reason":null}]}\n\n',
)
COMPLETION_CHUNKS = ChunkFormat(
    object_name="text_completion",
    id_prefix="cmpl-",
    token_prefix=b'"choices":[{"index":0,"text":',
    token_suffix=b',"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n',
    final_suffix=b',"logprobs":null,"finish_reason":"%s","stop_reason":null}]}\n\n',
)


class Generation:
    """One request's generation: what it asked for and how far it got."""

    __slots__ = (
        "arrived", "cached_tokens", "created", "finish_reason", "finished", "fmt", "generated", "include_usage",
        "model", "output_tokens", "prompt_ids", "prompt_tokens", "request_id", "text", "tool_call",
    )  # fmt: skip

    def __init__(
        self,
        *,
        fmt: ChunkFormat,
        model: str,
        prompt_tokens: int,
        output_tokens: int,
        finish_reason: str,
        include_usage: bool,
        prompt_ids: list[int] | None = None,
    ) -> None:
        self.arrived = time.monotonic()
        self.created = int(time.time())
        self.request_id = fmt.id_prefix + os.urandom(16).hex()
        self.fmt = fmt
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.finish_reason = finish_reason
        self.include_usage = include_usage
        self.prompt_ids = prompt_ids  # only when the prefix cache needs them
        self.cached_tokens = 0
        self.generated = 0
        self.finished = False
        self.tool_call: dict[str, Any] | None = None  # set when the answer calls a tool (inferia_sim.tools)
        self.text: str | None = None  # set when the answer is given text (structured output, inferia_sim.tools)

    def tool_call_set(self, call: dict[str, Any], tokens: int) -> None:
        """Answer with `call` instead of text: `tokens` of output at most, finished as `tool_calls`."""
        self.tool_call = call
        self.output_tokens = max(1, min(self.output_tokens, tokens))
        self.finish_reason = "tool_calls"

    def text_set(self, text: str, tokens: int) -> None:
        """Answer with `text` instead of the vocabulary's words: `tokens` of output at most, finished as `stop`."""
        self.text = text
        self.output_tokens = max(1, min(self.output_tokens, tokens))
        self.finish_reason = "stop"

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.output_tokens,
            "completion_tokens": self.output_tokens,
            "prompt_tokens_details": None,
        }


def output_plan(engine: SimEngine, body: dict[str, Any], prompt_tokens: int, *, chat: bool) -> tuple[int, str]:
    """How many tokens to generate and the finish reason, with vLLM's context-length checks.

    An explicit `max_tokens` is always generated in full ("length"): benchmarks rely on exact output sizes.
    Without one the simulated model "stops" after the default length, cut short by the context window.
    """
    max_len = engine.config.max_model_len
    if prompt_tokens >= max_len:
        raise bad_request(
            f"This model's maximum context length is {max_len} tokens. However, your request has {prompt_tokens} "
            "input tokens. Please reduce the length of the input messages.",
            param="messages" if chat else "prompt",
        )
    requested = body.get("max_completion_tokens") if chat else None
    if requested is None:
        requested = body.get("max_tokens")
    if requested is None:
        room = max_len - prompt_tokens
        default = engine.config.default_max_tokens
        return (default, "stop") if default <= room else (room, "length")
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise bad_request(f"max_tokens must be at least 1, got {requested}.", param="max_tokens")
    if prompt_tokens + requested > max_len:
        raise bad_request(
            f"This model's maximum context length is {max_len} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the messages, {requested} in the completion). "
            "Please reduce the length of the messages or completion.",
            param="max_tokens",
        )
    return requested, "length"


async def generation_run(engine: SimEngine, responder: HttpResponder, gen: Generation, *, stream: bool) -> None:
    """Inject the configured failure if drawn, queue for a running slot, then generate and account for it."""
    abort_after: int | None = None
    failure = engine.pick_failure()
    if failure is not None:
        if failure is FailureType.HTTP_500:
            raise ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "Simulated engine error (inferia-sim failure injection).")
        if failure is FailureType.HTTP_503:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "Simulated overload (inferia-sim failure injection).")
        if failure is FailureType.TIMEOUT:
            await asyncio.get_running_loop().create_future()  # never resolves; cancelled when the client leaves
        if failure is FailureType.DISCONNECT:
            responder.close()
            return
        abort_after = engine.rng.randint(1, gen.output_tokens - 1) if gen.output_tokens > 1 else 0

    scheduler = engine.scheduler
    blocks = scheduler.blocks_for(gen.prompt_tokens + gen.output_tokens)
    head = responder.response_head(200, SSE_CONTENT_TYPE, content_length=None) if stream else b""
    if not scheduler.try_admit(blocks):
        if head:
            responder.write(head)  # like vLLM, a queued stream has its headers but no tokens yet
            head = b""
        await scheduler.admit(blocks)
    if engine.prefix_cache is not None and gen.prompt_ids is not None:
        gen.cached_tokens = engine.prefix_cache.lookup_and_store(gen.prompt_ids)
    stats = engine.stats
    try:
        stats.prompt_tokens += gen.prompt_tokens
        if stream:
            await _stream(engine, responder, gen, head, abort_after)
        else:
            await _respond_whole(engine, responder, gen, abort_after)
    finally:
        scheduler.release(blocks)
        stats.generation_tokens += gen.generated
        if gen.finished:
            # vLLM's engine counts a tool call as a stop: `tool_calls` is the API's name for how it ended.
            stats.finished["length" if gen.finish_reason == "length" else "stop"] += 1
            stats.e2e_latency.observe(time.monotonic() - gen.arrived)
        else:
            stats.finished["abort"] += 1


def _first_token_ms(engine: SimEngine, gen: Generation) -> float:
    """The configured time to first token plus the prefill of the prompt tokens the prefix cache did not have."""
    config = engine.config
    return config.ttft_ms + config.prefill_ms_per_token * (gen.prompt_tokens - gen.cached_tokens)


def _chunk_common(gen: Generation, engine: SimEngine) -> bytes:
    return b'data: {"id":"%s","object":"%s","created":%d,"model":%s,' % (
        gen.request_id.encode(),
        gen.fmt.object_name.encode(),
        gen.created,
        engine.model_json(gen.model),
    )


def _append_tokens(engine: SimEngine, gen: Generation, head: bytes, parts: list[bytes], start: int, end: int) -> None:
    """Append the framed chunks of tokens [start, end); the request's last token carries the finish reason."""
    fmt = gen.fmt
    sequence = engine.output.sequence
    period = len(sequence)
    last = gen.output_tokens - 1
    plain_end = min(end, last)
    sizes = fmt.size_lines(len(head))
    tails = fmt.tails
    for index in range(start, plain_end):
        word = sequence[index % period]
        parts += (sizes[word], head, tails[word])
    if end > last >= start:
        word = sequence[last % period]
        parts.append(chunk_frame(head + fmt.word_json[word] + fmt.final_suffix % gen.finish_reason.encode()))


async def _stream(
    engine: SimEngine, responder: HttpResponder, gen: Generation, pending_head: bytes, abort_after: int | None
) -> None:
    config = engine.config
    common = _chunk_common(gen, engine)
    token_head = common + gen.fmt.token_prefix
    ttft = engine.delay_s(_first_token_ms(engine, gen))
    if ttft:
        if pending_head:
            responder.write(pending_head)
            pending_head = b""
        await asyncio.sleep(ttft)

    parts = [pending_head] if pending_head else []
    if gen.tool_call is not None or gen.text is not None:
        _whole_answer_frames(gen, common, parts)
        responder.write(b"".join(parts))
        engine.stats.ttft.observe(time.monotonic() - gen.arrived)
        gen.generated = gen.output_tokens
        gen.finished = True
        return
    if gen.fmt is CHAT_CHUNKS:
        parts.append(
            chunk_frame(common + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                        b'"logprobs":null,"finish_reason":null}]}\n\n')
        )  # fmt: skip
    limit = gen.output_tokens if abort_after is None else abort_after
    paced = config.itl_ms > 0
    position = 0
    while True:
        end = min(limit, position + (1 if paced else STREAM_BATCH_TOKENS))
        _append_tokens(engine, gen, token_head, parts, position, end)
        if end == limit and abort_after is None:
            if gen.include_usage:
                usage = b'"choices":[],"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}\n\n' % (
                    gen.prompt_tokens,
                    gen.prompt_tokens + gen.output_tokens,
                    gen.output_tokens,
                )
                parts.append(chunk_frame(common + usage))
            parts.append(_DONE_FRAMES)
        responder.write(b"".join(parts))
        if position == 0 and end > 0:
            engine.stats.ttft.observe(time.monotonic() - gen.arrived)
        gen.generated = position = end
        if position == limit:
            break
        parts = []
        await responder.drain()
        # Between batches yield even without a delay, so hundreds of concurrent streams all make progress.
        await asyncio.sleep(engine.delay_s(config.itl_ms))
        if responder.closed:
            return
    if abort_after is not None:
        responder.close()  # the injected mid-stream failure: no final chunk, no [DONE], no terminating chunk
        return
    gen.finished = True


async def _respond_whole(engine: SimEngine, responder: HttpResponder, gen: Generation, abort_after: int | None) -> None:
    config = engine.config
    ttft = engine.delay_s(_first_token_ms(engine, gen))
    if ttft:
        await asyncio.sleep(ttft)
    engine.stats.ttft.observe(time.monotonic() - gen.arrived)
    decode = engine.delay_s(config.itl_ms) * (gen.output_tokens - 1)
    if decode:
        await asyncio.sleep(decode)
    text = gen.text if gen.text is not None else engine.output.text(gen.output_tokens)
    if gen.fmt is CHAT_CHUNKS:
        calls = [gen.tool_call] if gen.tool_call is not None else []
        choice: dict[str, Any] = {
            "index": 0,
            "message": {
                "role": "assistant",
                "reasoning_content": None,
                "content": None if calls else text,
                "tool_calls": calls,
            },
            "logprobs": None,
            "finish_reason": gen.finish_reason,
            "stop_reason": None,
        }
        kind = "chat.completion"
    else:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": gen.finish_reason,
            "stop_reason": None,
            "prompt_logprobs": None,
        }
        kind = "text_completion"
    response = {
        "id": gen.request_id,
        "object": kind,
        "created": gen.created,
        "model": gen.model,
        "choices": [choice],
        "usage": gen.usage(),
    }
    if gen.fmt is CHAT_CHUNKS:
        response["prompt_logprobs"] = None
    body = json.dumps(response, ensure_ascii=False).encode()
    if abort_after is not None:
        # The injected mid-stream failure: the promised body is cut off halfway and the connection dropped.
        responder.write(responder.response_head(200, b"application/json", content_length=len(body)))
        responder.write(body[: len(body) // 2])
        responder.close()
        return
    responder.send(200, body)
    gen.generated = gen.output_tokens
    gen.finished = True


def _whole_answer_frames(gen: Generation, common: bytes, parts: list[bytes]) -> None:
    """A streamed tool call as vLLM sends one (the role, the call's id and name, its arguments, the finish reason), or
    a given text in one chunk after the role."""
    call = gen.tool_call
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if call is not None:
        opened = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
        deltas.append({"tool_calls": [opened]})
        deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]})
    else:
        deltas.append({"content": gen.text})
    for delta in deltas:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        parts.append(chunk_frame(common + json.dumps({"choices": [choice]}).encode()[1:] + b"\n\n"))
    final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": gen.finish_reason, "stop_reason": None}
    parts.append(chunk_frame(common + json.dumps({"choices": [final]}).encode()[1:] + b"\n\n"))
    if gen.include_usage:
        usage = {"choices": [], "usage": gen.usage()}
        parts.append(chunk_frame(common + json.dumps(usage).encode()[1:] + b"\n\n"))
    parts.append(_DONE_FRAMES)
