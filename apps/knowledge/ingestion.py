"""Ingesting one store file: read its text, cut it into chunks, embed them through the gateway with the store's own
key, and write chunks and vectors.

Idempotent and resumable: a worker claims the file with a lease (a conditional UPDATE), chunks are written once
per file, generation and index (a unique constraint, inserts that ignore conflicts), and a file taken over after
a worker died skips the chunks already written. Plain text, Markdown, HTML, PDF and DOCX are read, within bounds
(apps.knowledge.extraction); other formats fail with `unsupported_file`, saying so, rather than being half-read. Each
chunk is screened by the guardrail detectors as it is written (apps.knowledge.screening): retrieved text is untrusted.

The organisation's chunk quota (`knowledge_chunks_max`) is checked before embedding and again, under a lock, before
each batch is written, so that a file that does not fit fails without writing past it. Its code is
`rate_limit_exceeded`, the one ingestion gives every refusal by a limit, quota or budget: the file is fine
(`invalid_file` would say otherwise) and nothing broke (`server_error`); room made in the quota lets it through.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from apps.compute.credentials import credentials_decrypt, credentials_encrypt
from apps.keys.models import ApiKey
from apps.knowledge import storage
from apps.knowledge.chunking import TextPiece, text_cut
from apps.knowledge.embedding import Embedded, EmbeddingError, embeddings_create, run_in_own_loop
from apps.knowledge.enqueue import reembedding_send
from apps.knowledge.events import StoreFileProgressed
from apps.knowledge.extraction import ExtractionFailed, text_extract
from apps.knowledge.models import Chunk, VectorStore, VectorStoreFile
from apps.knowledge.screening import chunk_flag_categories
from apps.knowledge.services import (
    knowledge_chunks_stored,
    knowledge_quota_lock,
    store_key_issue,
    vector_store_usage_refresh,
)
from apps.policies.effective import KnowledgeQuota
from apps.policies.selectors import knowledge_quota_for
from inferia_runtime.events import event_publish

logger = logging.getLogger(__name__)

EMBED_BATCH = 64
# Batches of one file written at once, each over its own connection.
WRITERS = 2


class IngestionFailed(Exception):
    """A file that cannot be ingested: OpenAI's error code and a message for the person who uploaded it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def lease_end() -> datetime:
    """When a lease taken or renewed now runs out (INFERIA_KNOWLEDGE_INGEST_LEASE_SECONDS)."""
    return timezone.now() + timedelta(seconds=settings.INFERIA_KNOWLEDGE_INGEST_LEASE_SECONDS)


def store_file_claim(store_file_id: int) -> bool:
    """Take the file for this worker until the lease runs out; False when another worker holds it or it is done."""
    now = timezone.now()
    return (
        VectorStoreFile.objects.filter(pk=store_file_id, status=VectorStoreFile.Status.IN_PROGRESS)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=lease_end())
        == 1
    )


def text_read(store_file: VectorStoreFile) -> tuple[str, bool]:
    """The file's text and whether it is Markdown; IngestionFailed for what cannot be read (apps.knowledge.extraction:
    formats, bounds)."""
    file = store_file.file
    try:
        with storage.storage_open(file.storage_name) as handle:
            extracted = text_extract(handle, filename=file.filename, content_type=file.content_type)
    except ExtractionFailed as failure:
        raise IngestionFailed(failure.code, failure.message) from None
    return extracted.text, extracted.markdown


def store_ingest_secret(store: VectorStore) -> str:
    """The store's own inference key (issued on first use), whose usage and limits ingestion counts against."""
    if store.ingest_key_id is not None and store.ingest_key_secret:
        key = ApiKey.objects.filter(pk=store.ingest_key_id).first()
        if key is not None and key.is_usable():
            return str(credentials_decrypt(store.ingest_key_secret).reveal()["secret"])
    with transaction.atomic():
        issued = store_key_issue(
            organization=store.organization,
            store_id=store.public_id,
            model=store.embedding_model,
            reembed_model=store.reembed_model,
        )
        store.ingest_key = issued.key
        store.ingest_key_secret = credentials_encrypt({"secret": issued.secret})
        store.save(update_fields=["ingest_key", "ingest_key_secret"])
    return issued.secret


