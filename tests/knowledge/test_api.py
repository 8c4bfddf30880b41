"""The knowledge base's management REST API: a store created by asking its embedding model (the simulated engine,
through the in-process gateway), a file uploaded and attached, a search ranked by the real embedding of the query,
and the tenancy and scope doors."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.keys.services import api_key_create
from apps.knowledge.models import Chunk, KnowledgeFile, VectorStore, VectorStoreFile
from inferia_sim.inference import embedding_vector
from tests.factories import OrganizationFactory
from tests.knowledge.conftest import EMBED_MODEL

TEXTS = [
    "The GPU has 4.8 TB/s of HBM3e memory bandwidth and 141 GB of memory.",
    "Simmer the tomato sauce for twenty minutes and season it with basil.",
]


def _client(organization, scopes=("read", "manage")) -> APIClient:
    issued = api_key_create(organization=organization, name="api", scopes=list(scopes), actor=None)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    return client


def _store(client, organization, **fields) -> dict:
    response = client.post(
        "/api/vector-stores/",
        {"organization": organization.pk, "name": "handbook", "embedding_model": EMBED_MODEL, **fields},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def _upload(client, organization, content=b"notes", name="notes.txt") -> dict:
    response = client.post(
        "/api/knowledge-files/",
        {"organization": organization.pk, "file": SimpleUploadedFile(name, content, content_type="text/plain")},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return response.json()


def _chunks(store_file: VectorStoreFile) -> None:
    """The chunks ingestion would write, with the engine's own embeddings (no worker runs in these tests)."""
    dimensions = store_file.vector_store.dimensions
    for index, text in enumerate(TEXTS):
        Chunk.objects.create(
            organization_id=store_file.organization_id,
            vector_store=store_file.vector_store,
            store_file=store_file,
            generation=1,
            index=index,
            text=text,
            tokens=len(text.split()),
            char_start=0,
            char_end=len(text),
            dimensions=dimensions,
            embedding=list(embedding_vector(text, dimensions)),
            attributes=store_file.attributes,
        )


def test_a_store_is_created_with_the_dimensions_its_model_answers_and_shows_its_public_id(organization):
    client = _client(organization)

    created = _store(client, organization, metadata={"team": "docs"})

    store = VectorStore.objects.get(pk=created["id"])
    assert created["public_id"] == store.public_id
    assert store.public_id.startswith("vs_")
    assert created["embedding_model"] == EMBED_MODEL
    assert created["dimensions"] == store.dimensions > 0
    assert store.ingest_key is not None
    assert store.ingest_key.allowed_models == [EMBED_MODEL]
    assert AuditEvent.objects.filter(action="knowledge.store.create", target_id=str(store.pk)).exists()
    listed = client.get("/api/vector-stores/").json()["results"]
    assert [row["public_id"] for row in listed] == [store.public_id]


def test_a_model_the_organisation_cannot_use_is_a_400_and_leaves_no_store(organization):
    client = _client(organization)

    response = client.post(
        "/api/vector-stores/",
        {"organization": organization.pk, "embedding_model": "no-such-model"},
        format="json",
    )

    assert response.status_code == 400, response.content
    assert not VectorStore.objects.exists()


