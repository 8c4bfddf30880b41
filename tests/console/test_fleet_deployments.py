"""The deployments pages' fleet settings: replica bounds editable and scaling within them, the deploy form offering
only the current organisation's pools, prices and timeouts, external deployments registered from the console, and
the playground and curl shortcuts. Every write is audited; every other organisation's object is refused."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.compute.models import DeploymentEvent, ModelDeployment
from apps.policies.models import Policy
from tests.factories import (
    ComputePoolFactory,
    MembershipFactory,
    ModelDeploymentFactory,
    ProviderFactory,
    TeamFactory,
)


@pytest.fixture(autouse=True)
def _no_worker(monkeypatch, redis_cache):
    """Writes ask the worker to reconcile after commit; no worker runs here."""
    monkeypatch.setattr("apps.compute.services.enqueue_reconcile", lambda deployment_id: None)
    monkeypatch.setattr("apps.compute.inventory_services.enqueue_reconcile", lambda deployment_id: None)


def _deployment(org, name="chat-small", replicas=1, min_replicas=1, max_replicas=1):
    provider = ProviderFactory(organization=org, name=f"sim-{name}")
    pool = ComputePoolFactory(organization=org, provider=provider, name=f"pool-{name}", max_nodes=8)
    return ModelDeploymentFactory(
        organization=org, pool=pool, name=name, model_id="sim/tiny", state=ModelDeployment.State.READY,
        min_replicas=min_replicas, max_replicas=max_replicas, desired_replicas=replicas,
    )  # fmt: skip


def _settings(deployment, **values):
    """The settings form's fields as the page posts them, with the deployment's current values as defaults."""
    form = {"min_replicas": deployment.min_replicas, "max_replicas": deployment.max_replicas}
    form.update(values)
    return form


# Replica bounds --------------------------------------------------------------------------------------------------


def test_the_owner_widens_the_bounds_then_scales_within_them(client, owner, org):
    deployment = _deployment(org)  # created min = max = 1, as the deploy form used to
    client.force_login(owner)
    page = client.get(f"/console/deployments/{deployment.pk}/").content.decode()
    assert 'data-testid="deployment-settings-form"' in page
    response = client.post(f"/console/deployments/{deployment.pk}/settings/", _settings(deployment, max_replicas=6))
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert (deployment.min_replicas, deployment.max_replicas) == (1, 6)
    client.post(f"/console/deployments/{deployment.pk}/scale/", {"replicas": 5})
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 5
    update = AuditEvent.objects.get(action="deployment.update", actor_user_id=owner.pk)
    assert update.changes["max_replicas"] == {"before": 1, "after": 6}


def test_narrowing_the_bounds_brings_the_desired_count_inside(client, owner, org):
    deployment = _deployment(org, replicas=4, min_replicas=1, max_replicas=8)
    client.force_login(owner)
    client.post(
        f"/console/deployments/{deployment.pk}/settings/", _settings(deployment, min_replicas=0, max_replicas=2)
    )
    deployment.refresh_from_db()
    assert (deployment.min_replicas, deployment.max_replicas, deployment.desired_replicas) == (0, 2, 2)


@pytest.mark.parametrize(
    ("low", "high"),
    [(3, 2), (-1, 2), (0, 65), (0, 100000), ("", 2), ("two", 4)],
)
def test_bounds_out_of_order_or_out_of_range_are_refused(client, owner, org, low, high):
    deployment = _deployment(org, replicas=2, min_replicas=1, max_replicas=4)
    client.force_login(owner)
    response = client.post(
        f"/console/deployments/{deployment.pk}/settings/", _settings(deployment, min_replicas=low, max_replicas=high),
        follow=True,
    )  # fmt: skip
    assert response.status_code == 200
    assert 'class="notice notice-error"' in response.content.decode()
    deployment.refresh_from_db()
    assert (deployment.min_replicas, deployment.max_replicas) == (1, 4)
    assert not AuditEvent.objects.filter(action="deployment.update").exists()


def test_the_service_refuses_bounds_beyond_the_cap(owner, org):
    from apps.compute.inventory_services import REPLICAS_CAP, deployment_update
    from inferia_runtime.errors import DomainRefusal

    deployment = _deployment(org)
    with pytest.raises(DomainRefusal):
        deployment_update(deployment=deployment, changes={"max_replicas": REPLICAS_CAP + 1}, actor=owner)


def test_bounds_of_another_organisations_deployment_cannot_be_changed(client, outsider, viewer, org):
    deployment = _deployment(org)
    client.force_login(outsider)
    assert client.post(f"/console/deployments/{deployment.pk}/settings/", _settings(deployment)).status_code == 404
    client.force_login(viewer)
    page = client.get(f"/console/deployments/{deployment.pk}/").content.decode()
    assert 'data-testid="deployment-settings-form"' not in page
    response = client.post(f"/console/deployments/{deployment.pk}/settings/", _settings(deployment, max_replicas=9))
    assert response.status_code == 403
    deployment.refresh_from_db()
    assert deployment.max_replicas == 1


# The deploy form's pools -----------------------------------------------------------------------------------------


@pytest.fixture
def owner_of_both(owner, other_org, roles):
    """The owner of Acme who also owns Globex: the deploy form used to offer both organisations' pools at once."""
    MembershipFactory(user=owner, organization=other_org, role=roles["owner"])
    return owner


