"""Ranking a vector store's chunks against a query vector: cosine similarity in PostgreSQL (pgvector), with OpenAI's
attribute filters and score threshold.

A search is two reads. The first looks at the store's files only: how many chunks they have written, and which of
them an attribute filter keeps (attributes belong to files, as in OpenAI's API; chunks carry a copy). The second
ranks chunks, by one of two plans, because the installed pgvector (0.6) has no iterative index scans: an HNSW scan
returns at most `hnsw.ef_search` candidates and filters them afterwards, so a filter or a small store among large
ones could leave fewer than `max_num_results`.

- When the chunks to rank (the filter's files', or the whole store's) are few enough, they are ranked exactly,
  every one of them, read through the files' index: a filter makes the scan smaller, never less exact.
- Otherwise the search goes through its dimension's HNSW index, with a candidate list grown by how small a share
  of that index the chunks to rank are, and is ranked exactly again when the index came back short.

The distance is computed once a row (the score is derived from it) and the score threshold is applied to the
ranked rows: they come best first, so that keeps the same rows as a condition in SQL would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection

from apps.knowledge.models import INDEXED_DIMENSIONS, VectorStore
from inferia_runtime.errors import DomainRefusal

EXACT_SEARCH_MAX_CHUNKS = 20_000
EF_SEARCH_MAX = 1000
# Candidates an HNSW scan keeps (pgvector's default graph, m 16 and ef_construction 64): on 100,000 chunks of 384
# dimensions recall@10 is 0.86 at 100, 0.94 at 220, 0.96 at 250 and 0.97 at 275, each 100 more costing about 2 ms
# (a graph built with ef_construction 128 is no better for the same search time, and costs a third more a chunk
# written).
EF_SEARCH_MIN = 250
EF_PER_RESULT = 25
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


def filter_sql(spec: Any, depth: int = 0, *, column: str = "sf.attributes") -> tuple[str, list[Any]]:
    """The SQL condition on the JSON `column` (a store file's attributes by default) of an OpenAI attribute filter: a
    comparison `{"type": "eq", "key": ..., "value": ...}` or a compound `{"type": "and"|"or", "filters": [...]}`."""
    if depth > FILTER_DEPTH_MAX:
        raise DomainRefusal("filters are nested too deeply")
    if not isinstance(spec, dict):
        raise DomainRefusal("a filter must be an object")
    kind = spec.get("type")
    if kind in ("and", "or"):
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts or len(parts) > 32:
            raise DomainRefusal("a compound filter needs 1 to 32 filters")
        compiled = [filter_sql(part, depth + 1, column=column) for part in parts]
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
        return f"({column} -> %s) {operator} to_jsonb(%s::{_sql_type(value)})", [key, value]
    if isinstance(value, int | float):
        return (
            f"(jsonb_typeof({column} -> %s) = 'number' AND ({column} ->> %s)::float8 {operator} %s)",
            [key, key, float(value)],
        )
    if isinstance(value, str):
        return f"(jsonb_typeof({column} -> %s) = 'string' AND ({column} ->> %s) {operator} %s)", [
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


@dataclass(frozen=True)
class SearchPlan:
    """What the files say before any chunk is read: which files the filter keeps (None: every file) with how many
    chunks they hold, and how many entries the dimension's HNSW index has (the store's chunks when unknown)."""

    file_ids: list[int] | None
    matched_chunks: int
    index_chunks: int


def search_plan(store: VectorStore, filters: dict[str, Any] | None) -> SearchPlan:
    """One read of the store's files (and of the HNSW index's size, from the catalogue's statistics)."""
    index = f"knowledge_chunk_hnsw_{store.dimensions}" if store.dimensions in INDEXED_DIMENSIONS else None
    condition, params = filter_sql(filters) if filters else ("TRUE", [])
    # Only fixed fragments and an index name built from an integer are interpolated; every value is a parameter.
    query = (
        "SELECT COALESCE(SUM(sf.chunks_done), 0), "  # noqa: S608
        f"COALESCE(SUM(sf.chunks_done) FILTER (WHERE {condition}), 0), "
        f"array_agg(sf.id) FILTER (WHERE {condition}), "
        "(SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)) "
        "FROM knowledge_vectorstorefile sf WHERE sf.vector_store_id = %s"
    )
    total, matched, file_ids, indexed = _bounded_rows(query, [*params, *params, index, store.pk])[0]
    return SearchPlan(
        file_ids=(file_ids or []) if filters else None,
        matched_chunks=int(matched),
        index_chunks=int(indexed) if indexed and indexed > 0 else int(total),
    )


