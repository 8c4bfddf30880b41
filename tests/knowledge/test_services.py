"""The knowledge write services: files stored and recorded together or not at all, stores that take only their own
organisation's files, attachments once, and an audit event for every change."""

from __future__ import annotations

import io

import pytest
from django.test import override_settings

from apps.audit.models import AuditEvent
from apps.knowledge import services
from apps.knowledge.models import Chunk, KnowledgeFile, VectorStoreFile
from apps.knowledge.storage import knowledge_storage
from inferia_runtime.errors import DomainRefusal

DIMENSIONS = 8


def _upload(org, owner, content=b"GPUs have memory bandwidth.", name="notes.txt"):
    return services.knowledge_file_create(
        organization=org, handle=io.BytesIO(content), filename=name, purpose="assistants", actor=owner
    )


def _store(org, owner, **fields):
    return services.vector_store_create(
        organization=org, embedding_model="kb-embed", dimensions=DIMENSIONS, actor=owner, **fields
    )


def test_an_upload_is_stored_under_our_name_with_its_size_and_hash(org, owner):
    file = _upload(org, owner, name="../../etc/passwd")
    assert file.filename == "passwd"
    assert file.bytes == len(b"GPUs have memory bandwidth.")
    assert file.storage_name.startswith(f"files/{org.pk}/file-")
    with knowledge_storage().open(file.storage_name, "rb") as handle:
        assert handle.read() == b"GPUs have memory bandwidth."
    assert AuditEvent.objects.filter(action="knowledge.file.create", target_id=str(file.pk)).exists()


def test_a_file_over_the_limit_leaves_neither_bytes_nor_row(org, owner):
    with override_settings(INFERIA_KNOWLEDGE_FILE_MAX_BYTES=10), pytest.raises(DomainRefusal, match="larger than"):
        _upload(org, owner, content=b"x" * 11)
    assert not KnowledgeFile.objects.exists()
    assert knowledge_storage().listdir(f"files/{org.pk}")[1] == []


def test_a_filename_with_nul_or_an_unknown_purpose_is_refused(org, owner):
    with pytest.raises(DomainRefusal, match="NUL"):
        _upload(org, owner, name="a\x00b.txt")
    with pytest.raises(DomainRefusal, match="purpose"):
        services.knowledge_file_create(
            organization=org, handle=io.BytesIO(b"x"), filename="a.txt", purpose="anything", actor=owner
        )


def test_a_store_takes_its_own_organisations_files_only(org, other_org, owner):
    foreign = _upload(other_org, None)
    with pytest.raises(DomainRefusal, match=foreign.public_id):
        _store(org, owner, file_ids=[foreign.public_id])
    store = _store(org, owner)
    with pytest.raises(DomainRefusal, match=foreign.public_id):
        services.vector_store_file_attach(store=store, file_id=foreign.public_id, actor=owner)
    assert not VectorStoreFile.objects.exists()


def test_attaching_a_file_twice_answers_the_same_attachment(org, owner):
    file = _upload(org, owner)
    store = _store(org, owner, file_ids=[file.public_id])
    again = services.vector_store_file_attach(store=store, file_id=file.public_id, actor=owner)
    assert VectorStoreFile.objects.get() == again
    assert again.status == VectorStoreFile.Status.IN_PROGRESS
    assert (again.chunk_max_tokens, again.chunk_overlap_tokens) == (800, 400)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({f"k{i}": "v" for i in range(17)}, "more than 16"),
        ({"k": "v" * 513}, "longer than 512"),
        ({"k": ["a"]}, "string, a number or a boolean"),
        ({"": "v"}, "keys must be"),
        ("text", "must be an object"),
    ],
)
def test_metadata_follows_openais_limits(org, owner, metadata, message):
    with pytest.raises(DomainRefusal, match=message):
        _store(org, owner, metadata=metadata)


