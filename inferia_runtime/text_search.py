"""Which of many strings occur in a text, in one pass over it: the guardrails ask it of every prompt, for the words
that must be there before a detector's pattern can match (a key's prefix, an injection phrase's first word).

`found_among` on bytes holds the meaning. Its compiled form (`_text_search.c`, built where a C compiler is at hand)
gives the same answers in one pass; without it, one search per needle does the work. `Needles` asks it of a str:
UTF-8 keeps the answer (no character's encoding starts inside another's), and lone surrogates pass through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def found_among_searched(text: bytes, needles: tuple[bytes, ...]) -> bytes:
    """A 1 for each of `needles` that occurs in `text`, a 0 for each that does not."""
    return bytes(needle in text for needle in needles)


found_among: Callable[[bytes, tuple[bytes, ...]], bytes]
try:
    from inferia_runtime import _text_search
except ImportError:  # built without a C compiler: the same answers, one search per needle
    found_among = found_among_searched
else:
    found_among = _text_search.found_among


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class Needles:
    """Strings to look for in many texts, encoded once."""

    __slots__ = ("encoded", "strings")

    def __init__(self, strings: Iterable[str]) -> None:
        self.strings = tuple(strings)
        self.encoded = tuple(utf8(string) for string in self.strings)

    def found_in(self, text: str) -> bytes:
        """A 1 for each string that occurs in `text`, a 0 for each that does not, in their order."""
        return found_among(utf8(text), self.encoded)
