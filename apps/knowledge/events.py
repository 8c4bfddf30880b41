"""What knowledge bases announce, after commit, to whoever subscribes (see inferia_runtime/events.py): the console's
store page shows ingestion as it goes. Knowledge imports no page."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoreFileProgressed:
    """A store file's ingestion moved on: it was cut (`chunks_total` known), a batch of chunks was written, or it
    completed or failed. Carries only ids and counts; a page re-reads the file before it shows anything."""

    vector_store_id: int
    store_file_id: int
    status: str
    chunks_done: int
    chunks_total: int | None
