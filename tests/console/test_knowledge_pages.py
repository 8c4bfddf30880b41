"""The knowledge pages: the organisation's stores with their files by status, creating a store (its dimensions asked
of the embedding model through the gateway) and deleting one, uploading into a store (a multipart post), removing a
file, the search and the chunk viewer; tenancy (another organisation's store is a 404 by link, a member without the
capability cannot upload), pinned query counts, the live WebSocket, and choosing on a key's page which stores the
key may use."""

from __future__ import annotations

import io

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.audit.models import AuditEvent
from apps.knowledge import ingestion, services
from apps.knowledge.models import Chunk, KnowledgeFile, VectorStore, VectorStoreFile
from tests.factories import api_key_issue, deployment_serving
from tests.knowledge.conftest import (  # noqa: F401 - fixtures
    EMBED_MODEL,
    SMALL_MODEL,
    engine,
    knowledge_files,
    small_engine,
)

DIMENSIONS = 384
HANDBOOK = "\n\n".join(
    [
        "The GPU nodes have 4.8 TB/s of HBM3e memory bandwidth and 141 GB of memory each.",
        "Simmer the tomato sauce for twenty minutes and season it with fresh basil.",
        "Income tax returns are due in April, and deductions lower the taxable amount.",
    ]
    * 20
)


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    """Attaching a file asks the worker to ingest it after commit; no worker runs here: the ids it was asked for."""
    asked: list[int] = []
    monkeypatch.setattr("apps.knowledge.services.ingestion_send", asked.append)
    return asked


def _store(org, name="handbook", **fields) -> VectorStore:
    return services.vector_store_create(
        organization=org, embedding_model=EMBED_MODEL, dimensions=DIMENSIONS, actor=None, name=name, **fields
    )


def _attached(store, content: bytes = b"Some text.", filename: str = "notes.txt") -> VectorStoreFile:
    file = services.knowledge_file_create(
        organization=store.organization, handle=io.BytesIO(content), filename=filename, purpose="assistants", actor=None
    )
    return services.vector_store_file_attach(store=store, file_id=file.public_id, actor=None)


# --- The list -------------------------------------------------------------------------------------------------------


def test_the_list_shows_the_stores_files_by_status_size_and_model(client, owner, org, other_org):
    store = _store(org)
    done, failed = _attached(store, filename="a.txt"), _attached(store, filename="b.txt")
    _attached(store, filename="c.txt")
    VectorStoreFile.objects.filter(pk=done.pk).update(status="completed")
    VectorStoreFile.objects.filter(pk=failed.pk).update(status="failed")
    VectorStore.objects.filter(pk=store.pk).update(usage_bytes=3 * 1024 * 1024)
    _store(other_org, name="globex secrets")
    client.force_login(owner)
    html = client.get("/console/knowledge/").content.decode()
    assert "handbook" in html
    assert store.public_id in html
    assert "1 completed" in html
    assert "1 failed" in html
    assert "1 in progress" in html
    assert "3.0\xa0MB" in html
    assert f"{EMBED_MODEL} <span" in html
    assert "globex secrets" not in html


@pytest.mark.parametrize("count", [1, 8])
def test_the_list_query_count_is_pinned(client, owner, org, count, django_assert_num_queries):
    for i in range(count):
        _attached(_store(org, name=f"store {i}"))
    client.force_login(owner)
    client.get("/console/knowledge/")  # caches warmed (content types), as on a running server
    with django_assert_num_queries(LIST_QUERIES):
        assert client.get("/console/knowledge/").status_code == 200


def test_the_store_page_query_count_is_pinned(client, owner, org, django_assert_num_queries):
    store = _store(org)
    for i in range(6):
        _attached(store, filename=f"f{i}.txt")
    client.force_login(owner)
    client.get(f"/console/knowledge/{store.pk}/")
    with django_assert_num_queries(STORE_QUERIES):
        assert client.get(f"/console/knowledge/{store.pk}/").status_code == 200


# Session, user, two-factor gate, the organisation scope; then the page of stores (counted by status in the same
# query), may add stores there, the models the organisation serves (list); or the store, its files, may upload (two
# permissions), may remove, may delete, may change and the models to change to (store page); and the top bar's
# organisations.
LIST_QUERIES = 8
STORE_QUERIES = 13


# --- Tenancy and capabilities ---------------------------------------------------------------------------------------