def test_upload_attach_search_detach_and_delete(organization):
    client = _client(organization)
    store = _store(client, organization)
    file = _upload(client, organization, b"GPUs have memory bandwidth.", "gpu.txt")
    assert file["public_id"].startswith("file-")
    assert file["bytes"] == len(b"GPUs have memory bandwidth.")

    attached = client.post(
        "/api/vector-store-files/",
        {"vector_store": store["id"], "file_id": file["public_id"], "attributes": {"topic": "gpu"}},
        format="json",
    )
    assert attached.status_code == 201, attached.content
    assert attached.json()["file_id"] == file["public_id"]
    assert attached.json()["vector_store_id"] == store["public_id"]
    _chunks(VectorStoreFile.objects.get(pk=attached.json()["id"]))

    found = client.post(
        f"/api/vector-stores/{store['id']}/search/", {"query": "GPU memory bandwidth", "max_num_results": 1}, "json"
    )
    filtered = client.post(
        f"/api/vector-stores/{store['id']}/search/",
        {"query": "GPU memory and tomato sauce", "filters": {"type": "eq", "key": "topic", "value": "gpu"}},
        format="json",
    )
    filtered_out = client.post(
        f"/api/vector-stores/{store['id']}/search/",
        {"query": "GPU memory and tomato sauce", "filters": {"type": "eq", "key": "topic", "value": "food"}},
        format="json",
    )
    listed = client.get("/api/vector-store-files/", {"vector_store": store["id"]}).json()["results"]
    detached = client.delete(f"/api/vector-store-files/{attached.json()['id']}/")
    renamed = client.patch(f"/api/vector-stores/{store['id']}/", {"name": "renamed"}, format="json")
    file_deleted = client.delete(f"/api/knowledge-files/{file['id']}/")
    store_deleted = client.delete(f"/api/vector-stores/{store['id']}/")

    assert found.status_code == 200, found.content
    assert [(hit["file_id"], hit["text"]) for hit in found.json()["data"]] == [(file["public_id"], TEXTS[0])]
    assert sorted(hit["text"] for hit in filtered.json()["data"]) == sorted(TEXTS)
    assert filtered_out.json()["data"] == []
    assert [row["file_id"] for row in listed] == [file["public_id"]]
    assert detached.status_code == 204
    assert not VectorStoreFile.objects.exists()
    assert not Chunk.objects.exists()
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "renamed"
    assert file_deleted.status_code == 204
    assert not KnowledgeFile.objects.exists()
    assert store_deleted.status_code == 204
    assert not VectorStore.objects.exists()


def test_bad_bodies_are_400s_in_drfs_shape(organization):
    client = _client(organization)
    store = _store(client, organization)

    unknown_file = client.post(
        "/api/vector-store-files/", {"vector_store": store["id"], "file_id": "file-nope"}, format="json"
    )
    empty_query = client.post(f"/api/vector-stores/{store['id']}/search/", {"query": ""}, format="json")
    too_many = client.post(
        f"/api/vector-stores/{store['id']}/search/", {"query": "x", "max_num_results": 51}, format="json"
    )
    bad_metadata = client.patch(f"/api/vector-stores/{store['id']}/", {"metadata": {"k" * 100: "v"}}, format="json")

    assert unknown_file.status_code == 400
    assert "file-nope" in str(unknown_file.json())
    assert empty_query.status_code == 400
    assert "query" in empty_query.json()
    assert too_many.status_code == 400
    assert "max_num_results" in too_many.json()
    assert bad_metadata.status_code == 400


def test_another_organisations_store_and_file_are_404s(organization):
    client = _client(organization)
    store = _store(client, organization)
    file = _upload(client, organization)
    other = OrganizationFactory(name="Globex", slug="globex")
    intruder = _client(other)

    answers = [
        intruder.get(f"/api/vector-stores/{store['id']}/"),
        intruder.post(f"/api/vector-stores/{store['id']}/search/", {"query": "x"}, format="json"),
        intruder.delete(f"/api/vector-stores/{store['id']}/"),
        intruder.get(f"/api/knowledge-files/{file['id']}/"),
        intruder.delete(f"/api/knowledge-files/{file['id']}/"),
    ]
    attach = intruder.post(
        "/api/vector-store-files/", {"vector_store": store["id"], "file_id": file["public_id"]}, format="json"
    )
    create_there = intruder.post(
        "/api/vector-stores/", {"organization": organization.pk, "embedding_model": EMBED_MODEL}, format="json"
    )

    assert [answer.status_code for answer in answers] == [404] * 5
    assert attach.status_code == 400
    assert "vector_store" in attach.json()
    assert create_there.status_code == 400
    assert "organization" in create_there.json()
    assert intruder.get("/api/vector-stores/").json()["results"] == []
    assert intruder.get("/api/knowledge-files/").json()["results"] == []
    assert VectorStore.objects.count() == 1
    assert KnowledgeFile.objects.count() == 1


