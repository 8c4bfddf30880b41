"""JSON on the request path: orjson's speed, with the standard library for what orjson refuses and JSON allows."""

from __future__ import annotations

import json
from typing import Any

import orjson


def json_parsed(payload: bytes | str) -> Any:
    """`payload` parsed by orjson, or by the standard library where orjson refuses what it accepts beyond JSON (NaN,
    Infinity: an engine written in Python may write a logprob as -Infinity) or an integer past 64 bits."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


def json_compact(document: Any) -> bytes:
    """`document` as compact JSON: by orjson (non-ASCII as UTF-8), or by the standard library (non-ASCII escaped) for
    what orjson refuses: an integer past 64 bits, which JSON allows and which a client's schema or a model's tool call
    may hold, or a lone surrogate, which only an escape can carry."""
    try:
        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document, separators=(",", ":")).encode()
