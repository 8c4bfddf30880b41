"""`/v1/files` and `/v1/vector_stores`: OpenAI's files and vector-store API, as ordinary Django views (django-ninja),
so that the official `openai` client's `files`, `vector_stores`, `vector_stores.files`, `vector_stores.file_batches`
and `vector_stores.search` work unchanged. The gateway adds this router to its `/v1` API (apps.gateway.openapi),
which publishes the schema and answers every error in OpenAI's shape.

Who may do what: a key with the `inference` scope may list, read and search; creating, uploading, changing and
deleting need `manage`. Every row is found through `.restrict()` with the key as principal (a key never leaves its
organisation, and an owned key has at most its owner's rights), and a key limited to some vector stores
(`allowed_vector_stores`) sees only those. Another organisation's ids read as unknown ones.

Uploads are streamed by Django to a temporary file and from it to the knowledge storage (never held in memory);
their size is bounded by INFERIA_KNOWLEDGE_FILE_MAX_BYTES, before Django reads them (inferia_site.asgi).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from django.db import transaction
from django.db.models import Count, Model, Q, QuerySet
from django.http import FileResponse, HttpRequest
from django.utils import timezone
from ninja import File, Form, Query, Router
from ninja.files import UploadedFile
from ninja.security import HttpBearer
from pydantic import BaseModel, ConfigDict, Field

from apps.audit.services import AuditContext
from apps.keys.models import ApiKey, Scope
from apps.keys.services import api_key_authenticate
from apps.knowledge import services
from apps.knowledge.embedding import EmbeddingError
from apps.knowledge.models import KnowledgeFile, VectorStore, VectorStoreFile, VectorStoreFileBatch
from apps.knowledge.search import ChunkHit
from apps.knowledge.selectors import rows_in_allowed_stores, store_file_counts, stores_with_file_counts
from apps.knowledge.storage import STREAM_BLOCK_BYTES, storage_stream
from apps.rbac.restrict import organizations_allowing
from inferia_runtime.errors import DomainRefusal

M = TypeVar("M", bound=Model)
READ_SCOPES = frozenset({Scope.INFERENCE, Scope.READ, Scope.MANAGE})
LIST_LIMIT_MAX = 100


class OpenAIError(Exception):
    """An error answered in OpenAI's shape (apps.gateway.openapi renders it)."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None, param=None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def refusal_error(error: DomainRefusal) -> OpenAIError:
    """A service's refusal as the client sees it: the gateway's own status for an embedding refusal (a limit is a
    429, an unknown model a 404), a 400 otherwise."""
    if isinstance(error, EmbeddingError):
        kind = "rate_limit_error" if error.status == 429 else "invalid_request_error"
        status = error.status if error.status in (400, 404, 429, 503, 504) else 502
        return OpenAIError(status, error.message, type=kind, code=error.code)
    return OpenAIError(400, str(error))


