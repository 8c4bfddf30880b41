"""Re-embedding a store whose embedding model changed (services.vector_store_embedding_change): every chunk of the
store's current generation is embedded again, from the text already stored (nothing is extracted or cut again, so
the chunks keep their places and ids in the file; the new model's tokenizer counts their tokens again), into the
next generation, through the gateway with the store's own key. Searches keep reading the current generation, with
the old model, until the switch.

Idempotent and resumable as ingestion is: one worker holds the store with a lease (a conditional UPDATE, renewed
with each batch), a chunk is written once per file, generation and index (inserts that ignore conflicts), and a
worker that takes over skips the chunks of the next generation that exist. The switch is one transaction under the
store's lock, taken only when every completed file has all its chunks in the next generation and no file is still
being ingested: a file attached meanwhile is ingested with the old model into the current generation, then
re-embedded (its completion asks for the re-embedding again). The old generation's chunks are deleted after the
switch commits, in batches.

A refusal by the gateway (the model is gone or not allowed, a limit, a quota or a budget) ends the change: the store
keeps serving the old vectors, says why (`reembed_error`), and the new generation's chunks are deleted. Re-embedded
chunks replace chunks already counted, so they do not count against the organisation's chunk quota.
"""

from __future__ import annotations

import asyncio
import logging

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.knowledge.chunking import tokens_counted
from apps.knowledge.embedding import Embedded, EmbeddingError, embeddings_create, run_in_own_loop
from apps.knowledge.ingestion import EMBED_BATCH, lease_end, store_ingest_secret
from apps.knowledge.models import Chunk, VectorStore, VectorStoreFile
from apps.knowledge.services import store_key_models_set, vector_store_usage_refresh

logger = logging.getLogger(__name__)

DELETE_BATCH = 5000
_COPIED = ("index", "text", "tokens", "char_start", "char_end", "attributes", "flagged", "flag_categories")


def store_reembed_claim(store_id: int) -> bool:
    """Take the store's re-embedding for this worker until the lease runs out; False when another worker holds it or
    no change of model is under way."""
    return (
        VectorStore.objects.filter(pk=store_id)
        .exclude(reembed_model="")
        .filter(Q(reembed_claimed_until__isnull=True) | Q(reembed_claimed_until__lt=timezone.now()))
        .update(reembed_claimed_until=lease_end())
        == 1
    )


def store_reembed_run(store_id: int) -> None:
    """Re-embed a claimed store's completed files and switch it to the new generation once all of them are done; or
    leave it waiting for files still being ingested (their completion resumes it); or record why it failed."""
    store = VectorStore.objects.select_related("organization").get(pk=store_id)
    model = store.reembed_model
    try:
        secret = store_ingest_secret(store)
        while True:
            for store_file_id in _completed_files(store_id):
                if not store_file_reembed(store=store, store_file_id=store_file_id, secret=secret):
                    return  # the change ended meanwhile (failed, or the store was deleted)
            outcome = _switch(store_id, model)
            if outcome != "pending":
                break  # switched, or files are still being ingested, or the change ended
    except EmbeddingError as error:
        _fail(store_id, model, error.message)
        return
    if outcome == "switched":
        _chunks_delete(Q(vector_store_id=store_id, generation__lt=store.generation + 1))
    else:
        VectorStore.objects.filter(pk=store_id, reembed_model=model).update(reembed_claimed_until=None)


def store_file_reembed(*, store: VectorStore, store_file_id: int, secret: str) -> bool:
    """Embed with the new model the chunks of one file that the next generation lacks, a batch at a time; False when
    the change ended meanwhile."""
    current, target = store.generation, store.generation + 1
    missing = (
        Chunk.objects.filter(store_file_id=store_file_id, generation=current)
        .filter(~Exists(Chunk.objects.filter(store_file_id=store_file_id, generation=target, index=OuterRef("index"))))
        .order_by("index")
    )
    last = -1
    while True:
        batch = list(missing.filter(index__gt=last).values(*_COPIED)[:EMBED_BATCH])
        if not batch:
            return True
        if not _still_changing(store.pk, store.reembed_model):
            return False
        texts = [row["text"] for row in batch]

        async def embedded_and_counted(texts: list[str] = texts) -> tuple[Embedded, list[int]]:
            # The chunks keep their text and places; their token counts are the new model's tokenizer's.
            return await asyncio.gather(
                embeddings_create(secret=secret, model=store.reembed_model, inputs=texts),
                tokens_counted(texts, organization_id=store.organization_id, model=store.reembed_model),
            )

        embedded, counts = run_in_own_loop(embedded_and_counted)
        if any(len(vector) != store.reembed_dimensions for vector in embedded.vectors):
            raise EmbeddingError(502, "bad_gateway", "the new embedding model answered vectors of another size")
        rows = [
            Chunk(
                organization_id=store.organization_id,
                vector_store_id=store.pk,
                store_file_id=store_file_id,
                generation=target,
                dimensions=len(vector),
                embedding=vector,
                **{**row, "tokens": tokens},
            )
            for row, vector, tokens in zip(batch, embedded.vectors, counts, strict=True)
        ]
        try:
            with transaction.atomic():
                Chunk.objects.bulk_create(rows, ignore_conflicts=True)  # a retried batch writes nothing twice
                VectorStore.objects.filter(pk=store.pk, reembed_model=store.reembed_model).update(
                    reembed_claimed_until=lease_end()
                )
        except IntegrityError:
            if VectorStoreFile.objects.filter(pk=store_file_id).exists():
                raise
            return True  # the file was detached meanwhile: nothing of it to switch to
        last = batch[-1]["index"]


