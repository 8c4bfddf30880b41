"""Knowledge test fixtures: each test's uploaded files in a folder of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.files.storage import storages

from tests.factories import OrganizationFactory, deployment_serving
from tests.kit.processes import TestProcess, sim_start


def _forget_storage() -> None:
    storages._storages.pop("knowledge", None)
    storages._backends = None


@pytest.fixture(autouse=True)
def knowledge_files(tmp_path, settings):
    """The `knowledge` storage in the test's temporary folder (Django caches storages: drop the cached one)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "knowledge": {"BACKEND": settings.STORAGES["knowledge"]["BACKEND"], "OPTIONS": {"location": str(tmp_path)}},
    }
    _forget_storage()
    yield tmp_path
    _forget_storage()


EMBED_MODEL = "kb-embed"


@pytest.fixture(scope="module")
def engine() -> Iterator[TestProcess]:
    """An inferia-sim engine serving the embedding model the knowledge tests use."""
    process = sim_start(models=(EMBED_MODEL,))
    yield process
    process.stop()


SMALL_MODEL, SMALL_DIMENSIONS = "kb-embed-small", 256


@pytest.fixture(scope="module")
def small_engine() -> Iterator[TestProcess]:
    """A second engine whose embedding model answers vectors of another size (a store changing model to it)."""
    process = sim_start("--embedding-dimensions", str(SMALL_DIMENSIONS), models=(SMALL_MODEL,))
    yield process
    process.stop()


@pytest.fixture
def organization(transactional_db, redis_cache, engine):
    """Acme, with a deployment of the embedding model on the engine (committed: the gateway reads it)."""
    organization = OrganizationFactory(name="Acme", slug="acme")
    deployment_serving(organization, EMBED_MODEL, [engine.url])
    return organization