def test_the_deploy_form_offers_only_the_current_organisations_pools(client, owner_of_both, org, other_org):
    ComputePoolFactory(organization=org, name="acme-gpus")
    ComputePoolFactory(organization=other_org, name="globex-gpus")
    client.force_login(owner_of_both)
    acme = client.get(f"/console/deployments/?org={org.slug}").content.decode()
    assert "acme-gpus" in acme
    assert "globex-gpus" not in acme
    assert f'name="organization" value="{org.pk}"' in acme
    globex = client.get(f"/console/deployments/?org={other_org.slug}").content.decode()
    assert "globex-gpus" in globex
    assert "acme-gpus" not in globex


def test_a_post_naming_another_organisations_pool_is_refused(client, owner, org, other_org):
    foreign = ComputePoolFactory(organization=other_org, name="globex-gpus")
    client.force_login(owner)
    new = {
        "organization": org.pk,
        "pool": foreign.pk,
        "served_model_name": "stolen",
        "model_id": "sim/x",
        "replicas": 1,
    }
    response = client.post("/console/deployments/new/", new, follow=True)
    assert "Choose a pool of that organisation" in response.content.decode()
    assert not ModelDeployment.objects.filter(served_model_name="stolen").exists()
    new["organization"] = other_org.pk  # and naming the other organisation itself: not the owner's to add to
    assert client.post("/console/deployments/new/", new).status_code == 403
    assert not ModelDeployment.objects.filter(served_model_name="stolen").exists()


# Prices and timeouts ---------------------------------------------------------------------------------------------


def test_the_owner_sets_prices_per_million_tokens_and_timeouts(client, owner, org):
    deployment = _deployment(org)
    client.force_login(owner)
    form = _settings(
        deployment, price_input="0.15", price_output="2.5", connect_timeout_s="3", first_byte_timeout_s="",
        idle_timeout_s="120",
    )  # fmt: skip
    assert client.post(f"/console/deployments/{deployment.pk}/settings/", form).status_code == 302
    deployment.refresh_from_db()
    assert deployment.price_input_per_mtok_micros == 150_000
    assert deployment.price_output_per_mtok_micros == 2_500_000
    assert (deployment.connect_timeout_s, deployment.first_byte_timeout_s, deployment.idle_timeout_s) == (3, None, 120)
    update = AuditEvent.objects.get(action="deployment.update")
    assert update.changes["price_output_per_mtok_micros"] == {"before": 0, "after": 2_500_000}
    page = client.get(f"/console/deployments/{deployment.pk}/").content.decode()
    assert 'value="0.15"' in page
    assert 'value="2.50"' in page
    assert "output $2.50" in page  # the price as the money filter shows it