def candidates_for(plan: SearchPlan, wanted: int) -> int:
    """The HNSW candidate list for `wanted` rows: EF_PER_RESULT a row, times how many index entries there are for
    each chunk this search may return (the index holds every store's chunks of the dimension), within bounds."""
    share = max(plan.matched_chunks, 1) / max(plan.index_chunks, plan.matched_chunks, 1)
    return int(min(EF_SEARCH_MAX, max(EF_SEARCH_MIN, wanted * EF_PER_RESULT / share)))


def vector_store_search(
    *,
    store: VectorStore,
    vector: Sequence[float],
    max_num_results: int = 10,
    filters: dict[str, Any] | None = None,
    score_threshold: float = 0.0,
    include_flagged: bool = True,
    plan: SearchPlan | None = None,
) -> list[ChunkHit]:
    """The store's chunks of its current generation closest to `vector` (cosine), best first, at most
    `max_num_results` of them, with a score (1 - cosine distance) at least `score_threshold`. `plan`: the store's
    `search_plan` for these filters, when the caller read it already."""
    if not 1 <= max_num_results <= MAX_NUM_RESULTS:
        raise DomainRefusal(f"max_num_results must be between 1 and {MAX_NUM_RESULTS}")
    dims = store.dimensions
    if len(vector) != dims:
        raise DomainRefusal(f"the query vector has {len(vector)} dimensions; the store's have {dims}")
    if plan is None:
        plan = search_plan(store, filters)
    if plan.file_ids == []:
        return []
    literal = "[" + ",".join(repr(float(x)) for x in vector) + "]"
    indexed = dims in INDEXED_DIMENSIONS and plan.matched_chunks > EXACT_SEARCH_MAX_CHUNKS
    rows = _ranked(store, plan, literal, exact=not indexed, wanted=max_num_results, include_flagged=include_flagged)
    if indexed and len(rows) < max_num_results:
        rows = _ranked(store, plan, literal, exact=True, wanted=max_num_results, include_flagged=include_flagged)
    return [
        ChunkHit(
            chunk_id=row[0],
            file_id=row[1],
            filename=row[2],
            index=row[3],
            text=row[4],
            score=1.0 - float(row[5]),
            attributes=json.loads(row[6]) if isinstance(row[6], str) else row[6] or {},
            flagged=row[7],
        )
        for row in rows
        if 1.0 - float(row[5]) >= score_threshold
    ]


def _ranked(
    store: VectorStore, plan: SearchPlan, literal: str, *, exact: bool, wanted: int, include_flagged: bool
) -> list[tuple[Any, ...]]:
    dims = store.dimensions
    conditions = ["c.vector_store_id = %s", "c.generation = %s", "c.dimensions = %s"]
    params: list[Any] = [store.pk, store.generation, dims]
    if plan.file_ids is not None:
        conditions.append("c.store_file_id = ANY(%s)")
        params.append(plan.file_ids)
    if not include_flagged:
        conditions.append("NOT c.flagged")
    # The index is on the expression cast to the dimension; an exact scan skips the cast (a copy of every vector).
    distance = f"c.embedding::vector({dims}) <=> %s::vector({dims})" if not exact else "c.embedding <=> %s::vector"
    # Ranked on the chunk rows alone, then joined to their files: joining first would carry every row's vector
    # through the joins. Only integers and fixed fragments are interpolated; every value is a parameter.
    query = (
        "SELECT r.id, f.public_id, f.filename, r.index, r.text, r.distance, sf.attributes, r.flagged FROM ("  # noqa: S608
        f"SELECT c.id, c.store_file_id, c.index, c.text, c.flagged, {distance} AS distance FROM knowledge_chunk c "
        f"WHERE {' AND '.join(conditions)} ORDER BY distance LIMIT %s) r "
        "JOIN knowledge_vectorstorefile sf ON sf.id = r.store_file_id "
        "JOIN knowledge_knowledgefile f ON f.id = sf.file_id ORDER BY r.distance"
    )
    plan_setting = ("enable_indexscan", "off") if exact else ("hnsw.ef_search", str(candidates_for(plan, wanted)))
    return _bounded_rows(query, [literal, *params, wanted], plan_setting)


def _bounded_rows(query: str, params: list[Any], setting: tuple[str, str] | None = None) -> list[tuple[Any, ...]]:
    """`query`'s rows, cancelled past INFERIA_KNOWLEDGE_SEARCH_TIMEOUT_S, with a planner `setting` for it alone. One
    round trip: statements sent together run as one transaction, which the settings last for."""
    timeout_ms = max(1, int(settings.INFERIA_KNOWLEDGE_SEARCH_TIMEOUT_S * 1000))  # 0 would mean no bound
    configure = "SELECT set_config('statement_timeout', %s, true)" + (", set_config(%s, %s, true)" if setting else "")
    with connection.cursor() as cursor:
        cursor.execute(f"{configure}; {query}", [str(timeout_ms), *(setting or ()), *params])
        cursor.nextset()
        return list(cursor.fetchall())
