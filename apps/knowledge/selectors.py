"""Reads of the knowledge base shared by its doors (/v1, the REST API, retrieval in a chat completion)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from django.db.models import Count, Model, Q, QuerySet

from apps.knowledge.models import VectorStore, VectorStoreFile, VectorStoreFileBatch

M = TypeVar("M", bound=Model)

# How each model that belongs to a store names that store's public id.
_STORE_ID_LOOKUP: dict[type[Any], str] = {
    VectorStore: "public_id",
    VectorStoreFile: "vector_store__public_id",
    VectorStoreFileBatch: "vector_store__public_id",
}


def rows_in_allowed_stores(rows: QuerySet[M], *, allowed: Sequence[str]) -> QuerySet[M]:
    """`rows` (already restricted to what the caller may see) narrowed to the vector stores a key is limited to
    (its `allowed_vector_stores`): stores outside them, and their files, read as unknown. No limit, or rows that
    belong to no store (uploaded files), leave `rows` as they are."""
    lookup = _STORE_ID_LOOKUP.get(rows.model)
    if not allowed or lookup is None:
        return rows
    return rows.filter(**{f"{lookup}__in": list(allowed)})


def _file_count_name(status: str) -> str:
    return f"files_{status}"


def stores_with_file_counts(rows: QuerySet[VectorStore]) -> QuerySet[VectorStore]:
    """`rows` with each store's files counted by status in the same query (`store_file_counts` reads them), so
    that a list of stores takes as many queries for a hundred stores as for one."""
    return rows.annotate(
        **{
            _file_count_name(status): Count("store_files", filter=Q(store_files__status=status), distinct=True)
            for status in VectorStoreFile.Status.values
        }
    )


def store_file_counts(store: VectorStore) -> dict[str, int]:
    """The store's files by status, with their total: from `stores_with_file_counts`' annotations when the store
    came from such a list, else one query."""
    if not hasattr(store, _file_count_name(VectorStoreFile.Status.IN_PROGRESS)):
        store = stores_with_file_counts(VectorStore.objects.filter(pk=store.pk)).get()
    counts = {status: int(getattr(store, _file_count_name(status))) for status in VectorStoreFile.Status.values}
    return {**counts, "total": sum(counts.values())}
