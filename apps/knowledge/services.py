"""Every write to knowledge bases: files, vector stores, their files and batches. Each service takes `actor=` and
records its audit event in the same transaction; the ingestion worker is asked after commit.

Entry points (`/v1` views, the REST API, the console, the CLI) parse and shape; they all call these.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import timedelta
from types import EllipsisType
from typing import IO, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_record
from apps.compute.credentials import credentials_decrypt, credentials_encrypt
from apps.keys.models import ApiKey, Scope
from apps.keys.services import IssuedKey, api_key_create, api_key_revoke, api_key_update
from apps.knowledge import storage
from apps.knowledge.embedding import embedding_dimensions_probe, run_in_own_loop
from apps.knowledge.enqueue import ingestion_send, reembedding_send
from apps.knowledge.models import (
    FILENAME_MAX,
    MAX_DIMENSIONS,
    METADATA_KEY_MAX,
    METADATA_KEYS_MAX,
    METADATA_VALUE_MAX,
    NAME_MAX,
    Chunk,
    KnowledgeFile,
    VectorStore,
    VectorStoreFile,
    VectorStoreFileBatch,
    public_id,
)
from apps.orgs.models import Organization
from apps.policies.selectors import knowledge_quota_for
from inferia_runtime.errors import DomainRefusal

CHUNK_TOKENS_MIN, CHUNK_TOKENS_MAX = 100, 4096  # OpenAI's bounds on a static chunking strategy
EXPIRES_AFTER_DAYS_MAX = 365
# Advisory lock classes (pg_advisory_xact_lock(class, organisation)): one organisation's uploads, and its ingestion
# writes, are counted against its quotas one at a time.
QUOTA_LOCK_FILES, QUOTA_LOCK_CHUNKS = 0x4B42, 0x4B43


def knowledge_quota_lock(*, organization_id: int, chunks: bool) -> None:
    """Serialise, until the transaction ends, the organisation's writes that count against one of its knowledge
    quotas (file bytes, or chunks), so that summing what is stored and writing more is one step: two uploads that
    each fit alone cannot both pass when together they do not. Must run inside a transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            [QUOTA_LOCK_CHUNKS if chunks else QUOTA_LOCK_FILES, organization_id & 0x7FFFFFFF],
        )


def knowledge_bytes_stored(organization_id: int) -> int:
    """Bytes of the organisation's uploaded files, as its `knowledge_bytes_max` quota counts them."""
    total = KnowledgeFile.objects.filter(organization_id=organization_id).aggregate(total=Sum("bytes"))["total"]
    return int(total or 0)


def knowledge_chunks_stored(organization_id: int) -> int:
    """Chunks in the organisation's vector stores, as its `knowledge_chunks_max` quota counts them (each store file
    keeps the count of its written chunks, in the transaction that writes them)."""
    total = VectorStoreFile.objects.filter(organization_id=organization_id).aggregate(total=Sum("chunks_done"))
    return int(total["total"] or 0)


# --- Checks shared by the services ---------------------------------------------------------------------------------


def _clean_text(value: str, *, field: str, limit: int) -> str:
    if "\x00" in value:
        raise DomainRefusal(f"{field} must not contain NUL characters")
    if len(value) > limit:
        raise DomainRefusal(f"{field} is longer than {limit} characters")
    return value


