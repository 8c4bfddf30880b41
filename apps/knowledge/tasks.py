"""The ingestion worker's tasks: thin, by id, idempotent (see apps.knowledge.ingestion)."""

from __future__ import annotations

from celery import shared_task

from apps.knowledge.enqueue import ingestion_send, reembedding_send
from apps.knowledge.ingestion import store_file_claim, store_file_ingest_run, store_files_stalled
from apps.knowledge.reembedding import store_reembed_claim, store_reembed_run, stores_reembedding_stalled


@shared_task(acks_late=True, time_limit=3600, ignore_result=True)
def store_file_ingest(store_file_id: int) -> None:
    if not store_file_claim(store_file_id):
        return  # another worker has it, or it is finished, failed or cancelled
    store_file_ingest_run(store_file_id)


@shared_task(acks_late=True, time_limit=60, ignore_result=True)
def store_files_resume() -> None:
    """Enqueue again the files, and the stores changing model, whose worker died (its lease ran out) or whose first
    enqueue was lost."""
    for store_file_id in store_files_stalled():
        ingestion_send(store_file_id)
    for store_id in stores_reembedding_stalled():
        reembedding_send(store_id)


@shared_task(acks_late=True, time_limit=6 * 3600, ignore_result=True)
def vector_store_reembed(store_id: int) -> None:
    if not store_reembed_claim(store_id):
        return  # another worker has it, or the change completed or failed
    store_reembed_run(store_id)