def store_file_ingest_run(store_file_id: int) -> None:
    """Ingest a claimed store file to the end, or record why it failed."""
    store_file = VectorStoreFile.objects.select_related("file", "vector_store__organization").get(pk=store_file_id)
    store = store_file.vector_store
    try:
        text, markdown = text_read(store_file)
        pieces = text_cut(
            text,
            markdown=markdown,
            max_tokens=store_file.chunk_max_tokens,
            overlap_tokens=store_file.chunk_overlap_tokens,
            organization_id=store.organization_id,
            model=store.embedding_model,
        )
        VectorStoreFile.objects.filter(pk=store_file.pk).update(chunks_total=len(pieces))
        _progress_publish(store_file.pk)
        done = _pieces_written(store_file, pieces)
        todo = [piece for piece in pieces if piece.index not in done]
        quota = knowledge_quota_for(organization_id=store.organization_id, key_id=store.ingest_key_id)
        _chunk_quota_check(quota, store.organization_id, len(todo))  # before paying for any embedding
        secret = store_ingest_secret(store)
        batches = [todo[start : start + EMBED_BATCH] for start in range(0, len(todo), EMBED_BATCH)]

        def embed(batch: list[TextPiece]) -> Embedded:
            inputs = [piece.text for piece in batch]
            return run_in_own_loop(
                functools.partial(embeddings_create, secret=secret, model=store.embedding_model, inputs=inputs)
            )

        if not _batches_embed_and_write(store_file, store, batches, embed, quota):
            return  # cancelled or deleted meanwhile: nothing more was written
    except IngestionFailed as failure:
        _fail(store_file.pk, failure.code, failure.message)
        return
    except EmbeddingError as error:
        # Refused by a limit, a quota or a budget (429), or the model is gone: the file says why.
        _fail(store_file.pk, "rate_limit_exceeded" if error.status == 429 else "server_error", error.message)
        return
    usage = sum(len(piece.text.encode()) + 4 * store.dimensions for piece in pieces)
    with transaction.atomic():
        VectorStoreFile.objects.filter(pk=store_file.pk, status=VectorStoreFile.Status.IN_PROGRESS).update(
            status=VectorStoreFile.Status.COMPLETED, claimed_until=None, usage_bytes=usage, chunks_done=len(pieces)
        )
        vector_store_usage_refresh(store.pk)
        _progress_publish(store_file.pk)
        _reembedding_resume(store.pk)


def _batches_embed_and_write(
    store_file: VectorStoreFile,
    store: VectorStore,
    batches: list[list[TextPiece]],
    embed: Callable[[list[TextPiece]], Embedded],
    quota: KnowledgeQuota,
) -> bool:
    """Embed and write `batches`, as a pipeline: the next batch is embedded (in other processes: the engines) while
    up to WRITERS batches are written, each over its own connection, since writing (pgvector's HNSW inserts, a few
    milliseconds a row in one backend) is most of the time. False when it stopped, writing nothing more, because the
    file is no longer wanted (cancelled, deleted)."""
    writers = 1 if connection.in_atomic_block else WRITERS  # other connections could not see the caller's rows
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="knowledge-embed") as embedder,
        ThreadPoolExecutor(max_workers=writers, thread_name_prefix="knowledge-write") as writer,
    ):
        ahead: Future[Embedded] | None = embedder.submit(embed, batches[0]) if batches else None
        writing: deque[Future[None]] = deque()
        try:
            for number, batch in enumerate(batches):
                if ahead is None or not _still_wanted(store_file.pk):
                    while writing:
                        writing.popleft().result()
                    return False
                embedded = ahead.result()
                ahead = embedder.submit(embed, batches[number + 1]) if number + 1 < len(batches) else None
                while len(writing) >= writers:
                    writing.popleft().result()  # a failed write stops the file here
                if writers == 1:
                    _chunks_write(store_file, store, batch, embedded.vectors, quota)
                else:
                    writing.append(
                        writer.submit(_chunks_write_own_connection, store_file, store, batch, embedded, quota)
                    )
            while writing:
                writing.popleft().result()
            return True
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            for pending in writing:
                pending.cancel()
            raise


def _chunks_write_own_connection(
    store_file: VectorStoreFile, store: VectorStore, batch: list[TextPiece], embedded: Embedded, quota: KnowledgeQuota
) -> None:
    try:
        _chunks_write(store_file, store, batch, embedded.vectors, quota)
    finally:
        connection.close()  # this thread's: the pool's threads end with the file


def _pieces_written(store_file: VectorStoreFile, pieces: list[TextPiece]) -> set[int]:
    """The indexes of `pieces` an earlier run wrote. When that run cut the text elsewhere (it counted tokens another
    way: the engine's tokenizer was down, or came back), its chunks cannot be extended without overlaps or gaps, so
    they are deleted and the file is written again whole."""
    written = Chunk.objects.filter(store_file=store_file, generation=store_file.generation)
    spans = {piece.index: (piece.char_start, piece.char_end) for piece in pieces}
    found = {index: (start, end) for index, start, end in written.values_list("index", "char_start", "char_end")}
    if all(spans.get(index) == span for index, span in found.items()):
        return set(found)
    logger.info("store file %s was cut differently before: writing it again", store_file.pk)
    written.delete()
    return set()


