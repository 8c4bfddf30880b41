"""Chunks sized in the embedding model's own tokens: the engine's `/tokenize` counts them (the simulated engine here,
a real one for every test in this file but the stand-in tokenizers), no chunk is over the store's size as the
engine counts it, overlap and sentence boundaries hold, and where the engine cannot count, the cut falls back to
four characters a token."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re

import pytest
from django.db import transaction

from apps.compute.models import Provider
from apps.knowledge import chunking, ingestion, services
from apps.knowledge.models import Chunk, VectorStoreFile
from tests.factories import ComputePoolFactory, OrganizationFactory, ProviderFactory, deployment_serving
from tests.knowledge.conftest import EMBED_MODEL
from tests.sim.conftest import metrics, post

# Sentences of very different lengths, some of them not ASCII (offsets are characters, not bytes).
SENTENCES = [
    "The GPU nodes have 4.8 TB/s of HBM3e memory bandwidth and 141 GB of memory each.",
    "Simmer it.",
    "Crème brûlée and smørrebrød are on the menu in Zürich, Århus and Kraków this week.",
    "Income tax returns are due in April, and deductions lower the taxable amount for most households.",
    "Yes.",
    "Die Größe der Blöcke übersteigt nie die gewählte Anzahl an Tokens, gezählt vom Modell selbst.",
]
DOCUMENT = " ".join(itertools.islice(itertools.cycle(SENTENCES), 90))
MAX_TOKENS, OVERLAP_TOKENS = 100, 20


def engine_count(engine, text: str) -> int:
    """What the engine itself says `text` counts, asked over HTTP as anyone would."""
    status, _headers, body = post(engine.url, "/tokenize", {"prompt": text})
    assert status == 200
    return int(json.loads(body)["count"])


def _ingested_chunks(organization, content: str, *, overlap_tokens: int = OVERLAP_TOKENS):
    file = services.knowledge_file_create(
        organization=organization,
        handle=io.BytesIO(content.encode()),
        filename="notes.txt",
        purpose="assistants",
        actor=None,
    )
    store = services.vector_store_create(
        organization=organization,
        embedding_model=EMBED_MODEL,
        dimensions=384,
        actor=None,
        chunk_max_tokens=MAX_TOKENS,
        chunk_overlap_tokens=overlap_tokens,
        file_ids=[file.public_id],
    )
    store_file = VectorStoreFile.objects.get(vector_store=store)
    assert ingestion.store_file_claim(store_file.pk)
    ingestion.store_file_ingest_run(store_file.pk)
    store_file.refresh_from_db()
    assert store_file.status == "completed", store_file.last_error_message
    return list(Chunk.objects.filter(store_file=store_file).order_by("index"))


def _overlap(first: Chunk, second: Chunk) -> str:
    return DOCUMENT[second.char_start : first.char_end]


def test_no_chunk_is_over_the_size_as_the_engine_counts_it_and_the_engines_count_is_stored(organization, engine):
    asked = metrics(engine.url)["inferia_sim:tokenize_requests_total"]
    chunks = _ingested_chunks(organization, DOCUMENT)

    assert len(chunks) > 10
    counts = [engine_count(engine, chunk.text) for chunk in chunks]
    assert [chunk.tokens for chunk in chunks] == counts
    assert max(counts) <= MAX_TOKENS
    assert sum(counts) / len(counts) > MAX_TOKENS * 0.75  # sized from the engine's count: chunks are not tiny
    assert all(DOCUMENT[chunk.char_start : chunk.char_end] == chunk.text for chunk in chunks)
    # A few requests a chunk at most: one count per chunk, plus the slices that size the cut.
    requests = metrics(engine.url)["inferia_sim:tokenize_requests_total"] - asked - len(chunks)  # our counts above
    assert len(chunks) <= requests <= 2 * len(chunks) + 2


def test_chunks_end_between_sentences_and_overlap_by_at_most_the_overlap(organization, engine):
    overlap_tokens = 40  # room for a whole sentence or two: the splitter overlaps whole sentences, never part of one
    chunks = _ingested_chunks(organization, DOCUMENT, overlap_tokens=overlap_tokens)

    sentence_ends = {m.end() for m in re.finditer(r"[.!?](?=\s|$)", DOCUMENT)}
    sentence_starts = {0} | {m.end() for m in re.finditer(r"[.!?]\s+", DOCUMENT)}
    assert all(chunk.char_end in sentence_ends for chunk in chunks)
    assert all(chunk.char_start in sentence_starts for chunk in chunks)  # an overlap is whole sentences too
    overlaps = [_overlap(a, b) for a, b in itertools.pairwise(chunks)]
    assert all(overlaps)  # consecutive chunks share text
    assert max(engine_count(engine, text) for text in overlaps) <= overlap_tokens


def test_the_cut_is_the_same_every_time_for_the_same_text_and_engine(organization):
    def cut():
        return ingestion.text_cut(
            DOCUMENT,
            markdown=False,
            max_tokens=MAX_TOKENS,
            overlap_tokens=OVERLAP_TOKENS,
            organization_id=organization.pk,
            model=EMBED_MODEL,
        )

    first = cut()
    assert first == cut()
    assert all(piece.counted for piece in first)


# --- The re-cut, with stand-in tokenizers whose density varies across the text ---------------------------------------


def _dense_digits(text: str) -> int:
    """A tokenizer for which digits are one token each and other text four characters a token."""
    digits = sum(ch.isdigit() for ch in text)
    return digits + -(-(len(text) - digits) // 4)


def _counter(rule):
    async def count(text: str) -> int | None:
        await asyncio.sleep(0)
        return rule(text)

    return count


def _cut(text: str, rule, *, markdown: bool = False) -> list[chunking.TextPiece]:
    return asyncio.run(
        chunking.text_cut_counted(
            text, markdown=markdown, max_tokens=MAX_TOKENS, overlap_tokens=OVERLAP_TOKENS, count=_counter(rule)
        )
    )


PROSE = " ".join(["Plain words make long, light sentences that cost few tokens."] * 60)
SERIALS = " ".join(f"Serial {n:08d} {n * 7919 % 10**8:08d} shipped." for n in range(60))


def test_a_passage_denser_than_the_document_is_cut_again_until_it_fits():
    text = f"{PROSE}\n\n{SERIALS}\n\n{PROSE}"

    pieces = _cut(text, _dense_digits)

    assert [piece.tokens for piece in pieces] == [_dense_digits(piece.text) for piece in pieces]
    assert max(piece.tokens for piece in pieces) <= MAX_TOKENS
    assert [piece.index for piece in pieces] == list(range(len(pieces)))
    assert all(text[piece.char_start : piece.char_end] == piece.text for piece in pieces)
    assert all(a.char_start < b.char_start for a, b in itertools.pairwise(pieces))
    assert " ".join(p.text for p in pieces if p.char_start >= text.index("Serial")).count("shipped.") >= 60
    assert pieces == _cut(text, _dense_digits)  # deterministic, re-cuts included


def test_markdown_is_cut_on_its_structure_and_counted():
    text = "\n\n".join(f"# Part {n}\n\n{PROSE[:900]}\n\n- {SERIALS[:300]}" for n in range(5))

    pieces = _cut(text, _dense_digits, markdown=True)

    assert max(piece.tokens for piece in pieces) <= MAX_TOKENS
    assert all(text[piece.char_start : piece.char_end] == piece.text for piece in pieces)


def test_an_engine_that_cannot_count_gives_the_approximate_cut_for_the_whole_document():
    answered = iter([len(PROSE) // 4, 90, 90])  # stops answering part way: none of its counts is mixed in

    async def count(text: str) -> int | None:
        return next(answered, None)

    pieces = asyncio.run(
        chunking.text_cut_counted(PROSE, markdown=False, max_tokens=MAX_TOKENS, overlap_tokens=0, count=count)
    )

    assert pieces == chunking.text_cut_approximate(PROSE, markdown=False, max_tokens=MAX_TOKENS, overlap_tokens=0)
    assert not any(piece.counted for piece in pieces)
    assert all(len(piece.text) <= MAX_TOKENS * chunking.CHARS_PER_TOKEN for piece in pieces)
    assert all(piece.tokens == -(-len(piece.text) // chunking.CHARS_PER_TOKEN) for piece in pieces)


def test_a_chunk_the_engine_fails_to_count_once_is_asked_again():
    failed: set[str] = set()

    async def count(text: str) -> int | None:
        if len(text) < len(PROSE) and text not in failed:  # every chunk's first count fails, never the sizing's
            failed.add(text)
            return None
        return _dense_digits(text)

    pieces = asyncio.run(
        chunking.text_cut_counted(PROSE, markdown=False, max_tokens=MAX_TOKENS, overlap_tokens=0, count=count)
    )

    assert len(pieces) > 1
    assert all(piece.counted and piece.tokens == _dense_digits(piece.text) for piece in pieces)


@pytest.fixture
def external_organization(transactional_db, redis_cache, engine, settings):
    """An organisation whose embedding model is served through an external provider (the simulated engine behind
    it, on loopback): Inferia does not ask external endpoints to tokenize."""
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    organization = OrganizationFactory(name="Outside", slug="outside")
    with transaction.atomic():
        provider = ProviderFactory(organization=organization, name="ext", kind=Provider.Kind.EXTERNAL)
        pool = ComputePoolFactory(organization=organization, provider=provider, name="pool-ext")
        deployment_serving(organization, EMBED_MODEL, [engine.url], pool=pool, model_id=EMBED_MODEL)
    return organization


def test_a_store_on_an_external_endpoint_is_cut_by_the_approximation(external_organization, engine):
    asked = metrics(engine.url)["inferia_sim:tokenize_requests_total"]

    chunks = _ingested_chunks(external_organization, DOCUMENT)

    assert metrics(engine.url)["inferia_sim:tokenize_requests_total"] == asked
    assert all(len(chunk.text) <= MAX_TOKENS * chunking.CHARS_PER_TOKEN for chunk in chunks)
    assert all(chunk.tokens == -(-len(chunk.text) // chunking.CHARS_PER_TOKEN) for chunk in chunks)
    assert all(DOCUMENT[chunk.char_start : chunk.char_end] == chunk.text for chunk in chunks)