class KeyBearer(HttpBearer):
    """`Authorization: Bearer sk-inf-...`: a usable Inferia API key (`request.auth` becomes the ApiKey)."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        return api_key_authenticate(secret=token)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail


ERRORS: dict[int, Any] = {code: ErrorResponse for code in (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)}
ANSWERS: dict[int, Any] = {200: dict[str, Any], **ERRORS}
BYTES = {"200": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}

router = Router(auth=KeyBearer(), tags=["Files and vector stores"])


# --- Access --------------------------------------------------------------------------------------------------------


def _key(request: HttpRequest, *, manage: bool) -> ApiKey:
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    if manage and Scope.MANAGE not in key.scopes:
        raise OpenAIError(
            403, "This API key lacks the 'manage' scope.", type="permission_error", code="insufficient_scope"
        )
    if not manage and not READ_SCOPES.intersection(key.scopes):
        raise OpenAIError(403, "This API key has no scope that reads knowledge.", type="permission_error")
    return key


def _context(request: HttpRequest) -> AuditContext:
    return AuditContext.from_request(request)


def _visible(key: ApiKey, model: type[M], action: str = "view") -> QuerySet[M]:
    rows = model._default_manager.restrict(key, action)  # type: ignore[attr-defined]
    return rows_in_allowed_stores(rows, allowed=key.allowed_vector_stores)


def _one(key: ApiKey, model: type[M], action: str, noun: str, **lookup: Any) -> M:
    row = _visible(key, model, action).filter(**lookup).first()
    if row is None:
        if action != "view" and _visible(key, model).filter(**lookup).exists():
            raise OpenAIError(403, f"You may not {action} this {noun}.", type="permission_error")
        raise OpenAIError(404, f"No {noun} found with id '{next(iter(lookup.values()))}'.", code="not_found")
    return row


def _store(key: ApiKey, store_id: str, action: str = "view") -> VectorStore:
    return _one(key, VectorStore, action, "vector store", public_id=store_id)


def _store_file(key: ApiKey, store: VectorStore, file_id: str, action: str = "view") -> VectorStoreFile:
    return _one(key, VectorStoreFile, action, "file in this vector store", file__public_id=file_id, vector_store=store)


def _may_add(key: ApiKey, model: type[Model]) -> None:
    allowed = organizations_allowing(principal=key, action="add", model=model)
    if not allowed.filter(pk=key.organization_id).exists():
        raise OpenAIError(403, f"You may not add a {model._meta.verbose_name} here.", type="permission_error")


def _write(function: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run a write service as the request's transaction; its refusals become OpenAI errors."""
    try:
        with transaction.atomic(durable=True):
            return function(**kwargs)
    except DomainRefusal as error:
        raise refusal_error(error) from error


# --- Shapes --------------------------------------------------------------------------------------------------------


class Chunking(BaseModel):
    max_chunk_size_tokens: int = Field(ge=100, le=4096)
    chunk_overlap_tokens: int = Field(ge=0)


class ChunkingStrategy(BaseModel):
    type: Literal["auto", "static"] = "auto"
    static: Chunking | None = None

    def sizes(self) -> tuple[int | None, int | None]:
        if self.type == "static":
            if self.static is None:
                raise OpenAIError(400, "a static chunking strategy needs `static`", param="chunking_strategy")
            return self.static.max_chunk_size_tokens, self.static.chunk_overlap_tokens
        return None, None


class ExpiresAfter(BaseModel):
    anchor: Literal["last_active_at"] = "last_active_at"
    days: int = Field(ge=1, le=365)


Attributes = dict[str, str | float | bool]


class VectorStoreCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    file_ids: list[str] = Field(default_factory=list, max_length=500)
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy | None = None
    metadata: dict[str, str] | None = None
    embedding_model: str | None = Field(
        default=None, max_length=200, description="Inferia: the embedding model (a served model name) of the store."
    )


class VectorStoreUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=256)
    expires_after: ExpiresAfter | None = None
    metadata: dict[str, str] | None = None


class StoreFileCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file_id: str = Field(max_length=40)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class StoreFileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attributes: Attributes


class BatchFile(BaseModel):
    file_id: str = Field(max_length=40)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file_ids: list[str] | None = Field(default=None, max_length=500)
    files: list[BatchFile] | None = Field(default=None, max_length=500)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class RankingOptions(BaseModel):
    ranker: Literal["auto", "none", "default-2024-11-15"] = "auto"
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str | list[str]
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False


