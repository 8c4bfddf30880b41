"""The knowledge pages' reads: the stores with their files counted by status in SQL, one store's files with their
ingestion progress (what the page shows and the live WebSocket pushes), and a file's chunks in order. Callers pass
querysets already narrowed by `.restrict()`; every read is a fixed number of queries."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from apps.knowledge.models import Chunk, VectorStore, VectorStoreFile
from apps.knowledge.selectors import stores_with_file_counts

FileStatus = VectorStoreFile.Status
STORE_FILES_SHOWN = 500
CHUNKS_SHOWN = 1000


def vector_store_list(*, stores: QuerySet[VectorStore]) -> QuerySet[VectorStore]:
    """Stores with their files counted by ingestion status (one grouped query, however many stores)."""
    return stores_with_file_counts(stores).annotate(files_total=Count("store_files", distinct=True))


def _progress(row: VectorStoreFile) -> int | None:
    """Percent of the file's chunks embedded, once it is cut (None before)."""
    if row.status == FileStatus.COMPLETED:
        return 100
    if not row.chunks_total:
        return None
    return min(100, row.chunks_done * 100 // row.chunks_total)


def vector_store_files(*, store_files: QuerySet[VectorStoreFile]) -> list[dict[str, Any]]:
    """A store's files, newest first, with status, progress and last error: the rows of the store page and of the
    snapshot its WebSocket pushes (JSON-ready)."""
    rows = store_files.select_related("file").order_by("-created_at", "-id")[:STORE_FILES_SHOWN]
    return [
        {
            "id": row.pk,
            "file_id": row.file.public_id,
            "filename": row.file.filename,
            "bytes": row.file.bytes,
            "status": row.status,
            "status_label": row.get_status_display(),
            "chunks_done": row.chunks_done,
            "chunks_total": row.chunks_total,
            "progress": _progress(row),
            "usage_bytes": row.usage_bytes,
            "error_code": row.last_error_code,
            "error_message": row.last_error_message,
            "created_at": row.created_at.isoformat(),
        }
        for row in rows
    ]


def vector_store_snapshot(*, store: VectorStore, store_files: QuerySet[VectorStoreFile]) -> dict[str, Any]:
    """What the store page's live panel shows: the files and the store's stored bytes."""
    files = vector_store_files(store_files=store_files.filter(vector_store=store))
    return {
        "id": store.pk,
        "usage_bytes": store.usage_bytes,
        "files": files,
        "in_progress": sum(1 for row in files if row["status"] == FileStatus.IN_PROGRESS),
    }


def store_file_chunks(*, chunks: QuerySet[Chunk], store_file: VectorStoreFile) -> list[Chunk]:
    """A file's chunks of its current generation, in order (the first CHUNKS_SHOWN)."""
    return list(
        chunks.filter(store_file=store_file, generation=store_file.generation)
        .only("index", "text", "tokens", "char_start", "char_end", "flagged", "flag_categories")
        .order_by("index")[:CHUNKS_SHOWN]
    )
