"""Keys issued for vector stores before the `knowledge` purpose existed are marked with it by the migration, and no
other key is."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.keys.models import ApiKey
from apps.keys.services import api_key_create
from tests.factories import OrganizationFactory

BEFORE = [("knowledge", "0001_initial"), ("keys", "0006_key_vector_stores")]


@pytest.mark.django_db(transaction=True)
def test_existing_store_keys_are_marked_knowledge():
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate(BEFORE)
        org = OrganizationFactory(name="Acme", slug="acme")
        store_key = api_key_create(organization=org, name="Knowledge store vs_old", scopes=["inference"]).key
        lookalike = api_key_create(organization=org, name="Knowledge store vs_none", scopes=["inference"]).key
        # The model as it was at that migration: today's has columns that later migrations add.
        store_model = executor.loader.project_state(BEFORE).apps.get_model("knowledge", "VectorStore")
        store_model.objects.create(
            organization_id=org.pk, public_id="vs_old", embedding_model="m", dimensions=8, ingest_key_id=store_key.pk
        )
        assert ApiKey.objects.get(pk=store_key.pk).purpose == ""
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaves)

    assert ApiKey.objects.get(pk=store_key.pk).purpose == ApiKey.Purpose.KNOWLEDGE
    assert ApiKey.objects.get(pk=lookalike.pk).purpose == ApiKey.Purpose.APPLICATION
