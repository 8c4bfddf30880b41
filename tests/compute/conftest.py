"""Compute fixtures: a provider of any kind with a pool, a deployment and replicas on it (from tests/factories.py)."""

from __future__ import annotations

import pytest

from apps.compute.models import ComputePool, ModelDeployment, Provider
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ProviderFactory, ReplicaFactory


@pytest.fixture
def make_replica(db, org):
    """Build a replica of a fresh deployment on a provider of `kind` (one provider, pool and deployment per kind)."""

    def make(kind, *, config=None, credentials=None, engine_args=None, model_id="org/model", served="m", pool=None):
        provider = Provider.objects.filter(organization=org, name=f"{kind}-provider").first() or ProviderFactory(
            organization=org, name=f"{kind}-provider", kind=kind, config=config or {}, credentials=credentials
        )
        pool_obj = ComputePool.objects.filter(organization=org, name=f"{kind}-pool").first() or ComputePoolFactory(
            organization=org, provider=provider, name=f"{kind}-pool", **(pool or {})
        )
        deployment = ModelDeployment.objects.filter(
            organization=org, served_model_name=served
        ).first() or ModelDeploymentFactory(
            organization=org, pool=pool_obj, name=served, model_id=model_id, engine_args=engine_args or {}
        )
        return ReplicaFactory(deployment=deployment)

    return make