def reembed_progress(store: VectorStore) -> tuple[int, int]:
    """Chunks of a store being re-embedded that the new model has embedded, and how many there are to embed."""
    counts = dict(
        Chunk.objects.filter(vector_store=store, generation__in=[store.generation, store.generation + 1])
        .values_list("generation")
        .annotate(n=Count("id"))
        .order_by()
    )
    return counts.get(store.generation + 1, 0), counts.get(store.generation, 0)


def stores_reembedding_stalled() -> list[int]:
    """Stores changing model that no worker holds (its lease ran out, or the store waits on files being ingested,
    or the first enqueue was lost): the periodic sweep enqueues them again."""
    return list(
        VectorStore.objects.exclude(reembed_model="")
        .filter(Q(reembed_claimed_until__isnull=True) | Q(reembed_claimed_until__lt=timezone.now()))
        .values_list("pk", flat=True)[:1000]
    )


def _completed_files(store_id: int) -> list[int]:
    return list(
        VectorStoreFile.objects.filter(vector_store_id=store_id, status=VectorStoreFile.Status.COMPLETED)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _still_changing(store_id: int, model: str) -> bool:
    return VectorStore.objects.filter(pk=store_id, reembed_model=model).exists()


def _switch(store_id: int, model: str) -> str:
    """Make the next generation the one searches read, with its model and size, if it is complete: "switched";
    "waiting" while files are being ingested; "pending" when a file completed since it was looked at; "ended" when
    the change is no longer under way."""
    with transaction.atomic():
        store = VectorStore.objects.select_for_update().filter(pk=store_id).first()
        if store is None or store.reembed_model != model:
            return "ended"
        if VectorStoreFile.objects.filter(vector_store=store, status=VectorStoreFile.Status.IN_PROGRESS).exists():
            return "waiting"
        current, target = store.generation, store.generation + 1
        lacking = Chunk.objects.filter(
            vector_store=store, generation=current, store_file__status=VectorStoreFile.Status.COMPLETED
        ).filter(
            ~Exists(Chunk.objects.filter(store_file=OuterRef("store_file"), generation=target, index=OuterRef("index")))
        )
        if lacking.exists():
            return "pending"
        old = (store.embedding_model, store.dimensions)
        store.generation, store.embedding_model, store.dimensions = target, model, store.reembed_dimensions or 0
        store.reembed_model, store.reembed_dimensions, store.reembed_claimed_until = "", None, None
        store.save(
            update_fields=[
                "generation",
                "embedding_model",
                "dimensions",
                "reembed_model",
                "reembed_dimensions",
                "reembed_claimed_until",
            ]
        )
        _files_usage_recount(store_id, target, store.dimensions)
        vector_store_usage_refresh(store_id)
        store_key_models_set(store=store, models=[model])  # the old model is no longer the store's to call
        audit_record(
            action="knowledge.store.embedding_switch",
            actor=None,
            target=store,
            changes={
                "embedding_model": [old[0], model],
                "dimensions": [old[1], store.dimensions],
                "generation": target,
            },
        )
    return "switched"


def _files_usage_recount(store_id: int, generation: int, dimensions: int) -> None:
    """Each file's stored bytes and written chunks as its new generation has them (a failed file's partial chunks
    of the old generation are about to go), and the generation its chunks are for."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE knowledge_vectorstorefile sf SET generation = %s, usage_bytes = COALESCE(("
            "SELECT SUM(octet_length(c.text)) + 4 * %s * COUNT(*) FROM knowledge_chunk c "
            "WHERE c.store_file_id = sf.id AND c.generation = %s), 0), chunks_done = ("
            "SELECT COUNT(*) FROM knowledge_chunk c WHERE c.store_file_id = sf.id AND c.generation = %s) "
            "WHERE sf.vector_store_id = %s",
            [generation, dimensions, generation, generation, store_id],
        )


def _fail(store_id: int, model: str, message: str) -> None:
    """End the change: the store keeps its model and vectors, and says why; the key is narrowed back."""
    logger.info("re-embedding vector store %s with %s failed: %s", store_id, model, message)
    with transaction.atomic():
        store = VectorStore.objects.select_for_update().filter(pk=store_id, reembed_model=model).first()
        if store is None:
            return
        store.reembed_model, store.reembed_dimensions, store.reembed_claimed_until = "", None, None
        store.reembed_error = f"re-embedding with {model} failed: {message}"[:1000]
        store.save(update_fields=["reembed_model", "reembed_dimensions", "reembed_claimed_until", "reembed_error"])
        store_key_models_set(store=store, models=[store.embedding_model])
        audit_record(
            action="knowledge.store.embedding_fail",
            actor=None,
            target=store,
            changes={"embedding_model": model, "error": message[:500]},
        )
    _chunks_delete(Q(vector_store_id=store_id, generation__gt=store.generation))


def _chunks_delete(where: Q) -> None:
    """Delete chunks in batches: each a short transaction, however large the store."""
    while True:
        ids = list(Chunk.objects.filter(where).values_list("pk", flat=True)[:DELETE_BATCH])
        if not ids:
            return
        Chunk.objects.filter(pk__in=ids).delete()
