"""JSON strings copied as they came: checked to be one JSON string, without decoding it, so that a piece of one JSON
document can be put into another byte for byte (an engine's token into another protocol's event).

`string_between` runs once per streamed token. Its compiled form (`_json_copy.c`, built where a C compiler is at
hand) gives the same answers as the pattern below in one call; without it, the pattern does the work.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A JSON string, its loop unrolled (plain characters, then each escape followed by plain characters) and possessive:
# no backtracking.
JSON_STRING_PATTERN = rb'"[^"\\\x00-\x1f]*+(?:\\.[^"\\\x00-\x1f]*+)*+"'
JSON_STRING = re.compile(JSON_STRING_PATTERN)
# JSON strings, each followed by a newline (which a JSON string cannot hold): one check for a whole run of them.
_JSON_STRINGS = re.compile(rb"(?:" + JSON_STRING_PATTERN + rb"\n)*+")


def json_strings(texts: list[bytes]) -> bool:
    """Whether each of `texts` is one JSON string."""
    return _JSON_STRINGS.fullmatch(b"\n".join(texts) + b"\n") is not None


def string_between_matched(data: bytes, head: bytes, tail: bytes) -> bytes | None:
    """The JSON string (quotes included) between `head` and `tail` when `data` is exactly the three; None otherwise."""
    if data.startswith(head) and data.endswith(tail):
        stop = len(data) - len(tail)
        if JSON_STRING.fullmatch(data, len(head), stop):
            return data[len(head) : stop]
    return None


string_between: Callable[[bytes, bytes, bytes], bytes | None]
try:
    from inferia_runtime import _json_copy
except ImportError:  # built without a C compiler: the same answers, about 0.45 µs slower per call, warm
    string_between = string_between_matched
else:
    string_between = _json_copy.string_between