def test_the_owner_sets_a_stream_interval_and_it_is_audited(client, owner, org):
    deployment = _deployment(org)
    client.force_login(owner)
    form = _settings(deployment, stream_interval_ms="40", stream_interval_chunks="8")
    assert client.post(f"/console/deployments/{deployment.pk}/settings/", form).status_code == 302
    deployment.refresh_from_db()
    assert (deployment.stream_interval_ms, deployment.stream_interval_chunks) == (40, 8)
    update = AuditEvent.objects.get(action="deployment.update")
    assert update.changes["stream_interval_ms"] == {"before": 0, "after": 40}
    page = client.get(f"/console/deployments/{deployment.pk}/").content.decode()
    assert 'name="stream_interval_ms" min="0" max="1000" step="1" value="40"' in page
    # Emptied: off again.
    form = _settings(deployment, stream_interval_ms="", stream_interval_chunks="")
    assert client.post(f"/console/deployments/{deployment.pk}/settings/", form).status_code == 302
    deployment.refresh_from_db()
    assert (deployment.stream_interval_ms, deployment.stream_interval_chunks) == (0, 0)


@pytest.mark.parametrize(
    "bad",
    [
        {"stream_interval_ms": "1001"},
        {"stream_interval_ms": "-1"},
        {"stream_interval_chunks": "257"},
        {"price_input": "-1"},
        {"price_input": "0.0000001"},  # finer than a micro-unit per million tokens
        {"price_output": "1e9"},
        {"price_output": "NaN"},
        {"price_output": "2000000"},  # beyond the cap per million tokens
        {"connect_timeout_s": "0"},
        {"idle_timeout_s": "100000"},
        {"first_byte_timeout_s": "inf"},
    ],
)
def test_prices_and_timeouts_out_of_range_are_refused(client, owner, org, bad):
    deployment = _deployment(org)
    client.force_login(owner)
    response = client.post(f"/console/deployments/{deployment.pk}/settings/", _settings(deployment, **bad), follow=True)
    assert 'class="notice notice-error"' in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.price_input_per_mtok_micros == 0
    assert deployment.price_output_per_mtok_micros == 0
    assert deployment.connect_timeout_s is None
    assert (deployment.stream_interval_ms, deployment.stream_interval_chunks) == (0, 0)
    assert not AuditEvent.objects.filter(action="deployment.update").exists()


def test_the_service_refuses_a_negative_price_or_timeout(owner, org):
    from apps.compute.inventory_services import deployment_update
    from inferia_runtime.errors import DomainRefusal

    deployment = _deployment(org)
    with pytest.raises(DomainRefusal):
        deployment_update(deployment=deployment, changes={"connect_timeout_s": -1.0}, actor=owner)
    with pytest.raises(DomainRefusal):
        deployment_update(deployment=deployment, changes={"price_input_per_mtok_micros": -5}, actor=owner)


# Shortcuts: the playground and curl ------------------------------------------------------------------------------


def test_the_page_links_to_the_playground_on_this_model_and_offers_a_curl_command(client, viewer, org):
    import html as html_lib
    import shlex

    deployment = _deployment(org, name="chat-small")
    client.force_login(viewer)  # reading, not changing: a viewer gets both
    page = client.get(f"/console/deployments/{deployment.pk}/").content.decode()
    assert f'href="/console/playground/?org={org.slug}&amp;model=chat-small"' in page
    assert 'data-copy-target="#curl-command"' in page
    start = page.index('id="curl-command"')
    command = html_lib.unescape(page[page.index(">", start) + 1 : page.index("</pre>", start)])
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:2] == ["curl", "http://testserver/v1/chat/completions"]
    assert "Authorization: Bearer $INFERIA_API_KEY" in words
    assert '"model": "chat-small"' in words[words.index("-d") + 1]


def test_a_model_name_with_quotes_stays_one_shell_word(client, owner, org):
    import html as html_lib
    import json
    import shlex

    deployment = _deployment(org, name="it's-a-model")
    client.force_login(owner)
    page = client.get(f"/console/deployments/{deployment.pk}/").content.decode()
    start = page.index('id="curl-command"')
    command = html_lib.unescape(page[page.index(">", start) + 1 : page.index("</pre>", start)])
    words = shlex.split(command.replace("\\\n", " "))
    assert json.loads(words[words.index("-d") + 1])["model"] == "it's-a-model"


# External deployments --------------------------------------------------------------------------------------------

UPSTREAM_KEY = "sk-upstream-0123456789abcdef"


def _external(org, **values):
    form = {"organization": org.pk, "base_url": "https://8.8.8.8/v1", "model_id": "meta/llama-3-8b",
            "served_model_name": "llama-ext", "api_key": UPSTREAM_KEY}  # fmt: skip
    form.update(values)
    return form


