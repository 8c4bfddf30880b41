"""A cheap, deterministic stand-in for a tokenizer and for the text a model generates.

Prompt length is approximated as one token per four characters (rounded up), plus a few tokens of chat template
per message; `/tokenize` returns ids built by the same rule, so its `count` always matches `usage.prompt_tokens`, and,
when asked, each token's string: the four-character window it stands for, or the template token's name.
Generated text is drawn from a small fixed vocabulary, one word per token, so every streamed content chunk is
exactly one completion token.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

CHARS_PER_TOKEN = 4
VOCAB_SIZE = 32000
# Ids below this are reserved for the simulated chat template's special tokens.
_FIRST_TEXT_ID = 256
_ROLE_START_ID = 1
_MESSAGE_END_ID = 2
_NEWLINE_ID = 3
_ROLE_IDS = {"system": 10, "user": 11, "assistant": 12, "tool": 13, "developer": 14, "function": 15}
_OTHER_ROLE_ID = 19
# What `/tokenize` returns as the string of each template token (vLLM returns the tokenizer's own token strings).
_SPECIAL_STRS = {_ROLE_START_ID: "<|start|>", _MESSAGE_END_ID: "<|end|>", _NEWLINE_ID: "\n", _OTHER_ROLE_ID: "other"}
_SPECIAL_STRS.update({token: role for role, token in _ROLE_IDS.items()})
# Tokens the template adds around each message: role start, role, newline ... end of message.
MESSAGE_OVERHEAD_TOKENS = 4
# Tokens of the generation prompt that opens the assistant's turn: role start, assistant role.
GENERATION_PROMPT_TOKENS = 2

OUTPUT_WORDS: tuple[str, ...] = (
    " the", " model", " is", " a", " simulated", " engine", " that", " streams", " tokens", " to", " you",
    " and", " it", " never", " needs", " any", " GPU", " at", " all", ".", " Inferia", " routes", " requests",
    " across", " replicas", " while", " keeping", " budgets", " quotas", " logs", " in", " check", ",",
    " so", " this", " text", " only", " looks", " like", " language", " for", " load", " tests", " of",
    " latency", " throughput", " under", " pressure", " from", " many", " clients", " with", " long",
    " prompts", " short", " answers", " or", " both", " every", " word", " here", " one", " token", "!",
)  # fmt: skip
# Length of the precomputed pseudo-random word sequence that outputs cycle through.
OUTPUT_SEQUENCE_LEN = 4096


def text_token_count(text: str) -> int:
    """Number of tokens the simulated tokenizer gives `text`."""
    return -(-len(text) // CHARS_PER_TOKEN)


def text_token_ids(text: str) -> list[int]:
    """Token ids for `text`: one per four-character window, stable across runs and processes."""
    span = VOCAB_SIZE - _FIRST_TEXT_ID
    return [
        _FIRST_TEXT_ID + zlib.crc32(text[i : i + CHARS_PER_TOKEN].encode()) % span
        for i in range(0, len(text), CHARS_PER_TOKEN)
    ]


def text_token_strs(text: str) -> list[str]:
    """The string of each of `text`'s tokens, in the order of `text_token_ids`: they join back into `text`."""
    return [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message; `content` may be a string, null, or a list of typed parts (text parts count)."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    raise ValueError("message content must be a string, null or a list of content parts")


def chat_prompt_token_count(messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> int:
    """Prompt tokens of a chat request: each message's text plus the simulated chat template."""
    total = sum(MESSAGE_OVERHEAD_TOKENS + text_token_count(message_text(message)) for message in messages)
    return total + (GENERATION_PROMPT_TOKENS if add_generation_prompt else 0)


def chat_prompt_token_ids(messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a chat prompt, consistent with `chat_prompt_token_count`."""
    ids: list[int] = []
    for message in messages:
        ids += (_ROLE_START_ID, _ROLE_IDS.get(str(message.get("role")), _OTHER_ROLE_ID), _NEWLINE_ID)
        ids += text_token_ids(message_text(message))
        ids.append(_MESSAGE_END_ID)
    if add_generation_prompt:
        ids += (_ROLE_START_ID, _ROLE_IDS["assistant"])
    return ids


def chat_prompt_token_strs(messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> list[str]:
    """The string of each token of a chat prompt, in the order of `chat_prompt_token_ids`."""
    strs: list[str] = []
    for message in messages:
        role = _ROLE_IDS.get(str(message.get("role")), _OTHER_ROLE_ID)
        strs += (_SPECIAL_STRS[_ROLE_START_ID], _SPECIAL_STRS[role], _SPECIAL_STRS[_NEWLINE_ID])
        strs += text_token_strs(message_text(message))
        strs.append(_SPECIAL_STRS[_MESSAGE_END_ID])
    if add_generation_prompt:
        strs += (_SPECIAL_STRS[_ROLE_START_ID], _SPECIAL_STRS[_ROLE_IDS["assistant"]])
    return strs


def output_sequence(seed: int) -> list[int]:
    """Indices into `OUTPUT_WORDS` that generated text cycles through; fixed per seed so output is reproducible."""
    rng = random.Random(seed)  # noqa: S311 - reproducible filler text
    return [rng.randrange(len(OUTPUT_WORDS)) for _ in range(OUTPUT_SEQUENCE_LEN)]


class OutputText:
    """Generated text for any length, sliced out of one precomputed string instead of joined per request."""

    def __init__(self, sequence: list[int]) -> None:
        self.sequence = sequence
        words = [OUTPUT_WORDS[i] for i in sequence]
        self._text = "".join(words)
        self._ends = [0]
        for word in words:
            self._ends.append(self._ends[-1] + len(word))

    def text(self, tokens: int) -> str:
        """The first `tokens` generated words as one string."""
        cycles, rest = divmod(tokens, len(self.sequence))
        return self._text * cycles + self._text[: self._ends[rest]]
