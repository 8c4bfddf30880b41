"""The official `openai` client's files and vector-store calls, unchanged, against a real web process and a real
Celery worker: upload, create a store, attach and poll, search, list, update and delete, plus the errors it raises
for another organisation's ids, a missing scope and a bad request."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from apps.knowledge.models import Chunk, KnowledgeFile, VectorStore
from tests.factories import OrganizationFactory, api_key_issue, deployment_serving
from tests.kit.processes import TestProcess, child_database_url, inferia_start, web_start
from tests.kit.waiting import eventually
from tests.knowledge.conftest import EMBED_MODEL

HANDBOOK = "\n\n".join(
    [
        "The GPU nodes have 4.8 TB/s of HBM3e memory bandwidth and 141 GB of memory each.",
        "Simmer the tomato sauce for twenty minutes and season it with fresh basil.",
        "Income tax returns are due in April, and deductions lower the taxable amount.",
    ]
    * 10
)


UPLOAD_MAX = 1024 * 1024


@pytest.fixture(scope="module")
def shared_files(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("knowledge-files"))


@pytest.fixture(scope="module")
def plane(django_db_setup, shared_files) -> Iterator[TestProcess]:
    """A web process and a worker on the test database, sharing one knowledge folder."""
    env = {
        "DATABASE_URL": child_database_url(),
        "INFERIA_UPSTREAM_ALLOW_PRIVATE": "1",
        "INFERIA_KNOWLEDGE_DIR": shared_files,
        "INFERIA_KNOWLEDGE_EMBEDDING_MODEL": EMBED_MODEL,
        "INFERIA_KNOWLEDGE_FILE_MAX_BYTES": str(UPLOAD_MAX),
    }
    web = web_start(env["DATABASE_URL"], extra_env=env)
    worker = inferia_start(["start", "worker"], env={**os.environ, **env})
    eventually(lambda: any(" ready." in line for line in worker.lines), timeout=120, what="the worker")
    yield web
    worker.stop()
    web.stop()


@pytest.fixture
def knowledge_files(shared_files, settings):  # the processes' folder, not a per-test one
    from tests.knowledge.conftest import _forget_storage

    settings.STORAGES = {
        **settings.STORAGES,
        "knowledge": {"BACKEND": settings.STORAGES["knowledge"]["BACKEND"], "OPTIONS": {"location": shared_files}},
    }
    _forget_storage()
    yield shared_files
    _forget_storage()


def _client(plane: TestProcess, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{plane.url}/v1", api_key=secret, max_retries=0)


@pytest.fixture
def manager(organization, plane) -> openai.OpenAI:
    issued = api_key_issue(organization=organization, scopes=("inference", "manage"))
    with _client(plane, issued.secret) as client:
        yield client


def _upload(client: openai.OpenAI, text: str = HANDBOOK, name: str = "handbook.md") -> Any:
    return client.files.create(file=(name, io.BytesIO(text.encode()), "text/markdown"), purpose="assistants")


def test_upload_store_poll_search_with_the_official_client(manager, organization):
    uploaded = _upload(manager)
    assert uploaded.id.startswith("file-")
    assert uploaded.bytes == len(HANDBOOK.encode())
    assert manager.files.retrieve(uploaded.id).filename == "handbook.md"
    assert manager.files.content(uploaded.id).read() == HANDBOOK.encode()
    assert uploaded.id in [file.id for file in manager.files.list()]

    store = manager.vector_stores.create(
        name="Handbook",
        metadata={"team": "infra"},
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}},
    )
    assert store.id.startswith("vs_")
    assert store.name == "Handbook"
    assert store.metadata == {"team": "infra"}
    attached = manager.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=uploaded.id, attributes={"lang": "en"}, poll_interval_ms=200
    )
    assert attached.status == "completed", attached.last_error
    assert attached.attributes == {"lang": "en"}

    results = manager.vector_stores.search(store.id, query="How much GPU memory bandwidth?", max_num_results=3)
    hits = list(results)
    assert 1 <= len(hits) <= 3
    assert "bandwidth" in hits[0].content[0].text
    assert hits[0].file_id == uploaded.id
    assert hits[0].filename == "handbook.md"
    assert hits[0].score >= hits[-1].score > 0
    filtered = list(
        manager.vector_stores.search(store.id, query="tomato", filters={"type": "eq", "key": "lang", "value": "fr"})
    )
    assert filtered == []

    retrieved = manager.vector_stores.retrieve(store.id)
    assert retrieved.file_counts.completed == 1
    assert retrieved.status == "completed"
    assert retrieved.usage_bytes > 0
    content = list(manager.vector_stores.files.content(file_id=uploaded.id, vector_store_id=store.id))
    assert "".join(part.text for part in content).count("tomato") >= 10
    assert [f.id for f in manager.vector_stores.files.list(vector_store_id=store.id)] == [uploaded.id]

    updated = manager.vector_stores.update(store.id, name="Ops handbook")
    assert updated.name == "Ops handbook"
    assert manager.vector_stores.files.delete(file_id=uploaded.id, vector_store_id=store.id).deleted
    assert not Chunk.objects.filter(vector_store__public_id=store.id).exists()
    assert manager.vector_stores.delete(store.id).deleted
    assert manager.files.delete(uploaded.id).deleted
    assert not KnowledgeFile.objects.filter(organization=organization).exists()


def test_a_batch_is_polled_to_completion(manager):
    files = [_upload(manager, f"Document {n}. The answer is {n * 7}.", f"doc{n}.txt") for n in range(3)]
    store = manager.vector_stores.create(name="Batch")
    batch = manager.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[file.id for file in files], poll_interval_ms=200
    )
    assert batch.status == "completed"
    assert batch.file_counts.completed == 3
    listed = manager.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=store.id)
    assert sorted(file.id for file in listed) == sorted(file.id for file in files)


def test_lists_page_with_cursors(manager):
    ids = [_upload(manager, f"page {n}", f"p{n}.txt").id for n in range(5)]
    first = manager.files.list(limit=2)
    assert [file.id for file in first.data] == ids[::-1][:2]
    assert first.has_more
    every = [file.id for file in manager.files.list(limit=2)]  # the client follows `after`
    assert every == ids[::-1]
    ascending = manager.files.list(limit=10, order="asc")
    assert [file.id for file in ascending.data] == ids


def test_an_inference_key_searches_but_may_not_write(manager, organization, plane):
    store = manager.vector_stores.create(name="Read only")
    reader = api_key_issue(organization=organization, scopes=("inference",))
    with _client(plane, reader.secret) as client:
        assert client.vector_stores.retrieve(store.id).id == store.id
        assert list(client.vector_stores.search(store.id, query="anything")) == []
        with pytest.raises(openai.PermissionDeniedError, match="manage"):
            _upload(client)
        with pytest.raises(openai.PermissionDeniedError, match="manage"):
            client.vector_stores.delete(store.id)
    assert VectorStore.objects.filter(public_id=store.id).exists()


def test_another_organisations_ids_read_as_unknown(manager, plane, engine):
    store = manager.vector_stores.create(name="Acme only")
    uploaded = _upload(manager)
    globex = OrganizationFactory(name="Globex", slug="globex")
    deployment_serving(globex, EMBED_MODEL, [engine.url])
    outsider = api_key_issue(organization=globex, scopes=("inference", "manage"))
    with _client(plane, outsider.secret) as client:
        for call in (
            lambda: client.vector_stores.retrieve(store.id),
            lambda: client.vector_stores.search(store.id, query="GPU"),
            lambda: client.files.retrieve(uploaded.id),
            lambda: client.files.content(uploaded.id),
            lambda: client.files.delete(uploaded.id),
            lambda: client.vector_stores.delete(store.id),
            lambda: client.vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        own = client.vector_stores.create(name="Globex")
        with pytest.raises(openai.BadRequestError, match=uploaded.id):
            client.vector_stores.files.create(vector_store_id=own.id, file_id=uploaded.id)
        assert [s.id for s in client.vector_stores.list()] == [own.id]
        assert list(client.files.list()) == []


def test_a_key_limited_to_some_stores_sees_only_those(manager, organization, plane):
    allowed = manager.vector_stores.create(name="Allowed")
    hidden = manager.vector_stores.create(name="Hidden")
    limited = api_key_issue(organization=organization, scopes=("inference",), allowed_vector_stores=[allowed.id])
    with _client(plane, limited.secret) as client:
        assert [s.id for s in client.vector_stores.list()] == [allowed.id]
        with pytest.raises(openai.NotFoundError):
            client.vector_stores.search(hidden.id, query="x")
        with pytest.raises(openai.NotFoundError):
            client.vector_stores.retrieve(hidden.id)


def test_bad_requests_get_openai_errors(manager, plane):
    with pytest.raises(openai.BadRequestError, match="purpose"):
        manager.files.create(file=("a.txt", io.BytesIO(b"x")), purpose="nonsense")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        manager.vector_stores.create(name="x", extra_body={"embedding_model": "no-such-model"})
    store = manager.vector_stores.create(name="Errors")
    with pytest.raises(openai.BadRequestError, match="max_num_results"):
        manager.vector_stores.search(store.id, query="x", max_num_results=500)
    with pytest.raises(openai.BadRequestError, match="filter"):
        manager.vector_stores.search(store.id, query="x", filters={"type": "nope"})  # type: ignore[arg-type]
    with pytest.raises(openai.AuthenticationError), _client(plane, "sk-inf-not-a-key") as client:
        client.vector_stores.list()
    assert not VectorStore.objects.filter(name="x").exists()


def test_an_upload_over_the_limit_is_refused_before_it_is_read(manager, organization):
    with pytest.raises(openai.APIStatusError) as refused:
        manager.files.create(file=("big.txt", io.BytesIO(b"x" * (UPLOAD_MAX + 128 * 1024))), purpose="assistants")
    assert refused.value.status_code == 413
    assert "larger than" in refused.value.message
    assert not KnowledgeFile.objects.filter(organization=organization).exists()
    # Django's multipart parser cleans a file name of control characters: none is ever stored.
    named = manager.files.create(file=("a\x00b\x01.txt", io.BytesIO(b"x")), purpose="assistants")
    assert "\x00" not in named.filename
    assert "\x00" not in KnowledgeFile.objects.get(public_id=named.id).filename


CHAT_MODEL = "kb-chat"


@pytest.fixture(scope="module")
def engine() -> Iterator[TestProcess]:
    """The engine serves a chat model beside the embedding model here: retrieval feeds its prompts."""
    from tests.kit.processes import sim_start

    process = sim_start(models=(EMBED_MODEL, CHAT_MODEL))
    yield process
    process.stop()


@pytest.fixture
def chat_store(manager, organization, engine):
    deployment_serving(organization, CHAT_MODEL, [engine.url])
    uploaded = _upload(manager)
    store = manager.vector_stores.create(
        name="Handbook",
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}},
    )
    attached = manager.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=uploaded.id, poll_interval_ms=200
    )
    assert attached.status == "completed"
    return store, uploaded


QUESTION = [{"role": "user", "content": "How much GPU memory bandwidth do the nodes have?"}]


def test_a_chat_completion_with_retrieval_says_which_chunks_it_used(manager, chat_store):
    store, uploaded = chat_store
    plain = manager.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, max_tokens=4)
    raw = manager.chat.completions.with_raw_response.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        max_tokens=4,
        extra_body={"retrieval": {"vector_store_ids": [store.id], "max_num_results": 2}},
    )
    answer = raw.parse()
    used = answer.model_extra["retrieval"]["chunks"]
    assert len(used) == 2
    assert {chunk["file_id"] for chunk in used} == {uploaded.id}
    assert raw.headers["x-inferia-retrieval"] == ",".join(f"{c['file_id']}:{c['index']}" for c in used)
    # The chunks went into the prompt: it grew by about their length.
    assert answer.usage.prompt_tokens > plain.usage.prompt_tokens + 20


def test_retrieval_streams_unchanged_with_the_header(manager, chat_store):
    store, uploaded = chat_store
    with manager.chat.completions.with_streaming_response.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        max_tokens=5,
        stream=True,
        extra_body={"retrieval": {"vector_store_ids": [store.id]}},
    ) as response:
        assert response.headers["x-inferia-retrieval"].startswith(uploaded.id)
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split()


def test_retrieval_from_a_store_the_key_may_not_use_is_not_found(manager, chat_store, organization, plane):
    store, _ = chat_store
    limited = api_key_issue(organization=organization, scopes=("inference",), allowed_vector_stores=["vs_other"])
    with _client(plane, limited.secret) as client, pytest.raises(openai.NotFoundError, match=store.id):
        client.chat.completions.create(
            model=CHAT_MODEL, messages=QUESTION, extra_body={"retrieval": {"vector_store_ids": [store.id]}}
        )
    with pytest.raises(openai.BadRequestError, match="max_num_results"):
        manager.chat.completions.create(
            model=CHAT_MODEL,
            messages=QUESTION,
            extra_body={"retrieval": {"vector_store_ids": [store.id], "max_num_results": 99}},
        )


def test_a_bad_filter_in_retrieval_is_a_400_naming_retrieval(manager, chat_store):
    store, _ = chat_store
    with pytest.raises(openai.BadRequestError, match="filter") as refused:
        manager.chat.completions.create(
            model=CHAT_MODEL,
            messages=QUESTION,
            extra_body={"retrieval": {"vector_store_ids": [store.id], "filters": {"type": "nope"}}},
        )
    assert refused.value.body["param"] == "retrieval"
