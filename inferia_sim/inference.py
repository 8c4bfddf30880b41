"""Request parsing for the inference endpoints: chat, completions, embeddings and tokenize."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
import time
from array import array
from functools import lru_cache
from typing import Any

from inferia_sim.engine import SimEngine
from inferia_sim.errors import bad_request
from inferia_sim.generation import CHAT_CHUNKS, COMPLETION_CHUNKS, Generation, generation_run, output_plan
from inferia_sim.http import HttpRequest, HttpResponder
from inferia_sim.tokens import (
    chat_prompt_token_count,
    chat_prompt_token_ids,
    chat_prompt_token_strs,
    text_token_count,
    text_token_ids,
    text_token_strs,
)
from inferia_sim.tools import structured_text, tool_call, tool_called


def json_object(request: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 in vLLM's error shape."""
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"Invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("Field required: `messages` must be a non-empty list.", param="messages")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request("Each message must be an object with a string `role`.", param="messages")
    return messages


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad_request("`stream` must be a boolean.", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("`stream_options` must be an object.", param="stream_options")
    return stream, options.get("include_usage") is True


def _require_single_choice(body: dict[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise bad_request("inferia-sim generates a single choice per request; `n` must be 1.", param="n")


def _chat_prompt_tokens(messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> int:
    try:
        return chat_prompt_token_count(messages, add_generation_prompt=add_generation_prompt)
    except ValueError as exc:
        raise bad_request(str(exc), param="messages") from None


async def chat_completions(engine: SimEngine, request: HttpRequest, responder: HttpResponder) -> None:
    """`POST /v1/chat/completions`."""
    engine.require_ready()
    body = json_object(request)
    model = engine.resolve_model(body.get("model"))
    messages = _messages(body)
    stream, include_usage = _stream_flags(body)
    _require_single_choice(body)
    prompt_tokens = _chat_prompt_tokens(messages, add_generation_prompt=body.get("add_generation_prompt") is not False)
    output_tokens, finish_reason = output_plan(engine, body, prompt_tokens, chat=True)
    gen = Generation(
        fmt=CHAT_CHUNKS,
        model=model,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        finish_reason=finish_reason,
        include_usage=include_usage,
        prompt_ids=chat_prompt_token_ids(messages, add_generation_prompt=body.get("add_generation_prompt") is not False)
        if engine.prefix_cache is not None
        else None,
    )
    function = tool_called(body)
    structured = structured_text(body) if function is None else None
    if function is not None:
        call = tool_call(function)
        gen.tool_call_set(call, text_token_count(call["function"]["arguments"]))
    elif structured is not None:
        gen.text_set(structured, text_token_count(structured))
    await generation_run(engine, responder, gen, stream=stream)


def _completion_prompt_tokens(prompt: object) -> int:
    """Tokens of a completions prompt: a string or a list of token ids (or a batch of exactly one of those)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return text_token_count(prompt)
    if isinstance(prompt, list) and all(isinstance(token, int) and not isinstance(token, bool) for token in prompt):
        return len(prompt)
    if isinstance(prompt, list):
        raise bad_request("inferia-sim does not support batched prompts; send one prompt per request.", param="prompt")
    raise bad_request("Field required: `prompt` must be a string or a list of token ids.", param="prompt")


def _completion_prompt_ids(prompt: object) -> list[int]:
    """The token ids of a prompt `_completion_prompt_tokens` accepted."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    return text_token_ids(prompt) if isinstance(prompt, str) else list(prompt)  # type: ignore[call-overload]


async def completions(engine: SimEngine, request: HttpRequest, responder: HttpResponder) -> None:
    """`POST /v1/completions`."""
    engine.require_ready()
    body = json_object(request)
    model = engine.resolve_model(body.get("model"))
    prompt_tokens = _completion_prompt_tokens(body.get("prompt"))
    stream, include_usage = _stream_flags(body)
    _require_single_choice(body)
    output_tokens, finish_reason = output_plan(engine, body, prompt_tokens, chat=False)
    gen = Generation(
        fmt=COMPLETION_CHUNKS,
        model=model,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        finish_reason=finish_reason,
        include_usage=include_usage,
        prompt_ids=_completion_prompt_ids(body.get("prompt")) if engine.prefix_cache is not None else None,
    )
    await generation_run(engine, responder, gen, stream=stream)


_WORD = re.compile(r"\w+")
# How much each kind of feature counts: words most, word pairs (phrases) and character trigrams (spelling variants,
# plurals) less.
_WEIGHT_WORD, _WEIGHT_PAIR, _WEIGHT_TRIGRAM = 1.0, 0.6, 0.25


@lru_cache(maxsize=65536)
def _feature_slot(feature: str, dimensions: int) -> tuple[int, float]:
    """Where a feature lands in the vector and with which sign: a stable hash (never Python's salted one)."""
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
    return digest % dimensions, 1.0 if digest >> 63 else -1.0


def _features(text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    words = _WORD.findall(text.lower())
    for word in words:
        counts["w:" + word] = counts.get("w:" + word, 0.0) + 1.0
        padded = f"<{word}>"
        for start in range(len(padded) - 2):
            gram = "c:" + padded[start : start + 3]
            counts[gram] = counts.get(gram, 0.0) + 1.0
    for first, second in itertools.pairwise(words):
        pair = f"p:{first} {second}"
        counts[pair] = counts.get(pair, 0.0) + 1.0
    return counts


@lru_cache(maxsize=4096)
def embedding_vector(text: str, dimensions: int) -> tuple[float, ...]:
    """A unit vector whose geometry is lexical: hashed word, word-pair and character-trigram features (sublinear
    counts, signed feature hashing), so that texts sharing words are close and unrelated texts are nearly
    orthogonal. Deterministic: equal texts embed equally, across runs and processes. A real engine's embeddings are
    semantic; these make retrieval testable without one."""
    vector = [0.0] * dimensions
    for feature, count in _features(text).items():
        kind = feature[0]
        weight = _WEIGHT_WORD if kind == "w" else _WEIGHT_PAIR if kind == "p" else _WEIGHT_TRIGRAM
        slot, sign = _feature_slot(feature, dimensions)
        vector[slot] += sign * weight * (1.0 + math.log(count))
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0.0:  # no word at all (empty or punctuation only): a fixed unit vector, still deterministic
        vector[_feature_slot("empty", dimensions)[0]] = 1.0
        return tuple(vector)
    return tuple(value / norm for value in vector)


def _embedding_inputs(value: object) -> list[tuple[str, int]]:
    """Each input as (text to embed, prompt tokens); token-id inputs embed their ids' decimal text."""
    if isinstance(value, str):
        return [(value, text_token_count(value))]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return [(item, text_token_count(item)) for item in value]
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return [(" ".join(map(str, value)), len(value))]
        if all(isinstance(item, list) and all(isinstance(t, int) for t in item) for item in value):
            return [(" ".join(map(str, item)), len(item)) for item in value]
    raise bad_request("Field required: `input` must be a string, a list of strings or token ids.", param="input")


async def embeddings(engine: SimEngine, request: HttpRequest, responder: HttpResponder) -> None:
    """`POST /v1/embeddings`: deterministic vectors, as floats or as base64 little-endian float32 (the SDK default)."""
    engine.require_ready()
    body = json_object(request)
    model = engine.resolve_model(body.get("model"))
    inputs = _embedding_inputs(body.get("input"))
    dimensions = body.get("dimensions") or engine.config.embedding_dimensions
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 65536:
        raise bad_request("`dimensions` must be an integer between 1 and 65536.", param="dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("`encoding_format` must be 'float' or 'base64'.", param="encoding_format")
    data = []
    for index, (text, _tokens) in enumerate(inputs):
        vector = embedding_vector(text, dimensions)
        encoded: object = vector if encoding == "float" else base64.b64encode(array("f", vector).tobytes()).decode()
        data.append({"index": index, "object": "embedding", "embedding": encoded})
    prompt_tokens = sum(tokens for _text, tokens in inputs)
    engine.stats.prompt_tokens += prompt_tokens
    response = {
        "id": "embd-" + hashlib.md5(request.body).hexdigest(),  # noqa: S324 - an id, not security
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0,
                  "prompt_tokens_details": None},
    }  # fmt: skip
    responder.send(200, json.dumps(response).encode())


def _flag(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise bad_request(f"`{name}` must be a boolean.", param=name)
    return value


async def tokenize(engine: SimEngine, request: HttpRequest, responder: HttpResponder) -> None:
    """`POST /tokenize`: the simulated token ids of a `prompt` or of chat `messages`, as vLLM shapes them, and each
    token's string with `return_token_strs` (null otherwise, as vLLM's default). `add_special_tokens` is accepted
    and changes nothing: the simulated tokenizer adds no special tokens to a prompt (no BOS), so the count is the
    one `/v1/embeddings` and `/v1/completions` report."""
    engine.stats.tokenize_requests += 1
    body = json_object(request)
    if body.get("model") is not None:
        engine.resolve_model(body.get("model"))
    _flag(body, "add_special_tokens")
    with_strs = _flag(body, "return_token_strs") is True
    strs: list[str] | None = None
    if "messages" in body:
        messages = _messages(body)
        generation_prompt = body.get("add_generation_prompt") is not False
        try:
            tokens = chat_prompt_token_ids(messages, add_generation_prompt=generation_prompt)
            if with_strs:
                strs = chat_prompt_token_strs(messages, add_generation_prompt=generation_prompt)
        except ValueError as exc:
            raise bad_request(str(exc), param="messages") from None
    elif isinstance(body.get("prompt"), str):
        tokens = text_token_ids(body["prompt"])
        strs = text_token_strs(body["prompt"]) if with_strs else None
    else:
        raise bad_request("Field required: `prompt` (a string) or `messages`.", param="prompt")
    response = {
        "count": len(tokens),
        "max_model_len": engine.config.max_model_len,
        "tokens": tokens,
        "token_strs": strs,
    }
    responder.send(200, json.dumps(response).encode())