def test_the_owner_registers_an_external_deployment_with_its_key_encrypted(client, owner, org):
    from apps.compute.credentials import credentials_decrypt
    from apps.compute.models import Provider

    client.force_login(owner)
    assert 'data-testid="external-create-form"' in client.get("/console/deployments/").content.decode()
    response = client.post("/console/deployments/external/", _external(org))
    deployment = ModelDeployment.objects.select_related("pool__provider").get(served_model_name="llama-ext")
    assert response["Location"] == f"/console/deployments/{deployment.pk}/"
    assert deployment.organization_id == org.pk
    assert deployment.model_id == "meta/llama-3-8b"
    provider = deployment.pool.provider
    assert provider.kind == Provider.Kind.EXTERNAL
    assert provider.config["base_urls"][0].startswith("https://8.8.8.8")
    assert UPSTREAM_KEY not in provider.credentials_encrypted
    assert credentials_decrypt(provider.credentials_encrypted) == {"api_key": UPSTREAM_KEY}
    events = AuditEvent.objects.filter(actor_user_id=owner.pk)
    assert {"provider.create", "pool.create", "deployment.create"} <= set(events.values_list("action", flat=True))
    assert all(UPSTREAM_KEY not in str(e.changes) for e in events)
    assert UPSTREAM_KEY not in client.get(response["Location"]).content.decode()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"base_url": "http://169.254.169.254/latest"}, "non-public address"),
        ({"base_url": "file:///etc/passwd"}, "Base URL"),
        ({"model_id": ""}, "Model name"),
        ({"model_id": "a" * 301}, "Model name"),
        ({"served_model_name": "bad name!"}, "Served name"),
        ({"api_key": "x\x00y"}, "Upstream API key"),
    ],
)
def test_an_unsafe_or_malformed_registration_is_refused_with_a_clear_message(client, owner, org, values, message):
    client.force_login(owner)
    response = client.post("/console/deployments/external/", _external(org, **values), follow=True)
    assert message in response.content.decode()
    assert not ModelDeployment.objects.exists()
    assert not AuditEvent.objects.filter(action="provider.create").exists()


def test_registering_into_another_organisation_is_refused(client, owner, viewer, org, other_org):
    client.force_login(owner)
    assert client.post("/console/deployments/external/", _external(other_org)).status_code == 403
    client.force_login(viewer)
    assert client.post("/console/deployments/external/", _external(org)).status_code == 403
    assert not ModelDeployment.objects.exists()


# Capacity and GPU quotas -------------------------------------------------------------------------------------------


def test_a_scale_past_the_pool_or_the_teams_gpu_quota_shows_why_and_changes_nothing(client, owner, org):
    deployment = _deployment(org, max_replicas=12)
    team = TeamFactory(organization=org, name="Research")
    Policy.objects.create(organization=org, team=team, gpus_max=2)
    client.force_login(owner)

    client.post(f"/console/deployments/{deployment.pk}/settings/", _settings(deployment, team=team.pk))
    past_quota = client.post(f"/console/deployments/{deployment.pk}/scale/", {"replicas": 3}, follow=True)
    past_pool = client.post(f"/console/deployments/{deployment.pk}/scale/", {"replicas": 9}, follow=True)

    deployment.refresh_from_db()
    assert deployment.team == team
    assert deployment.desired_replicas == 1
    assert (
        "Team &#x27;Research&#x27;&#x27;s GPU quota is 2 and its other deployments use 0" in past_quota.content.decode()
    )
    assert "Pool &#x27;pool-chat-small&#x27; has 8 node(s)" in past_pool.content.decode()
    assert 'data-testid="deployment-team-select"' in past_pool.content.decode()


def test_a_team_of_another_organisation_cannot_be_chosen(client, owner, org, other_org):
    deployment = _deployment(org)
    foreign = TeamFactory(organization=other_org)
    client.force_login(owner)

    page = client.post(
        f"/console/deployments/{deployment.pk}/settings/", _settings(deployment, team=foreign.pk), follow=True
    )

    deployment.refresh_from_db()
    assert deployment.team is None
    assert "Choose a team of the deployment&#x27;s organisation." in page.content.decode()
    assert not DeploymentEvent.objects.filter(deployment=deployment).exists()