def metadata_check(value: Any, *, field: str = "metadata") -> dict[str, Any]:
    """OpenAI's rules for `metadata` and `attributes`: at most 16 keys of 64 characters; values strings of at most
    512 characters, numbers or booleans. Refused, not trimmed, so a client never loses data unknowingly."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DomainRefusal(f"{field} must be an object")
    if len(value) > METADATA_KEYS_MAX:
        raise DomainRefusal(f"{field} has more than {METADATA_KEYS_MAX} keys")
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > METADATA_KEY_MAX or "\x00" in key:
            raise DomainRefusal(f"{field} keys must be strings of 1 to {METADATA_KEY_MAX} characters")
        if isinstance(item, str):
            _clean_text(item, field=f"{field}.{key}", limit=METADATA_VALUE_MAX)
        elif not isinstance(item, bool | int | float) or (isinstance(item, float) and item != item):
            raise DomainRefusal(f"{field}.{key} must be a string, a number or a boolean")
    return dict(value)


def chunking_check(max_tokens: int | None, overlap_tokens: int | None) -> tuple[int, int]:
    """A static chunking strategy: 100 to 4,096 tokens a chunk, overlapping by at most half of that."""
    size = 800 if max_tokens is None else max_tokens
    overlap = (400 if max_tokens is None else size // 2) if overlap_tokens is None else overlap_tokens
    if not CHUNK_TOKENS_MIN <= size <= CHUNK_TOKENS_MAX:
        raise DomainRefusal(f"max_chunk_size_tokens must be between {CHUNK_TOKENS_MIN} and {CHUNK_TOKENS_MAX}")
    if not 0 <= overlap <= size // 2:
        raise DomainRefusal("chunk_overlap_tokens must be between 0 and half of max_chunk_size_tokens")
    return size, overlap


def _expires_at(days: int | None, anchor: Any) -> Any:
    if days is None:
        return None
    if not 1 <= days <= EXPIRES_AFTER_DAYS_MAX:
        raise DomainRefusal(f"expires_after.days must be between 1 and {EXPIRES_AFTER_DAYS_MAX}")
    return anchor + timedelta(days=days)


def _files_of(organization: Organization, file_ids: Sequence[str]) -> list[KnowledgeFile]:
    """The organisation's files with these public ids, in order; a refusal naming the first that is not one."""
    found = {f.public_id: f for f in KnowledgeFile.objects.filter(organization=organization, public_id__in=file_ids)}
    for file_id in file_ids:
        if file_id not in found:
            raise DomainRefusal(f"No file found with id '{file_id}'.")
    return [found[file_id] for file_id in dict.fromkeys(file_ids)]


# --- Files ---------------------------------------------------------------------------------------------------------


def knowledge_file_create(
    *,
    organization: Organization,
    handle: IO[bytes],
    filename: str,
    purpose: str,
    content_type: str = "",
    actor: Actor,
    context: AuditContext | None = None,
) -> KnowledgeFile:
    """Store an uploaded file's bytes (streamed) and record it. The bytes are written before the row, and removed
    again when the row cannot be, so that a failure leaves neither half. Refused when the file would take the
    organisation's stored bytes over its `knowledge_bytes_max` quota (the tightest of its policy's and, for a key,
    the key's team's and the key's own)."""
    filename = _clean_text(filename.replace("\\", "/").rsplit("/", 1)[-1], field="filename", limit=FILENAME_MAX)
    if not filename:
        raise DomainRefusal("the file needs a name")
    if purpose not in KnowledgeFile.Purpose.values:
        raise DomainRefusal(f"purpose must be one of: {', '.join(KnowledgeFile.Purpose.values)}")
    record = KnowledgeFile(
        organization=organization, filename=filename, purpose=purpose, content_type=content_type[:100], bytes=0
    )
    stored = storage.storage_save(
        name=storage.storage_name_for(organization_id=organization.pk, public_id=record.public_id), handle=handle
    )
    try:
        if stored.size > settings.INFERIA_KNOWLEDGE_FILE_MAX_BYTES:
            raise DomainRefusal(f"the file is larger than {settings.INFERIA_KNOWLEDGE_FILE_MAX_BYTES} bytes")
        record.bytes, record.sha256, record.storage_name = stored.size, stored.sha256, stored.name
        _set_creator(record, actor)
        quota = knowledge_quota_for(
            organization_id=organization.pk, key_id=actor.pk if isinstance(actor, ApiKey) else None
        )
        with transaction.atomic():
            if quota.bytes_max is not None:
                knowledge_quota_lock(organization_id=organization.pk, chunks=False)
                used = knowledge_bytes_stored(organization.pk)
                if used + stored.size > quota.bytes_max:
                    raise DomainRefusal(
                        f"the organisation's knowledge storage quota (knowledge_bytes_max, {quota.bytes_max} bytes) "
                        f"does not leave room for this file: {used} bytes are stored and the file has {stored.size}"
                    )
            record.save(force_insert=True)
            audit_record(
                action="knowledge.file.create",
                actor=actor,
                target=record,
                changes={"filename": filename, "purpose": purpose, "bytes": stored.size},
                context=context,
            )
    except BaseException:
        storage.storage_delete(stored.name)
        raise
    return record