def test_another_organisations_store_is_a_404_by_link(client, owner, outsider, other_org, org):
    theirs = _store(other_org, name="globex")
    their_file = _attached(theirs)
    client.force_login(owner)
    assert client.get(f"/console/knowledge/{theirs.pk}/").status_code == 404
    assert client.get(f"/console/knowledge/{theirs.pk}/files/{their_file.pk}/chunks/").status_code == 404
    assert client.post(f"/console/knowledge/{theirs.pk}/delete/").status_code == 404
    assert client.post(f"/console/knowledge/{theirs.pk}/files/{their_file.pk}/remove/").status_code == 404
    upload = SimpleUploadedFile("x.txt", b"planted", content_type="text/plain")
    assert client.post(f"/console/knowledge/{theirs.pk}/files/", {"files": upload}).status_code == 404
    # A file of another store of ours is not reachable through one of our stores either.
    mine = _store(org)
    assert client.get(f"/console/knowledge/{mine.pk}/files/{their_file.pk}/chunks/").status_code == 404
    assert VectorStore.objects.filter(pk=theirs.pk).exists()
    assert VectorStoreFile.objects.filter(vector_store=theirs).count() == 1


def test_a_member_without_the_capability_cannot_upload_remove_or_delete(client, member, org, sent):
    store = _store(org)
    attached = _attached(store)
    client.force_login(member)
    html = client.get(f"/console/knowledge/{store.pk}/").content.decode()
    assert "notes.txt" in html  # members see knowledge bases
    assert 'data-testid="upload-form"' not in html
    assert 'data-testid="store-delete-form"' not in html
    assert 'data-testid="store-file-remove"' not in html
    upload = SimpleUploadedFile("forged.txt", b"forged", content_type="text/plain")
    assert client.post(f"/console/knowledge/{store.pk}/files/", {"files": upload}).status_code == 403
    assert client.post(f"/console/knowledge/{store.pk}/files/{attached.pk}/remove/").status_code == 403
    assert client.post(f"/console/knowledge/{store.pk}/delete/").status_code == 403
    assert client.post("/console/knowledge/new/", {"organization": org.pk, "name": "x"}).status_code == 403
    assert not KnowledgeFile.objects.filter(filename="forged.txt").exists()
    assert VectorStoreFile.objects.filter(pk=attached.pk).exists()
    assert VectorStore.objects.filter(pk=store.pk).exists()


# --- Writes ---------------------------------------------------------------------------------------------------------