def test_a_key_limited_to_some_stores_sees_and_touches_only_those(organization):
    client = _client(organization)
    allowed, hidden = _store(client, organization, name="allowed"), _store(client, organization, name="hidden")
    file = _upload(client, organization)
    hidden_file = client.post(
        "/api/vector-store-files/", {"vector_store": hidden["id"], "file_id": file["public_id"]}, format="json"
    ).json()
    issued = api_key_create(
        organization=organization, name="limited", scopes=["read", "manage"], actor=None,
        allowed_vector_stores=[allowed["public_id"]],
    )  # fmt: skip
    limited = APIClient()
    limited.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")

    stores = limited.get("/api/vector-stores/").json()["results"]
    store_files = limited.get("/api/vector-store-files/").json()["results"]
    by_filter = limited.get("/api/vector-store-files/", {"vector_store": hidden["id"]}).json()["results"]
    answers = [
        limited.get(f"/api/vector-stores/{hidden['id']}/"),
        limited.post(f"/api/vector-stores/{hidden['id']}/search/", {"query": "x"}, format="json"),
        limited.patch(f"/api/vector-stores/{hidden['id']}/", {"name": "mine"}, format="json"),
        limited.delete(f"/api/vector-stores/{hidden['id']}/"),
        limited.get(f"/api/vector-store-files/{hidden_file['id']}/"),
        limited.delete(f"/api/vector-store-files/{hidden_file['id']}/"),
    ]
    attach = limited.post(
        "/api/vector-store-files/", {"vector_store": hidden["id"], "file_id": file["public_id"]}, format="json"
    )
    attach_allowed = limited.post(
        "/api/vector-store-files/", {"vector_store": allowed["id"], "file_id": file["public_id"]}, format="json"
    )

    assert [store["public_id"] for store in stores] == [allowed["public_id"]]
    assert store_files == []
    assert by_filter == []
    assert [answer.status_code for answer in answers] == [404] * 6
    assert attach.status_code == 400
    assert "vector_store" in attach.json()
    assert attach_allowed.status_code == 201, attach_allowed.content
    assert VectorStore.objects.get(pk=hidden["id"]).name == "hidden"
    assert VectorStoreFile.objects.filter(vector_store_id=hidden["id"]).count() == 1


@pytest.mark.parametrize("path", ["/api/vector-stores/", "/api/knowledge-files/"])
def test_a_read_key_may_list_but_not_create(organization, path):
    reader = _client(organization, scopes=("read",))

    listed = reader.get(path)
    if path == "/api/vector-stores/":
        created = reader.post(path, {"organization": organization.pk, "embedding_model": EMBED_MODEL}, format="json")
    else:
        created = reader.post(
            path,
            {"organization": organization.pk, "file": SimpleUploadedFile("a.txt", b"a")},
            format="multipart",
        )

    assert listed.status_code == 200
    assert created.status_code == 403, created.content
    assert not VectorStore.objects.exists()
    assert not KnowledgeFile.objects.exists()


async def _asgi_post(path: str, length: int) -> list[dict]:
    from inferia_site.asgi import http_app

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", str(length).encode())]}
    await http_app(scope, receive, send)
    return sent


async def test_an_upload_declared_over_the_limit_is_a_413_before_it_is_read(settings):
    settings.INFERIA_KNOWLEDGE_FILE_MAX_BYTES = 1000

    sent = await _asgi_post("/api/knowledge-files/", 10_000_000)

    assert sent[0]["status"] == 413
    assert b"larger than" in sent[1]["body"]
    assert b'"detail"' in sent[1]["body"]


def _queries(client, path: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


def test_the_lists_take_as_many_queries_for_three_rows_as_for_one(organization):
    from apps.knowledge import services

    client = _client(organization)

    def add_one(n: int) -> None:
        file = services.knowledge_file_create(
            organization=organization, handle=io.BytesIO(b"x"), filename=f"{n}.txt", purpose="assistants", actor=None
        )
        services.vector_store_create(
            organization=organization, embedding_model=EMBED_MODEL, dimensions=8, actor=None, file_ids=[file.public_id]
        )

    paths = ["/api/vector-stores/", "/api/knowledge-files/", "/api/vector-store-files/"]
    add_one(0)
    client.get("/api/organizations/")  # the key's first use is recorded once, not on every list
    one = [_queries(client, path) for path in paths]
    add_one(1)
    add_one(2)
    three = [_queries(client, path) for path in paths]

    assert three == one
