"""Asking the worker to ingest, or to re-embed a store. Sent by the task's registered name, so that services never
import the task module (which imports them). A send that fails (the broker is down) is logged, not raised: the
periodic sweep of unfinished files picks the file up (apps.knowledge.tasks)."""

from __future__ import annotations

import logging

from celery import current_app

logger = logging.getLogger(__name__)

STORE_FILE_INGEST = "apps.knowledge.tasks.store_file_ingest"
VECTOR_STORE_REEMBED = "apps.knowledge.tasks.vector_store_reembed"


def ingestion_send(store_file_id: int) -> None:
    """Queue the ingestion of one store file."""
    try:
        current_app.send_task(STORE_FILE_INGEST, args=(store_file_id,))
    except Exception:
        logger.warning("could not enqueue the ingestion of store file %s", store_file_id, exc_info=True)


def reembedding_send(store_id: int) -> None:
    """Queue (or resume) the re-embedding of a store whose embedding model is changing."""
    try:
        current_app.send_task(VECTOR_STORE_REEMBED, args=(store_id,))
    except Exception:
        logger.warning("could not enqueue the re-embedding of vector store %s", store_id, exc_info=True)