def test_an_upload_stores_the_file_attaches_it_and_asks_for_ingestion(
    client, owner, org, sent, django_capture_on_commit_callbacks
):
    store = _store(org)
    client.force_login(owner)
    uploads = [
        SimpleUploadedFile("handbook.md", HANDBOOK.encode(), content_type="text/markdown"),
        SimpleUploadedFile("faq.txt", b"Questions and answers.", content_type="text/plain"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/console/knowledge/{store.pk}/files/", {"files": uploads})
    assert response.status_code == 302
    attached = VectorStoreFile.objects.filter(vector_store=store).select_related("file").order_by("file__filename")
    assert [(row.file.filename, row.status) for row in attached] == [
        ("faq.txt", "in_progress"),
        ("handbook.md", "in_progress"),
    ]
    assert attached[1].file.bytes == len(HANDBOOK.encode())
    assert sorted(sent) == sorted(row.pk for row in attached)
    actions = list(AuditEvent.objects.filter(actor_user=owner).values_list("action", flat=True))
    assert actions.count("knowledge.file.create") == 2
    assert actions.count("knowledge.store_file.attach") == 2


def test_an_upload_without_a_file_says_so(client, owner, org):
    store = _store(org)
    client.force_login(owner)
    response = client.post(f"/console/knowledge/{store.pk}/files/", {}, follow=True)
    assert "Choose a file to upload" in response.content.decode()
    assert not KnowledgeFile.objects.exists()


def test_removing_a_file_and_deleting_the_store_are_audited(client, owner, org):
    store = _store(org)
    attached = _attached(store)
    client.force_login(owner)
    assert client.post(f"/console/knowledge/{store.pk}/files/{attached.pk}/remove/").status_code == 302
    assert not VectorStoreFile.objects.filter(pk=attached.pk).exists()
    assert KnowledgeFile.objects.filter(pk=attached.file_id).exists()  # the file stays uploaded
    assert client.post(f"/console/knowledge/{store.pk}/delete/").status_code == 302
    assert not VectorStore.objects.filter(pk=store.pk).exists()
    actions = set(AuditEvent.objects.filter(actor_user=owner).values_list("action", flat=True))
    assert {"knowledge.store_file.detach", "knowledge.store.delete"} <= actions


def test_the_chunk_viewer_shows_a_files_chunks_in_order_with_the_flagged_marked(client, owner, org):
    store = _store(org)
    attached = _attached(store)
    for index in (2, 0, 1):
        Chunk.objects.create(
            organization=org, vector_store=store, store_file=attached, generation=attached.generation, index=index,
            text=f"chunk text number {index}", tokens=4, char_start=index * 20, char_end=index * 20 + 19,
            dimensions=DIMENSIONS, embedding=[1.0] + [0.0] * (DIMENSIONS - 1), flagged=index == 1,
            flag_categories=["prompt_injection"] if index == 1 else [],
        )  # fmt: skip
    client.force_login(owner)
    html = client.get(f"/console/knowledge/{store.pk}/files/{attached.pk}/chunks/").content.decode()
    positions = [html.index(f"chunk text number {index}") for index in (0, 1, 2)]
    assert positions == sorted(positions)
    assert html.count('data-flagged="true"') == 1
    assert "flagged: prompt_injection" in html


# --- Through the gateway: creating a store, ingesting, searching ----------------------------------------------------


@pytest.fixture
def served(transactional_db, redis_cache, engine, org):  # noqa: F811 - the engine fixture, imported above
    """Acme with a deployment of the embedding model on the engine (committed: the gateway reads it)."""
    deployment_serving(org, EMBED_MODEL, [engine.url])
    return org


def test_creating_a_store_asks_the_model_its_dimensions(client, owner, served):
    client.force_login(owner)
    html = client.get("/console/knowledge/").content.decode()
    assert f'<option value="{EMBED_MODEL}">' in html
    response = client.post(
        "/console/knowledge/new/",
        {
            "organization": served.pk,
            "name": "Support handbook",
            "embedding_model": EMBED_MODEL,
            "chunk_max_tokens": 200,
            "chunk_overlap_tokens": 50,
        },
    )
    store = VectorStore.objects.get(organization=served)
    assert response.status_code == 302
    assert response.url == f"/console/knowledge/{store.pk}/"
    assert (store.name, store.dimensions, store.chunk_max_tokens, store.chunk_overlap_tokens) == (
        "Support handbook",
        DIMENSIONS,
        200,
        50,
    )
    assert store.ingest_key is not None
    assert store.ingest_key.allowed_models == [EMBED_MODEL]
    assert AuditEvent.objects.filter(action="knowledge.store.create", actor_user=owner).exists()


def test_a_model_the_organisation_does_not_serve_is_refused(client, owner, served):
    client.force_login(owner)
    response = client.post(
        "/console/knowledge/new/",
        {
            "organization": served.pk,
            "name": "x",
            "embedding_model": "nowhere",
            "chunk_max_tokens": 800,
            "chunk_overlap_tokens": 400,
        },
        follow=True,
    )
    assert "Embedding model" in response.content.decode()
    assert not VectorStore.objects.exists()


def test_changing_the_model_starts_a_reembedding_that_the_page_shows(client, owner, member, served, small_engine):  # noqa: F811
    deployment_serving(served, SMALL_MODEL, [small_engine.url])
    store = _store(served)
    client.force_login(member)
    assert client.post(f"/console/knowledge/{store.pk}/model/", {"embedding_model": SMALL_MODEL}).status_code == 403
    client.force_login(owner)
    assert f'<option value="{SMALL_MODEL}">' in client.get(f"/console/knowledge/{store.pk}/").content.decode()
    response = client.post(f"/console/knowledge/{store.pk}/model/", {"embedding_model": SMALL_MODEL})
    assert response.status_code == 302
    store.refresh_from_db()
    assert (store.embedding_model, store.reembed_model) == (EMBED_MODEL, SMALL_MODEL)
    html = client.get(f"/console/knowledge/{store.pk}/").content.decode()
    assert f"Re-embedding with <strong>{SMALL_MODEL}</strong>" in html
    assert 'data-testid="store-model-form"' not in html  # one change at a time
    assert AuditEvent.objects.filter(action="knowledge.store.embedding_change", actor_user=owner).exists()


def test_an_uploaded_file_is_ingested_and_the_search_ranks_its_right_chunk_first(client, owner, served, sent):
    store = _store(served, chunk_max_tokens=100, chunk_overlap_tokens=0)
    client.force_login(owner)
    upload = SimpleUploadedFile("handbook.md", HANDBOOK.encode(), content_type="text/markdown")
    client.post(f"/console/knowledge/{store.pk}/files/", {"files": upload})
    (store_file_id,) = sent
    assert ingestion.store_file_claim(store_file_id)
    ingestion.store_file_ingest_run(store_file_id)
    html = client.get(f"/console/knowledge/{store.pk}/").content.decode()
    assert 'data-status="completed"' in html
    response = client.get(f"/console/knowledge/{store.pk}/", {"q": "How much GPU memory bandwidth?"})
    html = response.content.decode()
    assert response.status_code == 200
    first = html.index('data-testid="search-hit-text"')
    assert "bandwidth" in html[first : html.index("</p>", first)]
    assert 'data-testid="search-hit-file">handbook.md<' in html


# --- A key's vector stores -----------------------------------------------------------------------------------------


def test_a_keys_page_limits_it_to_the_stores_chosen_and_back_to_every_store(client, owner, org):
    first, second = _store(org, name="first store"), _store(org, name="second store")
    key = api_key_issue(organization=org, name="rag service").key
    client.force_login(owner)
    html = client.get(f"/console/keys/{key.pk}/").content.decode()
    assert "Every vector store of Acme" in html
    assert f'data-testid="key-store-{first.public_id}"' in html
    assert f'data-testid="key-store-{second.public_id}"' in html

    response = client.post(f"/console/keys/{key.pk}/vector-stores/", {"vector_stores": [first.public_id]})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.allowed_vector_stores == [first.public_id]
    html = client.get(f"/console/keys/{key.pk}/").content.decode()
    shown = html[html.index('data-testid="key-vector-stores"') :]
    shown = shown[: shown.index("</td>")]
    assert "first store" in shown
    assert "second store" not in shown
    assert AuditEvent.objects.filter(action="key.update", actor_user=owner).exists()

    client.post(f"/console/keys/{key.pk}/vector-stores/", {})
    key.refresh_from_db()
    assert key.allowed_vector_stores == []


def test_a_store_of_another_organisation_cannot_be_given_to_a_key(client, owner, org, other_org):
    theirs = _store(other_org, name="globex store")
    key = api_key_issue(organization=org).key
    client.force_login(owner)
    response = client.post(f"/console/keys/{key.pk}/vector-stores/", {"vector_stores": [theirs.public_id]})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.allowed_vector_stores == []
    assert "globex store" not in client.get(f"/console/keys/{key.pk}/").content.decode()


def test_a_viewer_cannot_change_a_keys_stores(client, viewer, org):
    store = _store(org)
    key = api_key_issue(organization=org).key
    client.force_login(viewer)
    assert 'data-testid="key-stores-form"' not in client.get(f"/console/keys/{key.pk}/").content.decode()
    response = client.post(f"/console/keys/{key.pk}/vector-stores/", {"vector_stores": [store.public_id]})
    assert response.status_code == 403
    key.refresh_from_db()
    assert key.allowed_vector_stores == []


# --- Live -----------------------------------------------------------------------------------------------------------


def _communicator(user, store_id):
    from django.contrib.auth.models import AnonymousUser

    from apps.console.consumers import VectorStoreProgressConsumer
    from inferia_site.asgi import application  # noqa: F401 - the real routing, imported for its side effects

    communicator = WebsocketCommunicator(VectorStoreProgressConsumer.as_asgi(), f"/ws/console/knowledge/{store_id}/")
    communicator.scope["user"] = user or AnonymousUser()
    communicator.scope["session"] = {"inferia_second_factor": "none"}
    communicator.scope["url_route"] = {"kwargs": {"pk": store_id}}
    return communicator


@pytest.mark.django_db(transaction=True)
def test_the_websocket_pushes_ingestion_progress_to_who_may_view(org, owner, outsider, redis_cache):
    from channels.db import database_sync_to_async

    store = _store(org)
    attached = _attached(store, content=HANDBOOK.encode())

    def cut_into(total: int) -> None:
        # What the worker does once the file is cut, announced as it announces it.
        VectorStoreFile.objects.filter(pk=attached.pk).update(chunks_total=total)
        ingestion._progress_publish(attached.pk)

    async def scenario():
        watcher = _communicator(owner, store.pk)
        connected, _ = await watcher.connect()
        assert connected
        first = await watcher.receive_json_from(timeout=5)
        assert [(f["id"], f["status"], f["progress"]) for f in first["store"]["files"]] == [
            (attached.pk, "in_progress", None)
        ]
        await database_sync_to_async(cut_into)(4)
        pushed = await watcher.receive_json_from(timeout=5)
        assert pushed["store"]["files"][0]["chunks_total"] == 4
        assert pushed["store"]["files"][0]["progress"] == 0
        await watcher.disconnect()

        stranger = _communicator(outsider, store.pk)
        connected, code = await stranger.connect()
        assert not connected
        assert code == 4404
        anonymous = _communicator(None, store.pk)
        connected, code = await anonymous.connect()
        assert not connected
        assert code == 4403

    async_to_sync(scenario)()