def _reembedding_resume(store_id: int) -> None:
    """A store changing model waits for the files being ingested (into its current generation, with the old
    model) before it can switch: each one that completes asks for the re-embedding again, which embeds it anew."""
    if VectorStore.objects.filter(pk=store_id).exclude(reembed_model="").exists():
        transaction.on_commit(lambda: reembedding_send(store_id))


def _still_wanted(store_file_id: int) -> bool:
    return VectorStoreFile.objects.filter(pk=store_file_id, status=VectorStoreFile.Status.IN_PROGRESS).exists()


def _chunk_quota_check(quota: KnowledgeQuota, organization_id: int, adding: int) -> None:
    if quota.chunks_max is None:
        return
    stored = knowledge_chunks_stored(organization_id)
    if stored + adding > quota.chunks_max:
        raise IngestionFailed(
            "rate_limit_exceeded",
            f"the organisation's chunk quota is reached (knowledge_chunks_max, {quota.chunks_max} chunks): "
            f"{stored} chunks are stored and this file needs {adding} more",
        )


def _chunks_write(
    store_file: VectorStoreFile,
    store: VectorStore,
    batch: list[TextPiece],
    vectors: list[list[float]],
    quota: KnowledgeQuota,
) -> None:
    flags = [chunk_flag_categories(piece.text) for piece in batch]
    rows = [
        Chunk(
            organization_id=store.organization_id,
            vector_store=store,
            store_file=store_file,
            generation=store_file.generation,
            index=piece.index,
            text=piece.text,
            tokens=piece.tokens,
            char_start=piece.char_start,
            char_end=piece.char_end,
            dimensions=len(vector),
            embedding=vector,
            attributes=store_file.attributes,
            flagged=bool(categories),
            flag_categories=categories,
        )
        for piece, vector, categories in zip(batch, vectors, flags, strict=True)
    ]
    with transaction.atomic():
        if quota.chunks_max is not None:  # counted and written as one step: concurrent files cannot both fit
            knowledge_quota_lock(organization_id=store.organization_id, chunks=True)
            _chunk_quota_check(quota, store.organization_id, len(rows))
        Chunk.objects.bulk_create(rows, ignore_conflicts=True)  # a retried batch writes nothing twice
        written = Chunk.objects.filter(store_file=store_file, generation=store_file.generation).count()
        # Batches written side by side commit in any order: the count only grows.
        VectorStoreFile.objects.filter(pk=store_file.pk).update(
            chunks_done=Greatest(F("chunks_done"), written), claimed_until=lease_end()
        )
        _progress_publish(store_file.pk)


def _fail(store_file_id: int, code: str, message: str) -> None:
    logger.info("store file %s failed: %s", store_file_id, code)
    with transaction.atomic():
        failed = VectorStoreFile.objects.filter(pk=store_file_id, status=VectorStoreFile.Status.IN_PROGRESS).update(
            status=VectorStoreFile.Status.FAILED,
            last_error_code=code,
            last_error_message=message[:1000],
            claimed_until=None,
        )
        _progress_publish(store_file_id)
        if failed:  # no longer being ingested: a re-embedding waiting for it can switch
            store_id = VectorStoreFile.objects.filter(pk=store_file_id).values_list("vector_store_id", flat=True)
            _reembedding_resume(store_id[0])


def _progress_publish(store_file_id: int) -> None:
    """Announce the file's progress as the database has it (after commit: a page that re-reads it sees the same)."""
    row = (
        VectorStoreFile.objects.filter(pk=store_file_id)
        .values("vector_store_id", "status", "chunks_done", "chunks_total")
        .first()
    )
    if row is not None:
        event_publish(StoreFileProgressed(store_file_id=store_file_id, **row))


def store_files_stalled() -> list[int]:
    """Files in progress whose worker's lease ran out (a killed worker) or that no worker ever took, after a grace
    period: the periodic sweep enqueues them again."""
    grace = timezone.now() - timedelta(seconds=settings.INFERIA_TASK_REQUEUE_SECONDS)
    return list(
        VectorStoreFile.objects.filter(status=VectorStoreFile.Status.IN_PROGRESS)
        .filter(Q(claimed_until__lt=timezone.now()) | Q(claimed_until__isnull=True, created_at__lt=grace))
        .values_list("pk", flat=True)[:1000]
    )
