"""Streaming exports (usage and audit, CSV and JSON Lines) in bounded memory under both servers.

Rows come from a server-side cursor read inside a transaction: in autocommit Django declares the cursor WITH HOLD,
and PostgreSQL then materialises the whole result before the first row comes back. They leave in batches of
EXPORT_BATCH_ROWS rows.

Under ASGI, Django's handler buffers a synchronous iterator whole before sending a byte (it warns about it), so there
the batches are handed out by an asynchronous iterator that pulls each one from the synchronous producer on the
request's thread-sensitive worker thread: the producer's transaction and cursor stay on one thread and one
connection, and the next batch is read only when the client has taken the previous one. Under WSGI (and Django's
test client) the synchronous producer is served as it is.

CSV cells that hold text from users (a model name sent to /v1, a user agent, an object's name) are neutralised
before they reach a spreadsheet: a leading `=`, `+`, `-`, `@`, tab or carriage return would make Excel or
LibreOffice evaluate the cell as a formula (OWASP's CSV injection guidance), so such a cell gets a leading single
quote. Numbers Inferia writes itself are not strings and pass through as numbers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse

EXPORT_BATCH_ROWS = 500
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_CURSOR_CHUNK_ROWS = 2000
_DONE = object()


def export_rows(queryset: QuerySet[Any]) -> Iterator[list[Any]]:
    """The rows of `queryset` (ordered and shaped by the caller: `values()` or `values_list()`), in batches, from a
    server-side cursor held in a transaction for as long as the export runs."""
    with transaction.atomic():
        batch: list[Any] = []
        for row in queryset.iterator(chunk_size=_CURSOR_CHUNK_ROWS):
            batch.append(row)
            if len(batch) == EXPORT_BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch


def csv_cell(value: Any) -> Any:
    """`value` ready for a CSV cell: text that a spreadsheet would run as a formula gets a leading single quote;
    anything that is not text (counts, costs, ids) is left as it is."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def _next_or_done(chunks: Iterator[str]) -> Any:
    return next(chunks, _DONE)


async def _chunks_async(chunks: Iterator[str]) -> AsyncIterator[str]:
    pull = sync_to_async(_next_or_done, thread_sensitive=True)
    try:
        while (chunk := await pull(chunks)) is not _DONE:
            yield chunk
    finally:
        # Ends the producer's transaction (and closes its cursor) on the thread that opened it, also when the
        # client went away mid-export.
        close = getattr(chunks, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=True)()


def export_response(request: Any, chunks: Iterator[str], *, content_type: str, filename: str) -> StreamingHttpResponse:
    """A streamed download of `chunks` for `request` (Django's or DRF's), iterated the way the server streams."""
    django_request: HttpRequest = getattr(request, "_request", request)
    content = _chunks_async(chunks) if isinstance(django_request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


__all__ = ["CSV_CONTENT_TYPE", "EXPORT_BATCH_ROWS", "csv_cell", "export_response", "export_rows"]
