"""Changing a store's embedding model: the chunks' text re-embedded by the new model into the next generation while
searches keep reading the old vectors with the old model, an atomic switch once every file is done, the old
generation deleted, a failure that leaves the old vectors serving and says why, and the REST door with its tenancy."""

from __future__ import annotations

import asyncio
import io

import pytest
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.keys.services import api_key_create, api_key_update
from apps.knowledge import ingestion, reembedding, services
from apps.knowledge.embedding import EmbeddingError, run_in_own_loop, token_count_of
from apps.knowledge.models import Chunk, VectorStore, VectorStoreFile
from apps.knowledge.openai_api import store_shape
from apps.knowledge.retrieval import stores_search
from inferia_runtime.errors import DomainRefusal
from tests.factories import OrganizationFactory, deployment_serving
from tests.kit.waiting import eventually
from tests.knowledge.conftest import EMBED_MODEL, SMALL_DIMENSIONS, SMALL_MODEL
from tests.knowledge.test_killed_worker import Workers, workers  # noqa: F401 - fixture

GPU = "The GPU nodes have 4.8 TB/s of HBM3e memory bandwidth and 141 GB of memory each."
FOOD = "Simmer the tomato sauce for twenty minutes and season it with fresh basil."
TAX = "Income tax returns are due in April, and deductions lower the taxable amount."


@pytest.fixture
def acme(organization, small_engine):
    deployment_serving(organization, SMALL_MODEL, [small_engine.url])
    return organization


def _file(organization, text: str, name: str):
    return services.knowledge_file_create(
        organization=organization, handle=io.BytesIO(text.encode()), filename=name, purpose="assistants", actor=None
    )


def _ingest(store_file_id: int) -> None:
    assert ingestion.store_file_claim(store_file_id)
    ingestion.store_file_ingest_run(store_file_id)
    assert VectorStoreFile.objects.get(pk=store_file_id).status == "completed"


def _store(organization) -> VectorStore:
    files = [_file(organization, "\n\n".join([GPU, FOOD] * 20), "a.md"), _file(organization, TAX * 3, "b.md")]
    store = services.vector_store_create_probed(
        organization=organization,
        embedding_model=EMBED_MODEL,
        actor=None,
        chunk_max_tokens=100,
        chunk_overlap_tokens=20,
        file_ids=[f.public_id for f in files],
    )
    for store_file in VectorStoreFile.objects.filter(vector_store=store):
        _ingest(store_file.pk)
    store.refresh_from_db()
    return store


def _best(store: VectorStore, query: str) -> Chunk:
    store = VectorStore.objects.get(pk=store.pk)  # as a request would read it
    hits = run_in_own_loop(lambda: stores_search(stores=[store], query=query, max_num_results=1))
    return Chunk.objects.get(pk=hits[0].chunk_id)


def _reembed(store: VectorStore) -> None:
    assert reembedding.store_reembed_claim(store.pk)
    reembedding.store_reembed_run(store.pk)


def test_searches_read_the_old_vectors_until_the_new_model_has_embedded_every_file(acme):
    store = _store(acme)
    chunks_before = Chunk.objects.filter(vector_store=store).count()
    assert _best(store, "GPU memory bandwidth").generation == 1

    changed = services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)
    assert (changed.embedding_model, changed.dimensions) == (EMBED_MODEL, 384)
    assert (changed.reembed_model, changed.reembed_dimensions) == (SMALL_MODEL, SMALL_DIMENSIONS)
    assert AuditEvent.objects.filter(action="knowledge.store.embedding_change", target_id=str(store.pk)).exists()
    changed.ingest_key.refresh_from_db()
    assert changed.ingest_key.allowed_models == [EMBED_MODEL, SMALL_MODEL]

    # One file re-embedded, the other not yet: searches still embed the query with the old model, read generation 1.
    first = VectorStoreFile.objects.filter(vector_store=store).order_by("pk").first()
    secret = ingestion.store_ingest_secret(changed)
    assert reembedding.store_reembed_claim(store.pk)
    assert reembedding.store_file_reembed(store=changed, store_file_id=first.pk, secret=secret)
    assert Chunk.objects.filter(store_file=first, generation=2, dimensions=SMALL_DIMENSIONS).exists()
    best = _best(store, "GPU memory bandwidth")
    assert (best.generation, best.dimensions) == (1, 384)
    assert "bandwidth" in best.text

    reembedding.store_reembed_run(store.pk)
    store.refresh_from_db()
    assert (store.generation, store.embedding_model, store.dimensions) == (2, SMALL_MODEL, SMALL_DIMENSIONS)
    assert (store.reembed_model, store.reembed_dimensions, store.reembed_error) == ("", None, "")
    assert set(Chunk.objects.filter(vector_store=store).values_list("generation", "dimensions")) == {(2, 256)}
    assert Chunk.objects.filter(vector_store=store).count() == chunks_before  # old generation deleted
    best = _best(store, "GPU memory bandwidth")
    assert (best.generation, best.dimensions) == (2, SMALL_DIMENSIONS)
    assert "bandwidth" in best.text
    assert _best(store, "When are income tax returns due?").store_file.file.filename == "b.md"
    files = VectorStoreFile.objects.filter(vector_store=store)
    assert set(files.values_list("generation", flat=True)) == {2}
    assert sum(files.values_list("chunks_done", flat=True)) == chunks_before
    assert store.usage_bytes == sum(files.values_list("usage_bytes", flat=True)) > 0
    store.ingest_key.refresh_from_db()
    assert store.ingest_key.allowed_models == [SMALL_MODEL]
    assert AuditEvent.objects.filter(action="knowledge.store.embedding_switch", target_id=str(store.pk)).exists()


