"""What a request may cost and what it did: token bounds and prices, in integer micro-units of the currency.

The worst case of a request is reserved before the upstream call: an upper bound on its prompt tokens (the engine's
`/tokenize` count where the gateway asked for one, else `prompt_tokens_upper_bound`) plus its max tokens, priced at
the deployment's rates. What it used settles the reservation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from apps.policies.guardrails.engine import _text_slots

# Tokens a chat template adds around each message and to the whole prompt (role markers, separators): generous.
_MESSAGE_OVERHEAD_TOKENS = 8
_PROMPT_OVERHEAD_TOKENS = 16
# An image or audio part: counted at what the largest common encoders produce for one.
_MEDIA_PART_TOKENS = 8192


def cost_micros_for(
    *, prompt_tokens: int, completion_tokens: int, price_input_per_mtok_micros: int, price_output_per_mtok_micros: int
) -> int:
    """Money for a number of tokens at per-million prices, in micro-units, rounded up (a request never costs 0
    when its prices are not 0)."""
    total = prompt_tokens * price_input_per_mtok_micros + completion_tokens * price_output_per_mtok_micros
    return -(-total // 1_000_000)


def prompt_tokens_upper_bound(body: dict[str, Any]) -> int:
    """An upper bound on a request's prompt tokens without a tokenizer: byte-level tokenizers never produce more
    tokens than UTF-8 bytes, plus each message's template overhead and tool definitions as their JSON length."""
    total = _PROMPT_OVERHEAD_TOKENS
    for container, key in _text_slots(body):
        total += len(container[key].encode("utf-8", "surrogatepass"))
    messages = body.get("messages")
    if isinstance(messages, list):
        total += _MESSAGE_OVERHEAD_TOKENS * len(messages)
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                total += _MEDIA_PART_TOKENS * sum(
                    1 for part in content if isinstance(part, dict) and not isinstance(part.get("text"), str)
                )
            if isinstance(message, dict) and message.get("tool_calls"):
                total += len(json.dumps(message["tool_calls"]).encode())
    for name in ("tools", "functions", "response_format"):
        if body.get(name):
            total += len(json.dumps(body[name]).encode())
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        total += len(prompt)  # already tokens
    elif isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
        total += sum(len(item) for item in prompt if isinstance(item, list))
    return total


@dataclass(frozen=True, slots=True)
class RequestCost:
    """What a request may consume at most: `prompt_tokens` is an upper bound (an engine's `/tokenize` count, or
    `prompt_tokens_upper_bound`), `max_tokens` what it may generate (after `EffectivePolicy.max_tokens_resolve`)."""

    prompt_tokens: int
    max_tokens: int
    price_input_per_mtok_micros: int = 0
    price_output_per_mtok_micros: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens

    @property
    def cost_micros(self) -> int:
        return cost_micros_for(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.max_tokens,
            price_input_per_mtok_micros=self.price_input_per_mtok_micros,
            price_output_per_mtok_micros=self.price_output_per_mtok_micros,
        )


@dataclass(frozen=True, slots=True)
class ActualUsage:
    """What a request consumed, from the engine's usage (or counted from the stream when the client left early).
    `cost_micros` defaults to the admitted prices applied to the tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int | None = None
