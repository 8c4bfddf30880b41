"""Ranking a vector store's chunks against a query vector: cosine similarity in PostgreSQL (pgvector), with OpenAI's
attribute filters and score threshold.

Two plans, because the installed pgvector (0.6) has no iterative index scans: an HNSW scan returns at most
`hnsw.ef_search` candidates and filters them afterwards, so a filter or a small store among large ones could leave
fewer than `max_num_results`. A store small enough is therefore ranked exactly (every chunk, no index); a larger one
goes through its dimension's HNSW index with a candidate list sized to the request, and is ranked exactly again
when the index came back short.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum

from apps.knowledge.models import INDEXED_DIMENSIONS, VectorStore
from inferia_runtime.errors import DomainRefusal

EXACT_SEARCH_MAX_CHUNKS = 20_000
EF_SEARCH_MAX = 1000
EF_SEARCH_MIN = 200  # candidates an HNSW scan keeps: recall@10 is about 0.84 at 100, above 0.9 from 200
MAX_NUM_RESULTS = 50
FILTER_DEPTH_MAX = 8
_COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True)
class ChunkHit:
    """One ranked chunk, with where it comes from."""

    chunk_id: int
    file_id: str
    filename: str
    index: int
    text: str
    score: float
    attributes: dict[str, Any]
    flagged: bool


def filter_sql(spec: Any, depth: int = 0) -> tuple[str, list[Any]]:
    """The SQL condition (on the chunk alias `c`) of an OpenAI attribute filter: a comparison
    `{"type": "eq", "key": ..., "value": ...}` or a compound `{"type": "and"|"or", "filters": [...]}`."""
    if depth > FILTER_DEPTH_MAX:
        raise DomainRefusal("filters are nested too deeply")
    if not isinstance(spec, dict):
        raise DomainRefusal("a filter must be an object")
    kind = spec.get("type")
    if kind in ("and", "or"):
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts or len(parts) > 32:
            raise DomainRefusal("a compound filter needs 1 to 32 filters")
        compiled = [filter_sql(part, depth + 1) for part in parts]
        joiner = f" {kind.upper()} "
        return "(" + joiner.join(sql for sql, _ in compiled) + ")", [p for _, params in compiled for p in params]
    if kind not in _COMPARISONS:
        raise DomainRefusal("a filter's type must be eq, ne, gt, gte, lt, lte, and or or")
    key, value = spec.get("key"), spec.get("value")
    if not isinstance(key, str) or not key or len(key) > 64:
        raise DomainRefusal("a filter's key must be a string of 1 to 64 characters")
    operator = _COMPARISONS[kind]
    if isinstance(value, bool) or kind in ("eq", "ne"):
        if not isinstance(value, str | int | float | bool):
            raise DomainRefusal("a filter's value must be a string, a number or a boolean")
        # JSON equality: 3 matches 3.0, "3" does not match 3, as in OpenAI's filters.
        return f"(c.attributes -> %s) {operator} to_jsonb(%s::{_sql_type(value)})", [key, value]
    if isinstance(value, int | float):
        return (
            f"(jsonb_typeof(c.attributes -> %s) = 'number' AND (c.attributes ->> %s)::float8 {operator} %s)",
            [key, key, float(value)],
        )
    if isinstance(value, str):
        return f"(jsonb_typeof(c.attributes -> %s) = 'string' AND (c.attributes ->> %s) {operator} %s)", [
            key,
            key,
            value,
        ]
    raise DomainRefusal("a filter's value must be a string, a number or a boolean")


def _sql_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "float8"
    return "text"


def vector_store_search(
    *,
    store: VectorStore,
    vector: Sequence[float],
    max_num_results: int = 10,
    filters: dict[str, Any] | None = None,
    score_threshold: float = 0.0,
    include_flagged: bool = True,
) -> list[ChunkHit]:
    """The store's chunks of its current generation closest to `vector` (cosine), best first, at most
    `max_num_results` of them, with a score (1 - cosine distance) at least `score_threshold`."""
    if not 1 <= max_num_results <= MAX_NUM_RESULTS:
        raise DomainRefusal(f"max_num_results must be between 1 and {MAX_NUM_RESULTS}")
    dims = store.dimensions
    if len(vector) != dims:
        raise DomainRefusal(f"the query vector has {len(vector)} dimensions; the store's have {dims}")
    literal = "[" + ",".join(repr(float(x)) for x in vector) + "]"
    conditions = ["c.vector_store_id = %s", "c.generation = %s", "c.dimensions = %s"]
    params: list[Any] = [store.pk, store.generation, dims]
    if filters:
        sql, filter_params = filter_sql(filters)
        conditions.append(sql)
        params += filter_params
    if not include_flagged:
        conditions.append("NOT c.flagged")
    distance = f"(c.embedding::vector({dims}) <=> %s::vector({dims}))"
    # Only integers and fixed fragments are interpolated; every value is a parameter.
    query = (
        f"SELECT c.id, f.public_id, f.filename, c.index, c.text, 1 - {distance}, c.attributes, c.flagged "  # noqa: S608
        "FROM knowledge_chunk c JOIN knowledge_vectorstorefile sf ON sf.id = c.store_file_id "
        "JOIN knowledge_knowledgefile f ON f.id = sf.file_id "
        f"WHERE {' AND '.join(conditions)} AND 1 - {distance} >= %s "
        f"ORDER BY {distance} LIMIT %s"
    )
    arguments = [literal, *params, literal, score_threshold, literal, max_num_results]
    # The files' counts of written chunks, not a COUNT over the chunk table: a few rows instead of the whole store.
    written = store.store_files.aggregate(total=Sum("chunks_done"))["total"] or 0
    indexed = dims in INDEXED_DIMENSIONS and written > EXACT_SEARCH_MAX_CHUNKS
    rows = _ranked(query, arguments, exact=not indexed, wanted=max_num_results)
    if indexed and len(rows) < max_num_results:
        rows = _ranked(query, arguments, exact=True, wanted=max_num_results)
    return [
        ChunkHit(
            chunk_id=row[0],
            file_id=row[1],
            filename=row[2],
            index=row[3],
            text=row[4],
            score=float(row[5]),
            attributes=json.loads(row[6]) if isinstance(row[6], str) else row[6] or {},
            flagged=row[7],
        )
        for row in rows
    ]


def _ranked(query: str, arguments: list[Any], *, exact: bool, wanted: int) -> list[tuple[Any, ...]]:
    with transaction.atomic(), connection.cursor() as cursor:
        timeout_ms = int(settings.INFERIA_KNOWLEDGE_SEARCH_TIMEOUT_S * 1000)
        cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
        if exact:
            cursor.execute("SET LOCAL enable_indexscan = off")
        else:
            cursor.execute(f"SET LOCAL hnsw.ef_search = {min(EF_SEARCH_MAX, max(EF_SEARCH_MIN, wanted * 20))}")
        cursor.execute(query, arguments)
        return list(cursor.fetchall())