def knowledge_file_delete(*, file: KnowledgeFile, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a file, its attachments to stores and their chunks; the bytes go after commit."""
    name = file.storage_name
    with transaction.atomic():
        stores = list(
            VectorStore.objects.filter(store_files__file=file).select_for_update().values_list("pk", flat=True)
        )
        audit_record(
            action="knowledge.file.delete",
            actor=actor,
            target=file,
            changes={"filename": file.filename, "vector_stores": len(stores)},
            context=context,
        )
        file.delete()
        for store_id in stores:
            vector_store_usage_refresh(store_id)
        transaction.on_commit(lambda: storage.storage_delete(name))


def _set_creator(record: Any, actor: Actor) -> None:
    if actor is None:
        return
    if isinstance(actor, ApiKey):
        record.created_by_key = actor
        owner = getattr(actor, "owner", None)
        if owner is not None and hasattr(record, "created_by"):
            record.created_by = owner
    else:
        record.created_by = actor


# --- Vector stores -------------------------------------------------------------------------------------------------


def vector_store_create(
    *,
    organization: Organization,
    embedding_model: str,
    dimensions: int,
    actor: Actor,
    name: str = "",
    description: str = "",
    metadata: dict[str, Any] | None = None,
    expires_after_days: int | None = None,
    chunk_max_tokens: int | None = None,
    chunk_overlap_tokens: int | None = None,
    file_ids: Sequence[str] = (),
    ingest_key: IssuedKey | None = None,
    store_id: str | None = None,
    context: AuditContext | None = None,
) -> VectorStore:
    """Create a store that embeds with `embedding_model` (vectors of `dimensions`), attaching `file_ids` at once.

    `dimensions` is what the model answers with: entry points call `vector_store_create_probed`, which asks the
    model with the store's own key (`ingest_key`, issued for the store's id `store_id`) first."""
    if not 1 <= dimensions <= MAX_DIMENSIONS:
        raise DomainRefusal(f"the embedding model's vectors have {dimensions} dimensions; at most {MAX_DIMENSIONS}")
    size, overlap = chunking_check(chunk_max_tokens, chunk_overlap_tokens)
    now = timezone.now()
    store = VectorStore(
        organization=organization,
        name=_clean_text(name, field="name", limit=NAME_MAX),
        description=_clean_text(description, field="description", limit=512),
        embedding_model=_clean_text(embedding_model, field="embedding_model", limit=200),
        dimensions=dimensions,
        chunk_max_tokens=size,
        chunk_overlap_tokens=overlap,
        metadata=metadata_check(metadata),
        expires_after_days=expires_after_days,
        expires_at=_expires_at(expires_after_days, now),
        last_active_at=now,
    )
    if store_id is not None:
        store.public_id = store_id
    if ingest_key is not None:
        store.ingest_key, store.ingest_key_secret = ingest_key.key, credentials_encrypt({"secret": ingest_key.secret})
    _set_creator(store, actor)
    with transaction.atomic():
        files = _files_of(organization, file_ids)
        store.save(force_insert=True)
        audit_record(
            action="knowledge.store.create",
            actor=actor,
            target=store,
            changes={"name": store.name, "embedding_model": embedding_model, "files": len(files)},
            context=context,
        )
        for file in files:
            _store_file_add(store=store, file=file, attributes={}, size=size, overlap=overlap)
    return store


def store_key_issue(*, organization: Organization, store_id: str, model: str, reembed_model: str = "") -> IssuedKey:
    """A store's own inference key, limited to its embedding model (and, while the store changes model, the new
    one too): ingestion's, re-embedding's and searches' embedding requests are metered and limited on it, as any
    application's."""
    return api_key_create(
        organization=organization,
        name=f"Knowledge store {store_id}",
        scopes=[Scope.INFERENCE],
        allowed_models=[model, reembed_model] if reembed_model else [model],
        actor=None,
        purpose=ApiKey.Purpose.KNOWLEDGE,
    )


def vector_store_create_probed(
    *, organization: Organization, embedding_model: str, actor: Actor, **fields: Any
) -> VectorStore:
    """`vector_store_create` with the dimensions asked of the embedding model itself, through the gateway, with the
    store's own key (committed first: the gateway reads keys from the database). A model the organisation cannot
    use is an `EmbeddingError` with the gateway's answer, and leaves no store and no usable key behind."""
    embedding_model = _clean_text(embedding_model, field="embedding_model", limit=200)
    if not embedding_model:
        raise DomainRefusal("embedding_model is required")
    store_id = public_id("vs_")
    issued = store_key_issue(organization=organization, store_id=store_id, model=embedding_model)
    try:
        dimensions = run_in_own_loop(
            functools.partial(embedding_dimensions_probe, secret=issued.secret, model=embedding_model)
        )
        return vector_store_create(
            organization=organization,
            embedding_model=embedding_model,
            dimensions=dimensions,
            actor=actor,
            ingest_key=issued,
            store_id=store_id,
            **fields,
        )
    except BaseException:
        api_key_revoke(key=issued.key, actor=None, reason=f"vector store {store_id} was not created")
        raise