def test_renaming_a_store_read_before_the_switch_does_not_undo_it(acme):
    store = _store(acme)
    services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)
    stale = VectorStore.objects.get(pk=store.pk)  # read by a request before the worker switches
    _reembed(store)
    services.vector_store_update(store=stale, name="renamed", actor=None)
    store.refresh_from_db()
    assert (store.name, store.generation, store.embedding_model, store.dimensions) == (
        "renamed",
        2,
        SMALL_MODEL,
        SMALL_DIMENSIONS,
    )


def test_a_killed_reembedding_is_resumed_without_a_duplicate_chunk(acme):
    store = _store(acme)
    services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)
    assert reembedding.store_reembed_claim(store.pk)
    assert not reembedding.store_reembed_claim(store.pk)  # leased
    first = VectorStoreFile.objects.filter(vector_store=store).order_by("pk").first()
    store.refresh_from_db()
    reembedding.store_file_reembed(store=store, store_file_id=first.pk, secret=ingestion.store_ingest_secret(store))
    kept = set(Chunk.objects.filter(store_file=first, generation=2).values_list("pk", flat=True))
    Chunk.objects.filter(store_file=first, generation=2, index__gte=2).delete()  # as if killed mid-file
    VectorStore.objects.filter(pk=store.pk).update(reembed_claimed_until=None)  # the lease ran out
    assert store.pk in reembedding.stores_reembedding_stalled()

    _reembed(store)
    store.refresh_from_db()
    assert store.generation == 2
    new = list(Chunk.objects.filter(store_file=first).values_list("index", flat=True))
    assert len(new) == len(set(new)) == first.chunks_done
    assert kept & set(Chunk.objects.filter(store_file=first).values_list("pk", flat=True))  # kept, not rewritten


def test_a_file_attached_during_the_reembedding_ends_up_in_the_new_generation(acme):
    store = _store(acme)
    services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)
    late = services.vector_store_file_attach(
        store=store, file_id=_file(acme, "Kubernetes restarts a failing pod.", "c.md").public_id, actor=None
    )
    assert late.generation == 1
    _reembed(store)  # waits: the late file is still being ingested
    store.refresh_from_db()
    assert (store.generation, store.reembed_model, store.reembed_claimed_until) == (1, SMALL_MODEL, None)
    _ingest(late.pk)  # with the old model, into the generation searches read
    assert set(Chunk.objects.filter(store_file=late).values_list("generation", "dimensions")) == {(1, 384)}
    _reembed(store)
    store.refresh_from_db()
    assert store.generation == 2
    assert set(Chunk.objects.filter(store_file=late).values_list("generation", "dimensions")) == {(2, 256)}
    after = services.vector_store_file_attach(
        store=store, file_id=_file(acme, "Backups run nightly.", "d.md").public_id, actor=None
    )
    assert after.generation == 2
    _ingest(after.pk)
    assert set(Chunk.objects.filter(store_file=after).values_list("generation", "dimensions")) == {(2, 256)}


def test_a_refused_reembedding_leaves_the_old_vectors_serving_and_says_why(acme):
    store = _store(acme)
    services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)
    store.refresh_from_db()
    # An administrator takes the new model away from the store's key: the gateway refuses the re-embedding.
    api_key_update(key=store.ingest_key, changes={"allowed_models": [EMBED_MODEL]}, actor=None)
    _reembed(store)
    store.refresh_from_db()
    assert (store.generation, store.embedding_model, store.dimensions, store.reembed_model) == (1, EMBED_MODEL, 384, "")
    assert SMALL_MODEL in store.reembed_error
    assert not Chunk.objects.filter(vector_store=store, generation=2).exists()
    assert "bandwidth" in _best(store, "GPU memory bandwidth").text
    assert AuditEvent.objects.filter(action="knowledge.store.embedding_fail", target_id=str(store.pk)).exists()
    store.ingest_key.refresh_from_db()
    assert store.ingest_key.allowed_models == [EMBED_MODEL]


