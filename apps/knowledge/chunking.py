"""Cutting a file's text into chunks of at most a store's size in tokens, as its embedding model counts them.

semantic-text-splitter cuts on Unicode sentence and paragraph boundaries (Markdown on its structure) within a
capacity in characters, with overlap. The capacity comes from the document itself: its text is tokenized by the
engine of the store's embedding deployment (`/tokenize`, through the gateway: nothing downloads tokenizer files),
in bounded slices, which gives this document's characters per token. Every chunk is then counted by the engine, and
a chunk over the size (a passage denser than the document's average: numbers, code, another script) is cut again,
smaller, until every chunk fits. The counts stored with the chunks are the engine's.

Where the engine cannot tokenize (an external OpenAI-compatible server, which rarely has `/tokenize`, or no healthy
replica), the whole document is cut at four characters a token and its counts are that approximation: never some
chunks one way and some the other, so that the cut stays one of two, each deterministic.

Deterministic: the same text and the same engine give the same chunks, in the same order. A resumed ingestion relies
on it, since a chunk's index is what makes writing it idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from semantic_text_splitter import MarkdownSplitter, TextSplitter

from apps.knowledge.embedding import run_in_own_loop, token_count_of

CHARS_PER_TOKEN = 4  # the approximation, where the engine cannot count
SLICE_CHARS = 8_000  # one /tokenize request of the sizing step carries at most this much text
SLICES_MAX = 32  # a longer document's characters per token are measured on this many slices, spread evenly
COUNT_CONCURRENCY = 16  # /tokenize requests in flight for one document
# Chunks are sized a little under the store's size: passages denser than the average and the special tokens an
# engine adds (BOS, [CLS]...) would otherwise push many just over it, each then cut again at the cost of requests.
FILL = 0.95
RECUT_ROUNDS = 8  # each round cuts an over-sized chunk at most 0.95 times as long: far more than any text needs

TokenCounter = Callable[[str], Awaitable[int | None]]


@dataclass(frozen=True)
class TextPiece:
    """A chunk's text, where it lies in the file's text (characters), and its size in tokens: the engine's count,
    or the approximation when `counted` is False."""

    index: int
    text: str
    char_start: int
    char_end: int
    tokens: int
    counted: bool


@dataclass(frozen=True)
class _Span:
    start: int
    text: str


def text_cut(
    text: str,
    *,
    markdown: bool,
    max_tokens: int,
    overlap_tokens: int,
    organization_id: int | None = None,
    model: str = "",
) -> list[TextPiece]:
    """Chunks of at most `max_tokens` as the engine of `organization_id`'s deployment of `model` counts them, or the
    approximate cut where it cannot count (or no organisation is given)."""
    if organization_id is None:
        return text_cut_approximate(text, markdown=markdown, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    engine_org: int = organization_id

    async def count(part: str) -> int | None:
        return await token_count_of(organization_id=engine_org, model=model, text=part)

    async def cut() -> list[TextPiece]:
        return await text_cut_counted(
            text, markdown=markdown, max_tokens=max_tokens, overlap_tokens=overlap_tokens, count=count
        )

    return run_in_own_loop(cut)


async def tokens_counted(texts: list[str], *, organization_id: int, model: str) -> list[int]:
    """Each text's tokens as the engine of `organization_id`'s deployment of `model` counts them, approximated where
    it cannot count."""
    limit = asyncio.Semaphore(COUNT_CONCURRENCY)

    async def counted(text: str) -> int:
        async with limit:
            tokens = await token_count_of(organization_id=organization_id, model=model, text=text)
        return tokens if tokens is not None else -(-len(text) // CHARS_PER_TOKEN)

    return list(await asyncio.gather(*(counted(text) for text in texts)))


def text_cut_approximate(text: str, *, markdown: bool, max_tokens: int, overlap_tokens: int) -> list[TextPiece]:
    """The cut at four characters a token (rounded up), for engines that cannot count."""
    spans = _split(
        text, markdown=markdown, capacity=max_tokens * CHARS_PER_TOKEN, overlap=overlap_tokens * CHARS_PER_TOKEN
    )
    return [
        _piece(index, span, -(-len(span.text) // CHARS_PER_TOKEN), counted=False) for index, span in enumerate(spans)
    ]


async def text_cut_counted(
    text: str, *, markdown: bool, max_tokens: int, overlap_tokens: int, count: TokenCounter
) -> list[TextPiece]:
    """The cut sized and checked with `count` (the engine's tokenizer); the approximate cut as soon as it cannot
    tell."""
    limit = asyncio.Semaphore(COUNT_CONCURRENCY)

    async def bounded(part: str) -> int | None:
        async with limit:
            return await count(part)

    async def retried(part: str) -> int | None:
        # The engine has counted this document's slices: a chunk it does not count is most likely a passing
        # failure (a timeout, a replica restarting), asked once more before the whole cut falls back, since a
        # resumed ingestion finds its chunks again only if it cuts as before.
        tokens = await bounded(part)
        return await bounded(part) if tokens is None else tokens

    chars_per_token = await _chars_per_token(text, bounded)
    if chars_per_token is None:
        return text_cut_approximate(text, markdown=markdown, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    spans = _split(
        text,
        markdown=markdown,
        capacity=max(1, int(max_tokens * chars_per_token * FILL)),
        overlap=int(overlap_tokens * chars_per_token * FILL),
    )
    fitted = await _fit(spans, markdown=markdown, max_tokens=max_tokens, overlap_tokens=overlap_tokens, count=retried)
    if fitted is None:
        return text_cut_approximate(text, markdown=markdown, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    return [_piece(index, span, tokens, counted=True) for index, (span, tokens) in enumerate(fitted)]


async def _chars_per_token(text: str, count: TokenCounter) -> float | None:
    """This document's characters per token, measured on slices of it (all of them, or SLICES_MAX spread evenly
    over a longer one); None when the engine cannot count."""
    whole = -(-len(text) // SLICE_CHARS)
    picked = sorted({i * whole // SLICES_MAX for i in range(SLICES_MAX)}) if whole > SLICES_MAX else range(whole)
    slices = [text[i * SLICE_CHARS : (i + 1) * SLICE_CHARS] for i in picked]
    counts = await asyncio.gather(*(count(part) for part in slices))
    if any(tokens is None for tokens in counts):
        return None
    tokens = sum(c for c in counts if c is not None)
    return sum(len(part) for part in slices) / tokens if tokens > 0 else float(CHARS_PER_TOKEN)


async def _fit(
    spans: list[_Span], *, markdown: bool, max_tokens: int, overlap_tokens: int, count: TokenCounter
) -> list[tuple[_Span, int]] | None:
    """Each span with the engine's count, those over `max_tokens` cut again (in place, in order) until they fit;
    None when the engine cannot count one."""
    counted = await _counts(spans, count)
    for _round in range(RECUT_ROUNDS):
        if counted is None:
            return None
        if all(tokens <= max_tokens for _span, tokens in counted):
            return counted
        parts: list[tuple[_Span, int | None]] = []
        for span, tokens in counted:
            if tokens <= max_tokens:
                parts.append((span, tokens))
            else:
                recut = _recut(span, tokens, markdown=markdown, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
                parts += [(part, None) for part in recut]
        fresh = await _counts([span for span, tokens in parts if tokens is None], count)
        if fresh is None:
            return None
        recounted = iter(fresh)
        counted = [(span, tokens) if tokens is not None else next(recounted) for span, tokens in parts]
    # Only a tokenizer that counts a few characters as more than `max_tokens` gets here: the engine's own counts
    # are kept, and the embedding request says what the model makes of such a chunk.
    return counted


def _recut(span: _Span, tokens: int, *, markdown: bool, max_tokens: int, overlap_tokens: int) -> list[_Span]:
    """An over-sized span cut again, sized by its own characters per token."""
    chars_per_token = len(span.text) / tokens
    capacity = max(1, int(max_tokens * chars_per_token * FILL))
    overlap = min(int(overlap_tokens * chars_per_token * FILL), capacity // 2)
    parts = _split(span.text, markdown=markdown, capacity=capacity, overlap=overlap)
    return [_Span(start=span.start + part.start, text=part.text) for part in parts]


async def _counts(spans: list[_Span], count: TokenCounter) -> list[tuple[_Span, int]] | None:
    counts = await asyncio.gather(*(count(span.text) for span in spans))
    if any(tokens is None for tokens in counts):
        return None
    return [(span, tokens) for span, tokens in zip(spans, counts, strict=True) if tokens is not None]


def _split(text: str, *, markdown: bool, capacity: int, overlap: int) -> list[_Span]:
    splitter = (MarkdownSplitter if markdown else TextSplitter)(capacity, overlap=min(overlap, capacity - 1))
    # The splitter's offsets count characters, as Python's string indexes do (not UTF-8 bytes).
    return [_Span(start=start, text=chunk) for start, chunk in splitter.chunk_indices(text)]


def _piece(index: int, span: _Span, tokens: int, *, counted: bool) -> TextPiece:
    return TextPiece(
        index=index,
        text=span.text,
        char_start=span.start,
        char_end=span.start + len(span.text),
        tokens=tokens,
        counted=counted,
    )