def vector_store_update(
    *,
    store: VectorStore,
    actor: Actor,
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
    expires_after_days: int | EllipsisType | None = ...,
    context: AuditContext | None = None,
) -> VectorStore:
    """Rename a store, replace its metadata, or change (None: remove) its expiry."""
    changes: dict[str, Any] = {}
    if name is not None:
        store.name = _clean_text(name, field="name", limit=NAME_MAX)
        changes["name"] = store.name
    if metadata is not None:
        store.metadata = metadata_check(metadata)
        changes["metadata"] = sorted(store.metadata)
    if expires_after_days is not ...:
        days = expires_after_days if isinstance(expires_after_days, int) else None
        store.expires_after_days = days
        store.expires_at = _expires_at(days, store.last_active_at)
        changes["expires_after_days"] = days
    fields = {"name": ["name"], "metadata": ["metadata"], "expires_after_days": ["expires_after_days", "expires_at"]}
    with transaction.atomic():
        # Only what changed: a full save of a row read earlier would undo a re-embedding's switch made meanwhile.
        store.save(update_fields=[field for change in changes for field in fields[change]])
        audit_record(action="knowledge.store.update", actor=actor, target=store, changes=changes, context=context)
    return store


def store_key_models_set(*, store: VectorStore, models: list[str], actor: Actor = None) -> str | None:
    """Let the store's own key call exactly `models` and answer its secret; None when the store has no usable key
    (ingestion issues one on first use, with the store's models)."""
    key = ApiKey.objects.filter(pk=store.ingest_key_id).first() if store.ingest_key_id else None
    if key is None or not key.is_usable() or not store.ingest_key_secret:
        return None
    if key.allowed_models != models:
        api_key_update(key=key, changes={"allowed_models": models}, actor=actor)
    return str(credentials_decrypt(store.ingest_key_secret).reveal()["secret"])


def _store_key_for_change(*, store: VectorStore, new_model: str, actor: Actor) -> str:
    """The store's key, now allowed its current model (searches keep using it) and the new one (the probe and the
    re-embedding use it): one key, so that all of the store's embedding stays metered on one key."""
    with transaction.atomic():
        secret = store_key_models_set(store=store, models=[store.embedding_model, new_model], actor=actor)
        if secret is None:
            issued = store_key_issue(
                organization=store.organization,
                store_id=store.public_id,
                model=store.embedding_model,
                reembed_model=new_model,
            )
            store.ingest_key = issued.key
            store.ingest_key_secret = credentials_encrypt({"secret": issued.secret})
            store.save(update_fields=["ingest_key", "ingest_key_secret"])
            secret = issued.secret
    return secret


def vector_store_embedding_change(
    *, store: VectorStore, embedding_model: str, actor: Actor, context: AuditContext | None = None
) -> VectorStore:
    """Change the model that embeds a store: ask the new model its vector size (through the gateway, with the
    store's own key, now allowed both models), then re-embed every chunk's text in the background into the next
    generation while searches keep reading the current one with the old model (apps.knowledge.reembedding).

    Naming the current model (or the one already being switched to) changes nothing. A second change while one is
    re-embedding is refused: the first completes or fails (the store then says why) before another may start, so
    that the store never has two half-built generations. Commits its own steps (the gateway reads the key from the
    database): entry points call it outside any transaction."""
    model = _clean_text(embedding_model, field="embedding_model", limit=200).strip()
    if not model:
        raise DomainRefusal("embedding_model is required")
    store.refresh_from_db()
    if model in (store.embedding_model, store.reembed_model):
        return store
    if store.reembed_model:
        raise DomainRefusal(
            f"the store is already being re-embedded with {store.reembed_model}; change its model again once that "
            "has completed or failed"
        )
    old = store.embedding_model
    secret = _store_key_for_change(store=store, new_model=model, actor=actor)
    try:
        dimensions = run_in_own_loop(functools.partial(embedding_dimensions_probe, secret=secret, model=model))
        if not 1 <= dimensions <= MAX_DIMENSIONS:
            raise DomainRefusal(f"the embedding model's vectors have {dimensions} dimensions; at most {MAX_DIMENSIONS}")
        with transaction.atomic():
            locked = VectorStore.objects.select_for_update().get(pk=store.pk)
            if locked.reembed_model or locked.embedding_model != old:
                raise DomainRefusal("the store's embedding model changed meanwhile; try again")
            # Leftovers of an earlier change that failed, or whose clean-up was cut short: the next generation
            # starts empty, so that no vector of another model is taken for one of this one.
            Chunk.objects.filter(vector_store=locked).exclude(generation=locked.generation).delete()
            locked.reembed_model, locked.reembed_dimensions = model, dimensions
            locked.reembed_error, locked.reembed_claimed_until = "", None
            locked.save(update_fields=["reembed_model", "reembed_dimensions", "reembed_error", "reembed_claimed_until"])
            audit_record(
                action="knowledge.store.embedding_change",
                actor=actor,
                target=locked,
                changes={"embedding_model": [old, model], "dimensions": [locked.dimensions, dimensions]},
                context=context,
            )
            transaction.on_commit(lambda: reembedding_send(locked.pk))
    except BaseException:
        store_key_models_set(store=store, models=[old], actor=actor)
        raise
    return locked


