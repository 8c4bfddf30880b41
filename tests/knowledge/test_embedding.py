"""Knowledge embeds through Inferia's own gateway, in-process: the organisation's key, routing and metering apply."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from apps.knowledge import embedding
from apps.knowledge.embedding import (
    EmbeddingError,
    embedding_dimensions_probe,
    embeddings_create,
    run_in_own_loop,
)
from tests.factories import OrganizationFactory, api_key_issue
from tests.knowledge.conftest import EMBED_MODEL


@pytest.fixture
def served(organization):
    return organization, api_key_issue(organization=organization).secret


def test_it_embeds_through_the_gateway_with_the_keys_model(served):
    _, secret = served
    embedded = run_in_own_loop(lambda: embeddings_create(secret=secret, model=EMBED_MODEL, inputs=["one", "two"]))
    assert [len(vector) for vector in embedded.vectors] == [384, 384]
    assert embedded.vectors[0] != embedded.vectors[1]
    assert embedded.prompt_tokens > 0


def test_it_asks_the_model_its_dimensions(served):
    _, secret = served
    assert run_in_own_loop(lambda: embedding_dimensions_probe(secret=secret, model=EMBED_MODEL)) == 384


def test_a_model_the_organisation_does_not_serve_is_the_gateways_404(served):
    _, secret = served
    with pytest.raises(EmbeddingError) as refused:
        run_in_own_loop(lambda: embeddings_create(secret=secret, model="nowhere", inputs=["x"]))
    assert refused.value.status == 404
    assert refused.value.code == "model_not_found"


def test_another_organisations_model_is_not_reachable_with_its_own_key(served):
    outsider = api_key_issue(organization=OrganizationFactory(name="Globex", slug="globex")).secret
    with pytest.raises(EmbeddingError) as refused:
        run_in_own_loop(lambda: embeddings_create(secret=outsider, model=EMBED_MODEL, inputs=["x"]))
    assert refused.value.status == 404


def test_a_key_without_the_inference_scope_is_refused(served):
    organization, _ = served
    reader = api_key_issue(organization=organization, scopes=("read",)).secret
    with pytest.raises(EmbeddingError) as refused:
        run_in_own_loop(lambda: embeddings_create(secret=reader, model=EMBED_MODEL, inputs=["x"]))
    assert refused.value.status == 403


def test_a_task_left_behind_that_will_not_stop_does_not_hold_up_the_caller(db, monkeypatch):
    # Whatever the work leaves running in its loop (a listener, a reload) is cancelled at the end; one that does not
    # stop when cancelled is given up after a bound, instead of holding the job (or the request) forever.
    monkeypatch.setattr(embedding, "LEFTOVER_TASKS_TIMEOUT_S", 0.5, raising=False)
    release = threading.Event()

    async def stubborn() -> None:
        give_up = time.monotonic() + 20  # without the bound, the caller would wait this long
        while not release.is_set() and time.monotonic() < give_up:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    async def work() -> str:
        asyncio.get_running_loop().create_task(stubborn())
        return "done"

    started = time.monotonic()
    try:
        assert embedding.run_in_own_loop(work) == "done"
        assert time.monotonic() - started < 10
    finally:
        release.set()