def _ts(moment: Any) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def file_shape(file: KnowledgeFile) -> dict[str, Any]:
    return {
        "id": file.public_id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": _ts(file.created_at),
        "expires_at": _ts(file.expires_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
    }


def store_shape(store: VectorStore) -> dict[str, Any]:
    counts = store_file_counts(store)
    expired = store.expires_at is not None and store.expires_at <= timezone.now()
    busy = counts["in_progress"] or store.reembed_model  # a change of embedding model re-embeds every file
    status = "expired" if expired else ("in_progress" if busy else "completed")
    return {
        "id": store.public_id,
        "object": "vector_store",
        "created_at": _ts(store.created_at),
        "name": store.name,
        "description": store.description or None,
        "usage_bytes": store.usage_bytes,
        "file_counts": counts,
        "status": status,
        "expires_after": (
            {"anchor": "last_active_at", "days": store.expires_after_days} if store.expires_after_days else None
        ),
        "expires_at": _ts(store.expires_at),
        "last_active_at": _ts(store.last_active_at),
        "metadata": store.metadata,
        "embedding_model": store.embedding_model,
    }


def store_file_shape(store_file: VectorStoreFile) -> dict[str, Any]:
    error = None
    if store_file.status == VectorStoreFile.Status.FAILED:
        error = {"code": store_file.last_error_code or "server_error", "message": store_file.last_error_message}
    return {
        "id": store_file.file.public_id,
        "object": "vector_store.file",
        "usage_bytes": store_file.usage_bytes,
        "created_at": _ts(store_file.created_at),
        "vector_store_id": store_file.vector_store.public_id,
        "status": store_file.status,
        "last_error": error,
        "chunking_strategy": {
            "type": "static",
            "static": {
                "max_chunk_size_tokens": store_file.chunk_max_tokens,
                "chunk_overlap_tokens": store_file.chunk_overlap_tokens,
            },
        },
        "attributes": store_file.attributes,
    }


def batch_shape(batch: VectorStoreFileBatch) -> dict[str, Any]:
    by_status = dict(batch.store_files.values_list("status").annotate(n=Count("id")).order_by())
    counts = {status: by_status.get(status, 0) for status in VectorStoreFile.Status.values}
    if batch.cancelled_at is not None:
        status = "cancelled"
    elif counts["in_progress"]:
        status = "in_progress"
    elif counts["failed"] and not counts["completed"]:
        status = "failed"
    else:
        status = "completed"
    return {
        "id": batch.public_id,
        "object": "vector_store.files_batch",
        "created_at": _ts(batch.created_at),
        "vector_store_id": batch.vector_store.public_id,
        "status": status,
        "file_counts": {**counts, "total": sum(counts.values())},
    }


def _page(rows: QuerySet[M], shape: Callable[[M], dict[str, Any]], *, id_field: str, params: Any) -> dict[str, Any]:
    """One page of a list in OpenAI's cursor shape (`after`/`before` name an id of the list)."""
    limit, order, after, before = params.limit, params.order, params.after, params.before
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise OpenAIError(400, f"limit must be between 1 and {LIST_LIMIT_MAX}", param="limit")
    newest_first = order != "asc"
    ordering = ("-created_at", "-id") if newest_first else ("created_at", "id")
    for cursor, forward in ((after, True), (before, False)):
        if not cursor:
            continue
        mark = rows.filter(**{id_field: cursor}).values("created_at", "id").first()
        if mark is None:
            raise OpenAIError(400, f"No item found with id '{cursor}'.", param="after" if forward else "before")
        later = Q(created_at__gt=mark["created_at"]) | Q(created_at=mark["created_at"], id__gt=mark["id"])
        earlier = Q(created_at__lt=mark["created_at"]) | Q(created_at=mark["created_at"], id__lt=mark["id"])
        rows = rows.filter(earlier if forward == newest_first else later)
    if before and not after:
        # The page just before the cursor: read backwards, answer in the list's order.
        items = list(rows.order_by(*(f.lstrip("-") if f.startswith("-") else f"-{f}" for f in ordering))[: limit + 1])
        more, items = len(items) > limit, items[:limit][::-1]
    else:
        items = list(rows.order_by(*ordering)[: limit + 1])
        more, items = len(items) > limit, items[:limit]
    data = [shape(item) for item in items]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


class ListParams(BaseModel):
    """OpenAI's cursor paging: `after` / `before` name an id of the list."""

    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None


class FileListParams(ListParams):
    purpose: str | None = None


class StoreFileListParams(ListParams):
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None


def _store_file_page(rows: QuerySet[VectorStoreFile], params: StoreFileListParams) -> dict[str, Any]:
    if params.filter:
        rows = rows.filter(status=params.filter)
    return _page(rows, store_file_shape, id_field="file__public_id", params=params)


# --- Files ---------------------------------------------------------------------------------------------------------


@router.post("/files", response=ANSWERS, summary="Upload a file")
def file_create(request: HttpRequest, file: File[UploadedFile], purpose: Form[str]) -> dict[str, Any]:
    key = _key(request, manage=True)
    _may_add(key, KnowledgeFile)
    created = _write(
        services.knowledge_file_create,
        organization=key.organization,
        handle=file,
        filename=file.name or "",
        purpose=purpose,
        content_type=file.content_type or "",
        actor=key,
        context=_context(request),
    )
    return file_shape(created)


@router.get("/files", response=ANSWERS, summary="The organisation's files")
def file_list(request: HttpRequest, params: Query[FileListParams]) -> dict[str, Any]:
    rows = _visible(_key(request, manage=False), KnowledgeFile)
    if params.purpose:
        rows = rows.filter(purpose=params.purpose)
    return _page(rows, file_shape, id_field="public_id", params=params)


@router.get("/files/{file_id}", response=ANSWERS, summary="One file")
def file_retrieve(request: HttpRequest, file_id: str) -> dict[str, Any]:
    return file_shape(_one(_key(request, manage=False), KnowledgeFile, "view", "file", public_id=file_id))


@router.delete("/files/{file_id}", response=ANSWERS, summary="Delete a file (and its chunks in every store)")
def file_delete(request: HttpRequest, file_id: str) -> dict[str, Any]:
    key = _key(request, manage=True)
    file = _one(key, KnowledgeFile, "delete", "file", public_id=file_id)
    _write(services.knowledge_file_delete, file=file, actor=key, context=_context(request))
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/files/{file_id}/content", response=ERRORS, openapi_extra={"responses": BYTES}, summary="A file's bytes")
def file_content(request: HttpRequest, file_id: str) -> FileResponse:
    file = _one(_key(request, manage=False), KnowledgeFile, "view", "file", public_id=file_id)
    response = FileResponse(storage_stream(file.storage_name), as_attachment=True, filename=file.filename)
    response.block_size = STREAM_BLOCK_BYTES
    response["Content-Type"] = "application/octet-stream"
    # A body streamed from a bucket cannot tell its own length; the file's row can.
    response["Content-Length"] = str(file.bytes)
    return response


# --- Vector stores -------------------------------------------------------------------------------------------------


@router.post("/vector_stores", response=ANSWERS, summary="Create a vector store")
def vector_store_create(request: HttpRequest, body: VectorStoreCreate) -> dict[str, Any]:
    from django.conf import settings

    key = _key(request, manage=True)
    _may_add(key, VectorStore)
    size, overlap = (body.chunking_strategy or ChunkingStrategy()).sizes()
    model = body.embedding_model or settings.INFERIA_KNOWLEDGE_EMBEDDING_MODEL
    try:
        store = services.vector_store_create_probed(
            organization=key.organization,
            embedding_model=model,
            actor=key,
            name=body.name or "",
            description=body.description or "",
            metadata=body.metadata,
            expires_after_days=body.expires_after.days if body.expires_after else None,
            chunk_max_tokens=size,
            chunk_overlap_tokens=overlap,
            file_ids=body.file_ids,
            context=_context(request),
        )
    except EmbeddingError as error:
        if error.status in (429, 503, 504):
            raise refusal_error(error) from error
        message = f"The embedding model '{model}' cannot be used: {error.message}"
        raise OpenAIError(400, message, param="embedding_model", code=error.code) from error
    except DomainRefusal as error:
        raise refusal_error(error) from error
    return store_shape(store)


@router.get("/vector_stores", response=ANSWERS, summary="The vector stores the key may use")
def vector_store_list(request: HttpRequest, params: Query[ListParams]) -> dict[str, Any]:
    rows = stores_with_file_counts(_visible(_key(request, manage=False), VectorStore))
    return _page(rows, store_shape, id_field="public_id", params=params)


@router.get("/vector_stores/{vector_store_id}", response=ANSWERS, summary="One vector store")
def vector_store_retrieve(request: HttpRequest, vector_store_id: str) -> dict[str, Any]:
    return store_shape(_store(_key(request, manage=False), vector_store_id))


@router.post("/vector_stores/{vector_store_id}", response=ANSWERS, summary="Rename, relabel or change a store's expiry")
def vector_store_update(request: HttpRequest, vector_store_id: str, body: VectorStoreUpdate) -> dict[str, Any]:
    key = _key(request, manage=True)
    store = _store(key, vector_store_id, "change")
    changes: dict[str, Any] = {}
    if "name" in body.model_fields_set:
        changes["name"] = body.name or ""
    if "metadata" in body.model_fields_set:
        changes["metadata"] = body.metadata or {}
    if "expires_after" in body.model_fields_set:
        changes["expires_after_days"] = body.expires_after.days if body.expires_after else None
    store = _write(services.vector_store_update, store=store, actor=key, context=_context(request), **changes)
    return store_shape(store)


@router.delete(
    "/vector_stores/{vector_store_id}", response=ANSWERS, summary="Delete a store with its chunks (its files stay)"
)
def vector_store_delete(request: HttpRequest, vector_store_id: str) -> dict[str, Any]:
    key = _key(request, manage=True)
    store = _store(key, vector_store_id, "delete")
    _write(services.vector_store_delete, store=store, actor=key, context=_context(request))
    return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}


