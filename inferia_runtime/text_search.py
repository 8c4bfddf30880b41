"""What the guardrails look for in every prompt before they run a detector's pattern, in one pass over it: which of
many strings occur (a key's prefix, an injection phrase's first word), and where the runs of digits start (every
number, IBAN and national id holds one). And what the gateway counts in every chunk of a stream it relays: its
events, and the engine's usage (`counted_among`).

`found_among_searched`, `counted_among_searched` and `digit_runs_matched` hold the meaning. Their compiled forms
(`_text_search.c`, built where a C compiler is at hand) give the same answers, faster; without them, these do the
work. `Needles` asks `found_among` about a str: UTF-8 keeps the answer (no character's encoding starts inside
another's), and lone surrogates pass through; `OwnedNeedles` tells which of a profile's detectors have one of their
strings in a text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_DIGITS = re.compile(r"\d+")


def found_among_searched(text: bytes, needles: tuple[bytes, ...]) -> bytes:
    """A 1 for each of `needles` that occurs in `text`, a 0 for each that does not."""
    return bytes(needle in text for needle in needles)


def counted_among_searched(text: bytes, needles: tuple[bytes, ...]) -> tuple[int, ...]:
    """How often each of `needles` occurs in `text`, as `bytes.count` counts."""
    return tuple(text.count(needle) for needle in needles)


def digit_runs_matched(text: str) -> list[int]:
    """Where each run of decimal digits (what `\\d` takes in a str pattern) starts in `text`, in order."""
    return [run.start() for run in _DIGITS.finditer(text)]


found_among: Callable[[bytes, tuple[bytes, ...]], bytes]
counted_among: Callable[[bytes, tuple[bytes, ...]], tuple[int, ...]]
digit_runs: Callable[[str], list[int]]
try:
    from inferia_runtime import _text_search
except ImportError:  # built without a C compiler: the same answers, one search per needle and a pattern
    found_among, counted_among, digit_runs = found_among_searched, counted_among_searched, digit_runs_matched
else:
    found_among, counted_among, digit_runs = (
        _text_search.found_among,
        _text_search.counted_among,
        _text_search.digit_runs,
    )


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


class OwnedNeedles:
    """Strings looked for on behalf of several owners (a profile's detectors, by their index), all in one pass."""

    __slots__ = ("_owners", "needles")

    def __init__(self, owned: Iterable[Iterable[str]]) -> None:
        owners: dict[str, list[int]] = {}
        for owner, strings in enumerate(owned):
            for string in strings:
                owners.setdefault(string, []).append(owner)
        self.needles = Needles(owners)
        self._owners = tuple(tuple(indexes) for indexes in owners.values())

    def owners_in(self, text: str) -> set[int] | tuple[()]:
        """The owners one of whose strings occurs in `text` (mostly none: a set is built only when one does)."""
        if not self.needles.strings:
            return ()
        found = self.needles.found_in(text)
        if 1 not in found:
            return ()
        return {owner for at, owners in enumerate(self._owners) if found[at] for owner in owners}