def test_chunking_is_bounded_as_openai_bounds_it(org, owner):
    with pytest.raises(DomainRefusal, match="between 100 and 4096"):
        _store(org, owner, chunk_max_tokens=50)
    with pytest.raises(DomainRefusal, match="half"):
        _store(org, owner, chunk_max_tokens=200, chunk_overlap_tokens=150)
    assert (_store(org, owner, chunk_max_tokens=200).chunk_overlap_tokens) == 100


def _chunk(store_file, index):
    return Chunk.objects.create(
        organization_id=store_file.organization_id,
        vector_store=store_file.vector_store,
        store_file=store_file,
        generation=1,
        index=index,
        text=f"chunk {index}",
        tokens=2,
        char_start=0,
        char_end=7,
        dimensions=DIMENSIONS,
        embedding=[0.1 * (index + 1)] * DIMENSIONS,
    )


def test_detaching_a_file_removes_its_chunks_and_keeps_the_file(org, owner):
    file = _upload(org, owner)
    store = _store(org, owner, file_ids=[file.public_id])
    store_file = VectorStoreFile.objects.get()
    _chunk(store_file, 0)
    _chunk(store_file, 1)
    services.vector_store_file_detach(store_file=store_file, actor=owner)
    assert not Chunk.objects.exists()
    assert KnowledgeFile.objects.filter(pk=file.pk).exists()
    assert AuditEvent.objects.filter(action="knowledge.store_file.detach", target_id=str(store.pk)).exists()


def test_deleting_a_file_removes_its_chunks_everywhere_and_its_bytes_after_commit(
    org, owner, django_capture_on_commit_callbacks
):
    file = _upload(org, owner)
    first = _store(org, owner, file_ids=[file.public_id])
    _store(org, owner, file_ids=[file.public_id])
    for store_file in VectorStoreFile.objects.all():
        _chunk(store_file, 0)
    with django_capture_on_commit_callbacks(execute=True):
        services.knowledge_file_delete(file=file, actor=owner)
    assert not Chunk.objects.exists()
    assert not knowledge_storage().exists(file.storage_name)
    first.refresh_from_db()
    assert first.usage_bytes == 0


def test_a_chunk_is_written_once_per_file_generation_and_index(org, owner):
    from django.db import IntegrityError, transaction

    file = _upload(org, owner)
    _store(org, owner, file_ids=[file.public_id])
    store_file = VectorStoreFile.objects.get()
    _chunk(store_file, 0)
    with pytest.raises(IntegrityError), transaction.atomic():
        _chunk(store_file, 0)


def test_cancelling_a_batch_stops_its_files_in_progress(org, owner):
    files = [_upload(org, owner, name=f"{i}.txt") for i in range(3)]
    store = _store(org, owner)
    batch = services.vector_store_file_batch_create(
        store=store, file_ids=[f.public_id for f in files], actor=owner, attributes={"team": "docs"}
    )
    assert batch.store_files.count() == 3
    assert {sf.attributes["team"] for sf in batch.store_files.all()} == {"docs"}
    services.vector_store_file_batch_cancel(batch=batch, actor=owner)
    assert set(batch.store_files.values_list("status", flat=True)) == {"cancelled"}


def test_the_tenancy_door_hides_another_organisations_stores_and_files(org, other_org, owner):
    from apps.knowledge.models import VectorStore

    _upload(other_org, None)
    _store(other_org, None)
    mine = _store(org, owner)
    assert list(VectorStore.objects.restrict(owner, "view")) == [mine]
    assert not KnowledgeFile.objects.restrict(owner, "view").exists()


def test_a_stores_own_key_is_issued_with_the_knowledge_purpose(org):
    from apps.keys.models import ApiKey

    issued = services.store_key_issue(organization=org, store_id="vs_own", model="kb-embed")
    assert issued.key.purpose == ApiKey.Purpose.KNOWLEDGE
    assert issued.key.name == "Knowledge store vs_own"
    assert issued.key.allowed_models == ["kb-embed"]