@router.post(
    "/vector_stores/{vector_store_id}/search",
    response=ANSWERS,
    summary="Search a store's chunks",
    description="Needs a key with the `inference`, `read` or `manage` scope. The query's embedding is requested with "
    "the store's own key, and is metered on it.",
)
def vector_store_search(request: HttpRequest, vector_store_id: str, body: SearchRequest) -> dict[str, Any]:
    # Never reached: inferia_site.asgi sends this path to the gateway (apps.gateway.vector_search), which answers
    # with `search_page`: a search is a read on the inference path, like retrieval in a chat completion.
    raise OpenAIError(404, f"Unknown endpoint: {request.path}", code="unknown_url")


def search_page(query: str | list[str], hits: list[ChunkHit]) -> dict[str, Any]:
    """OpenAI's answer to a search: `vector_store.search_results.page`, best first."""
    return {
        "object": "vector_store.search_results.page",
        "search_query": [query] if isinstance(query, str) else query,
        "data": [
            {
                "file_id": hit.file_id,
                "filename": hit.filename,
                "score": round(hit.score, 6),
                "attributes": hit.attributes,
                "content": [{"type": "text", "text": hit.text}],
            }
            for hit in hits
        ],
        "has_more": False,
        "next_page": None,
    }


# --- A store's files -----------------------------------------------------------------------------------------------


