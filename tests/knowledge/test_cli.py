"""`inferia kb ...` run as the console script against a live server of the test database: a store created, a file
uploaded into it, searched, and deleted, through the management REST API with a management key."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from apps.keys.services import api_key_create
from apps.knowledge.models import Chunk, KnowledgeFile, VectorStore, VectorStoreFile
from inferia_sim.inference import embedding_vector
from tests.factories import deployment_serving
from tests.kit.processes import INFERIA
from tests.knowledge.conftest import EMBED_MODEL, SMALL_MODEL

TEXT = "The GPU has 4.8 TB/s of HBM3e memory bandwidth and 141 GB of memory."


@pytest.fixture
def kb(organization, live_server):
    secret = api_key_create(organization=organization, name="cli", scopes=["read", "manage"], actor=None).secret

    def run(*args: str, key: str = secret) -> subprocess.CompletedProcess:
        env = {**os.environ, "INFERIA_URL": live_server.url, "INFERIA_API_KEY": key}
        done = subprocess.run([INFERIA, "kb", *args], env=env, capture_output=True, text=True, timeout=60)
        assert secret not in done.stdout + done.stderr
        return done

    return run


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_create_upload_search_and_delete_a_store(kb, tmp_path):
    created = _ok(kb("create", "handbook", "--embedding-model", EMBED_MODEL))
    store = VectorStore.objects.get()
    notes = tmp_path / "gpu.txt"
    notes.write_text(TEXT)

    uploaded = _ok(kb("upload", store.public_id, str(notes)))
    store_file = VectorStoreFile.objects.select_related("file").get(vector_store=store)
    Chunk.objects.create(  # what ingestion would write (no worker runs here)
        organization_id=store.organization_id, vector_store=store, store_file=store_file, generation=1, index=0,
        text=TEXT, tokens=12, char_start=0, char_end=len(TEXT), dimensions=store.dimensions,
        embedding=list(embedding_vector(TEXT, store.dimensions)), attributes={},
    )  # fmt: skip
    listed = json.loads(_ok(kb("stores", "--json")))
    found = _ok(kb("search", store.public_id, "GPU memory bandwidth", "-n", "1"))
    deleted = _ok(kb("delete", store.public_id))

    assert f"created {store.public_id} (handbook, {EMBED_MODEL}, {store.dimensions} dims)" in created
    assert f"as {store_file.file.public_id} ({len(TEXT)} bytes) into {store.public_id}" in uploaded
    assert store_file.file.filename == "gpu.txt"
    assert [row["public_id"] for row in listed] == [store.public_id]
    assert f"gpu.txt ({store_file.file.public_id}) #0" in found
    assert "HBM3e memory bandwidth" in found
    assert f"deleted {store.public_id}" in deleted
    assert not VectorStore.objects.exists()
    assert KnowledgeFile.objects.count() == 1


def test_an_unknown_store_or_unreadable_file_says_so_and_fails(kb, tmp_path):
    unknown = kb("search", "vs_nope", "x")
    not_an_id = kb("delete", "handbook")
    _ok(kb("create", "handbook", "--embedding-model", EMBED_MODEL))
    store = VectorStore.objects.get()
    missing = kb("upload", store.public_id, str(tmp_path / "missing.txt"))

    assert unknown.returncode != 0
    assert "no vector store 'vs_nope'" in unknown.stderr
    assert not_an_id.returncode != 0
    assert "vs_..." in not_an_id.stderr
    assert missing.returncode != 0
    assert "cannot read" in missing.stderr
    assert not KnowledgeFile.objects.exists()


def test_a_read_key_lists_stores_but_may_not_create_one(kb, organization):
    reader = api_key_create(organization=organization, name="reader", scopes=["read"], actor=None).secret

    listed = kb("stores", key=reader)
    refused = kb("create", "nope", "--embedding-model", EMBED_MODEL, key=reader)

    assert listed.returncode == 0
    assert "(none)" in listed.stdout
    assert refused.returncode != 0
    assert "403" in refused.stderr
    assert not VectorStore.objects.exists()


def test_reembed_changes_the_model_and_shows_the_change(kb, organization, small_engine):
    deployment_serving(organization, SMALL_MODEL, [small_engine.url])
    _ok(kb("create", "handbook", "--embedding-model", EMBED_MODEL))
    store = VectorStore.objects.get()
    started = _ok(kb("reembed", store.public_id, "--model", SMALL_MODEL))
    shown = _ok(kb("reembed", store.public_id))
    refused = kb("reembed", store.public_id, "--model", "another-model")

    store.refresh_from_db()
    assert (store.embedding_model, store.reembed_model) == (EMBED_MODEL, SMALL_MODEL)
    assert f"re-embedding with {SMALL_MODEL} (256 dims)" in started
    assert f"re-embedding with {SMALL_MODEL}" in shown
    assert refused.returncode != 0
    assert "already being re-embedded" in refused.stderr