def vector_store_delete(*, store: VectorStore, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a store with its chunks and vectors (the files stay: they may be in other stores), and revoke the
    store's own ingestion key."""
    with transaction.atomic():
        if store.ingest_key is not None and store.ingest_key.revoked_at is None:
            api_key_revoke(key=store.ingest_key, actor=actor, reason=f"vector store {store.public_id} deleted")
        audit_record(
            action="knowledge.store.delete",
            actor=actor,
            target=store,
            changes={"name": store.name, "usage_bytes": store.usage_bytes},
            context=context,
        )
        store.delete()


def vector_store_usage_refresh(store_id: int) -> None:
    """Recount a store's stored bytes from its files' (after a file leaves it or finishes)."""
    total = VectorStoreFile.objects.filter(vector_store_id=store_id).aggregate(total=Sum("usage_bytes"))["total"]
    VectorStore.objects.filter(pk=store_id).update(usage_bytes=total or 0)


# --- A store's files and batches ----------------------------------------------------------------------------------


def _store_file_add(
    *, store: VectorStore, file: KnowledgeFile, attributes: dict[str, Any], size: int, overlap: int, batch: Any = None
) -> VectorStoreFile:
    # Read under the store's lock: a re-embedding's switch to the next generation (which takes the same lock) then
    # either comes first, and the file is ingested into the new generation, or waits for this file to complete.
    generation = VectorStore.objects.select_for_update().values_list("generation", flat=True).get(pk=store.pk)
    store_file, created = VectorStoreFile.objects.get_or_create(
        vector_store=store,
        file=file,
        defaults={
            "organization_id": store.organization_id,
            "attributes": attributes,
            "chunk_max_tokens": size,
            "chunk_overlap_tokens": overlap,
            "generation": generation,
            "batch": batch,
        },
    )
    if created:
        transaction.on_commit(lambda: ingestion_send(store_file.pk))
    return store_file


def _file_chunking(store: VectorStore, max_tokens: int | None, overlap_tokens: int | None) -> tuple[int, int]:
    """A file's own chunking where it names one, else its store's."""
    if max_tokens is None and overlap_tokens is None:
        return store.chunk_max_tokens, store.chunk_overlap_tokens
    return chunking_check(max_tokens, overlap_tokens)


def vector_store_file_attach(
    *,
    store: VectorStore,
    file_id: str,
    actor: Actor,
    attributes: dict[str, Any] | None = None,
    chunk_max_tokens: int | None = None,
    chunk_overlap_tokens: int | None = None,
    context: AuditContext | None = None,
) -> VectorStoreFile:
    """Attach one of the organisation's files to a store; ingestion starts after commit. Attaching a file twice
    answers the attachment that exists."""
    attributes = metadata_check(attributes, field="attributes")
    size, overlap = _file_chunking(store, chunk_max_tokens, chunk_overlap_tokens)
    with transaction.atomic():
        (file,) = _files_of(store.organization, [file_id])
        store_file = _store_file_add(store=store, file=file, attributes=attributes, size=size, overlap=overlap)
        audit_record(
            action="knowledge.store_file.attach",
            actor=actor,
            target=store,
            changes={"file": file.public_id, "filename": file.filename},
            context=context,
        )
    return store_file


def vector_store_file_update(
    *, store_file: VectorStoreFile, attributes: dict[str, Any], actor: Actor, context: AuditContext | None = None
) -> VectorStoreFile:
    """Replace a store file's attributes, on its chunks too (searches filter on the chunks' copy)."""
    store_file.attributes = metadata_check(attributes, field="attributes")
    with transaction.atomic():
        store_file.save(update_fields=["attributes", "updated_at"])
        Chunk.objects.filter(store_file=store_file).update(attributes=store_file.attributes)
        audit_record(
            action="knowledge.store_file.update",
            actor=actor,
            target=store_file.vector_store,
            changes={"file": store_file.file.public_id, "attributes": sorted(store_file.attributes)},
            context=context,
        )
    return store_file


def vector_store_file_detach(*, store_file: VectorStoreFile, actor: Actor, context: AuditContext | None = None) -> None:
    """Remove a file from a store with its chunks and vectors (the file itself stays)."""
    store_id = store_file.vector_store_id
    with transaction.atomic():
        audit_record(
            action="knowledge.store_file.detach",
            actor=actor,
            target=store_file.vector_store,
            changes={"file": store_file.file.public_id, "filename": store_file.file.filename},
            context=context,
        )
        store_file.delete()
        vector_store_usage_refresh(store_id)


def vector_store_file_batch_create(
    *,
    store: VectorStore,
    file_ids: Sequence[str],
    actor: Actor,
    attributes: dict[str, Any] | None = None,
    chunk_max_tokens: int | None = None,
    chunk_overlap_tokens: int | None = None,
    context: AuditContext | None = None,
) -> VectorStoreFileBatch:
    """Attach several files at once (at most 500, as OpenAI allows)."""
    if not file_ids:
        raise DomainRefusal("file_ids must name at least one file")
    if len(file_ids) > 500:
        raise DomainRefusal("file_ids names more than 500 files")
    attributes = metadata_check(attributes, field="attributes")
    size, overlap = _file_chunking(store, chunk_max_tokens, chunk_overlap_tokens)
    with transaction.atomic():
        files = _files_of(store.organization, file_ids)
        batch = VectorStoreFileBatch.objects.create(organization_id=store.organization_id, vector_store=store)
        for file in files:
            _store_file_add(store=store, file=file, attributes=attributes, size=size, overlap=overlap, batch=batch)
        audit_record(
            action="knowledge.store_file.batch",
            actor=actor,
            target=store,
            changes={"batch": batch.public_id, "files": len(files)},
            context=context,
        )
    return batch


def vector_store_file_batch_cancel(
    *, batch: VectorStoreFileBatch, actor: Actor, context: AuditContext | None = None
) -> VectorStoreFileBatch:
    """Cancel a batch: its files still in progress stop (the worker checks before each step) and say cancelled."""
    with transaction.atomic():
        batch.cancelled_at = timezone.now()
        batch.save(update_fields=["cancelled_at"])
        stopped = VectorStoreFile.objects.filter(batch=batch, status=VectorStoreFile.Status.IN_PROGRESS).update(
            status=VectorStoreFile.Status.CANCELLED, claimed_until=None
        )
        audit_record(
            action="knowledge.store_file.batch_cancel",
            actor=actor,
            target=batch.vector_store,
            changes={"batch": batch.public_id, "cancelled": stopped},
            context=context,
        )
    return batch


def vector_store_file_upload(
    *,
    store: VectorStore,
    handle: IO[bytes],
    filename: str,
    content_type: str = "",
    actor: Actor,
    context: AuditContext | None = None,
) -> VectorStoreFile:
    """Upload a file straight into a store (the console's drop zone): `knowledge_file_create`, then
    `vector_store_file_attach`, in one transaction. An attachment that fails takes the file and its bytes with it,
    so that no file is left over that the person never saw attached."""
    with transaction.atomic():
        file = knowledge_file_create(
            organization=store.organization,
            handle=handle,
            filename=filename,
            purpose=KnowledgeFile.Purpose.ASSISTANTS,
            content_type=content_type,
            actor=actor,
            context=context,
        )
        try:
            return vector_store_file_attach(store=store, file_id=file.public_id, actor=actor, context=context)
        except BaseException:
            storage.storage_delete(file.storage_name)
            raise