def _store_files(store: VectorStore) -> QuerySet[VectorStoreFile]:
    return VectorStoreFile.objects.filter(vector_store=store).select_related("file", "vector_store")


@router.post("/vector_stores/{vector_store_id}/files", response=ANSWERS, summary="Attach a file (ingestion starts)")
def store_file_create(request: HttpRequest, vector_store_id: str, body: StoreFileCreate) -> dict[str, Any]:
    key = _key(request, manage=True)
    store = _store(key, vector_store_id, "change")
    size, overlap = (body.chunking_strategy or ChunkingStrategy()).sizes()
    store_file = _write(
        services.vector_store_file_attach,
        store=store,
        file_id=body.file_id,
        attributes=body.attributes,
        chunk_max_tokens=size,
        chunk_overlap_tokens=overlap,
        actor=key,
        context=_context(request),
    )
    return store_file_shape(_store_files(store).get(pk=store_file.pk))


@router.get("/vector_stores/{vector_store_id}/files", response=ANSWERS, summary="A store's files")
def store_file_list(request: HttpRequest, vector_store_id: str, params: Query[StoreFileListParams]) -> dict[str, Any]:
    store = _store(_key(request, manage=False), vector_store_id)
    return _store_file_page(_store_files(store), params)


@router.get(
    "/vector_stores/{vector_store_id}/files/{file_id}", response=ANSWERS, summary="A store file's ingestion status"
)
def store_file_retrieve(request: HttpRequest, vector_store_id: str, file_id: str) -> dict[str, Any]:
    key = _key(request, manage=False)
    store = _store(key, vector_store_id)
    return store_file_shape(_store_file(key, store, file_id))