def test_a_model_that_cannot_embed_is_refused_up_front_and_changes_nothing(acme):
    store = _store(acme)
    with pytest.raises(EmbeddingError):
        services.vector_store_embedding_change(store=store, embedding_model="no-such-model", actor=None)
    store.refresh_from_db()
    assert (store.embedding_model, store.reembed_model) == (EMBED_MODEL, "")
    store.ingest_key.refresh_from_db()
    assert store.ingest_key.allowed_models == [EMBED_MODEL]


def test_the_same_model_is_a_no_op_and_a_second_change_waits_for_the_first(acme):
    store = _store(acme)
    services.vector_store_embedding_change(store=store, embedding_model=EMBED_MODEL, actor=None)
    assert not AuditEvent.objects.filter(action="knowledge.store.embedding_change").exists()
    services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)
    services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)
    assert AuditEvent.objects.filter(action="knowledge.store.embedding_change").count() == 1
    with pytest.raises(DomainRefusal, match="already being re-embedded"):
        services.vector_store_embedding_change(store=store, embedding_model="another-model", actor=None)


@pytest.mark.slow
def test_a_celery_worker_reembeds_the_store_after_the_change_commits(acme, workers: Workers):  # noqa: F811
    store = _store(acme)
    workers.start()
    services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)

    def switched() -> bool:
        store.refresh_from_db()
        return store.generation == 2 or bool(store.reembed_error)

    try:
        eventually(switched, timeout=120, interval=0.2, what="the store switched to the new model")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{workers.output()}") from None
    assert (store.embedding_model, store.dimensions, store.reembed_error) == (SMALL_MODEL, SMALL_DIMENSIONS, "")
    eventually(
        lambda: not Chunk.objects.filter(vector_store=store, generation=1).exists(), timeout=30, what="old deleted"
    )
    assert "bandwidth" in _best(store, "GPU memory bandwidth").text


def _client(organization) -> APIClient:
    issued = api_key_create(organization=organization, name="api", scopes=["read", "manage"], actor=None)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    return client


def test_the_rest_api_changes_the_model_and_another_organisation_cannot(acme):
    store = _store(acme)
    outsider = _client(OrganizationFactory(name="Other", slug="other"))
    foreign = outsider.patch(f"/api/vector-stores/{store.pk}/", {"embedding_model": SMALL_MODEL}, format="json")
    assert foreign.status_code == 404
    client = _client(acme)
    response = client.patch(f"/api/vector-stores/{store.pk}/", {"embedding_model": SMALL_MODEL}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["embedding_model"], body["reembed_model"], body["reembed_dimensions"]) == (
        EMBED_MODEL,
        SMALL_MODEL,
        SMALL_DIMENSIONS,
    )
    refused = client.patch(f"/api/vector-stores/{store.pk}/", {"embedding_model": "another"}, format="json")
    assert refused.status_code == 400
    assert "already being re-embedded" in str(refused.json())
    store.refresh_from_db()
    assert store_shape(store)["status"] == "in_progress"  # what /v1 answers


@pytest.mark.slow
def test_a_file_that_fails_during_the_reembedding_lets_the_store_switch_without_waiting(acme, workers: Workers):  # noqa: F811
    store = _store(acme)
    services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)
    broken = services.vector_store_file_attach(
        store=store, file_id=_file(acme, "%PDF-1.7 and nothing a reader can open", "broken.pdf").public_id, actor=None
    )
    _reembed(store)  # every other file is re-embedded; the switch waits for the one still being ingested
    store.refresh_from_db()
    assert store.generation == 1
    workers.start()  # ingests it: it fails, and the change goes on (no sweep runs here)

    def switched() -> bool:
        store.refresh_from_db()
        return store.generation == 2

    try:
        eventually(switched, timeout=20, interval=0.2, what="the store switched to the new model")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{workers.output()}") from None
    broken.refresh_from_db()
    assert broken.status == "failed"


def test_reembedded_chunks_carry_the_new_models_token_counts(acme):
    store = _store(acme)
    Chunk.objects.filter(vector_store=store).update(tokens=999)  # what the old model's tokenizer counted
    services.vector_store_embedding_change(store=store, embedding_model=SMALL_MODEL, actor=None)
    _reembed(store)
    chunks = list(Chunk.objects.filter(vector_store=store, generation=2))
    counted = run_in_own_loop(
        lambda: asyncio.gather(
            *(token_count_of(organization_id=acme.pk, model=SMALL_MODEL, text=chunk.text) for chunk in chunks)
        )
    )
    assert [chunk.tokens for chunk in chunks] == counted
    assert 999 not in counted
