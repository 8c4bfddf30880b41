"""A deployment's stream interval is set through the audited service from REST (and the console, see
tests/console), bounded, and reaches the gateway's catalog."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.audit.models import AuditEvent
from apps.compute import inventory_services
from apps.gateway.catalog import Catalog
from apps.gateway.selectors import deployment_rows_list
from inferia_runtime.errors import DomainRefusal
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ReplicaFactory


@pytest.fixture
def deployment(org):
    from apps.compute.models import ModelDeployment, Replica

    pool = ComputePoolFactory(organization=org, name="gpus")
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="chat", served_model_name="chat", state=ModelDeployment.State.READY
    )
    ReplicaFactory(deployment=deployment, state=Replica.State.READY, endpoint="http://10.0.0.5:8000")
    return deployment


def test_an_owner_sets_the_stream_interval_over_rest_and_it_is_audited(deployment, owner, as_user):
    client = as_user(owner)
    changed = client.patch(
        f"/api/deployments/{deployment.pk}/", {"stream_interval_ms": 25, "stream_interval_chunks": 4}, format="json"
    )
    assert changed.status_code == 200
    assert (changed.data["stream_interval_ms"], changed.data["stream_interval_chunks"]) == (25, 4)
    update = AuditEvent.objects.get(action="deployment.update")
    assert update.changes["stream_interval_chunks"] == {"before": 0, "after": 4}
    route = Catalog.from_rows(deployment_rows_list()).served_for(deployment.organization_id, "chat")
    assert (route.stream_interval_s, route.stream_interval_chunks) == (0.025, 4)


@pytest.mark.parametrize(
    "bad", [{"stream_interval_ms": 1001}, {"stream_interval_ms": -1}, {"stream_interval_chunks": 257}]
)
def test_a_stream_interval_out_of_bounds_is_refused_everywhere(deployment, owner, as_user, bad):
    refused = as_user(owner).patch(f"/api/deployments/{deployment.pk}/", bad, format="json")
    assert refused.status_code == 400
    assert set(refused.data) == set(bad)
    deployment.refresh_from_db()
    assert (deployment.stream_interval_ms, deployment.stream_interval_chunks) == (0, 0)
    with pytest.raises((DomainRefusal, ValidationError), match="stream_interval"):
        inventory_services.deployment_update(actor=owner, deployment=deployment, changes=bad)