@router.post(
    "/vector_stores/{vector_store_id}/files/{file_id}", response=ANSWERS, summary="Replace a store file's attributes"
)
def store_file_update(
    request: HttpRequest, vector_store_id: str, file_id: str, body: StoreFileUpdate
) -> dict[str, Any]:
    key = _key(request, manage=True)
    store = _store(key, vector_store_id, "change")
    store_file = _store_file(key, store, file_id, "change")
    _write(
        services.vector_store_file_update,
        store_file=store_file,
        attributes=body.attributes,
        actor=key,
        context=_context(request),
    )
    return store_file_shape(store_file)


@router.delete(
    "/vector_stores/{vector_store_id}/files/{file_id}", response=ANSWERS, summary="Remove a file from a store"
)
def store_file_delete(request: HttpRequest, vector_store_id: str, file_id: str) -> dict[str, Any]:
    key = _key(request, manage=True)
    store = _store(key, vector_store_id, "change")
    store_file = _store_file(key, store, file_id, "delete")
    _write(services.vector_store_file_detach, store_file=store_file, actor=key, context=_context(request))
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


@router.get(
    "/vector_stores/{vector_store_id}/files/{file_id}/content",
    response=ANSWERS,
    summary="A store file's chunks, in order",
)
def store_file_content(request: HttpRequest, vector_store_id: str, file_id: str) -> dict[str, Any]:
    key = _key(request, manage=False)
    store_file = _store_file(key, _store(key, vector_store_id), file_id)
    texts = store_file.chunks.filter(generation=store_file.generation).order_by("index").values_list("text", flat=True)
    return {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": text} for text in texts],
        "has_more": False,
        "next_page": None,
    }


# --- Batches -------------------------------------------------------------------------------------------------------


def _batch(key: ApiKey, store: VectorStore, batch_id: str, action: str = "view") -> VectorStoreFileBatch:
    return _one(key, VectorStoreFileBatch, action, "file batch", public_id=batch_id, vector_store=store)


@router.post("/vector_stores/{vector_store_id}/file_batches", response=ANSWERS, summary="Attach several files at once")
def batch_create(request: HttpRequest, vector_store_id: str, body: BatchCreate) -> dict[str, Any]:
    key = _key(request, manage=True)
    store = _store(key, vector_store_id, "change")
    if (body.file_ids is None) == (body.files is None):
        raise OpenAIError(400, "give either file_ids or files", param="file_ids")
    if body.files is not None and any(item.attributes or item.chunking_strategy for item in body.files):
        # One attribute set and chunking per batch, which each file may then change on its own.
        raise OpenAIError(400, "per-file attributes or chunking in a batch are not supported", param="files")
    file_ids = body.file_ids if body.file_ids is not None else [item.file_id for item in body.files or []]
    size, overlap = (body.chunking_strategy or ChunkingStrategy()).sizes()
    batch = _write(
        services.vector_store_file_batch_create,
        store=store,
        file_ids=file_ids,
        attributes=body.attributes,
        chunk_max_tokens=size,
        chunk_overlap_tokens=overlap,
        actor=key,
        context=_context(request),
    )
    return batch_shape(batch)


@router.get("/vector_stores/{vector_store_id}/file_batches/{batch_id}", response=ANSWERS, summary="A batch's status")
def batch_retrieve(request: HttpRequest, vector_store_id: str, batch_id: str) -> dict[str, Any]:
    key = _key(request, manage=False)
    return batch_shape(_batch(key, _store(key, vector_store_id), batch_id))


@router.post(
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel", response=ANSWERS, summary="Cancel a batch"
)
def batch_cancel(request: HttpRequest, vector_store_id: str, batch_id: str) -> dict[str, Any]:
    key = _key(request, manage=True)
    batch = _batch(key, _store(key, vector_store_id, "change"), batch_id, "change")
    batch = _write(services.vector_store_file_batch_cancel, batch=batch, actor=key, context=_context(request))
    return batch_shape(batch)


@router.get(
    "/vector_stores/{vector_store_id}/file_batches/{batch_id}/files", response=ANSWERS, summary="A batch's files"
)
def batch_file_list(
    request: HttpRequest, vector_store_id: str, batch_id: str, params: Query[StoreFileListParams]
) -> dict[str, Any]:
    key = _key(request, manage=False)
    store = _store(key, vector_store_id)
    return _store_file_page(_store_files(store).filter(batch=_batch(key, store, batch_id)), params)
