"""Compute fixtures: a provider of any kind with a pool, a deployment and replicas on it."""

from __future__ import annotations

import pytest

from apps.compute.credentials import provider_credentials_set
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica


@pytest.fixture
def make_replica(db, org):
    """Build a replica of a fresh deployment on a provider of `kind` (one provider, pool and deployment per kind)."""

    def make(kind, *, config=None, credentials=None, engine_args=None, model_id="org/model", served="m", pool=None):
        provider, _ = Provider.objects.get_or_create(
            organization=org, name=f"{kind}-provider", defaults={"kind": kind, "config": config or {}}
        )
        if credentials:
            provider_credentials_set(provider=provider, credentials=credentials)
            provider.save()
        pool_fields = {"provider": provider, **(pool or {})}
        pool_obj, _ = ComputePool.objects.get_or_create(organization=org, name=f"{kind}-pool", defaults=pool_fields)
        deployment, _ = ModelDeployment.objects.get_or_create(
            organization=org,
            served_model_name=served,
            defaults={"pool": pool_obj, "name": served, "model_id": model_id, "engine_args": engine_args or {}},
        )
        return Replica.objects.create(deployment=deployment)

    return make
