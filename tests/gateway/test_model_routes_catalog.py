"""How the catalog turns model routes into chains of deployments: the weighted draw, the allow-list, fallbacks, and
the tenant boundary as it stands now (a platform deployment no longer shared drops out of a route)."""

from __future__ import annotations

from apps.gateway.catalog import Catalog
from apps.gateway.selectors import DeploymentRow, ModelRouteRow

ACME, GLOBEX = 1, 2


def row(pk: int, name: str, organization_id: int | None = ACME, shared_with: tuple[int, ...] = ()) -> DeploymentRow:
    return DeploymentRow(
        id=pk,
        organization_id=organization_id,
        served_model_name=name,
        model_id=name,
        created=0,
        price_input_per_mtok_micros=0,
        price_output_per_mtok_micros=0,
        connect_timeout_s=None,
        first_byte_timeout_s=None,
        idle_timeout_s=None,
        replicas=((pk * 10, "http://127.0.0.1:9", {}),),
        shared_with=shared_with,
    )


def route(splits, fallbacks=(), organization_id: int = ACME) -> ModelRouteRow:
    return ModelRouteRow(organization_id=organization_id, name="chat", created=0, splits=splits, fallbacks=fallbacks)


def names(chain) -> list[str]:
    return [deployment.served_model_name for deployment in chain]


def everything(_name: str) -> bool:
    return True


def test_the_draw_follows_the_weights_and_the_fallbacks_follow_the_draw():
    catalog = Catalog.from_rows([row(1, "v1"), row(2, "v2"), row(3, "hosted")], [route(((1, 90), (2, 10)), (3, 1))])
    split = catalog.served_for(ACME, "chat")

    assert names(split.chain(0.0, everything)) == ["v1", "hosted"]  # v1 drawn, then the fallbacks but v1
    assert names(split.chain(0.899, everything)) == ["v1", "hosted"]
    assert names(split.chain(0.9, everything)) == ["v2", "hosted", "v1"]
    assert names(split.chain(0.999, everything)) == ["v2", "hosted", "v1"]


def test_a_zero_weight_target_is_never_drawn():
    catalog = Catalog.from_rows([row(1, "v1"), row(2, "v2")], [route(((1, 0), (2, 5)))])

    assert {names(catalog.served_for(ACME, "chat").chain(d / 100, everything))[0] for d in range(100)} == {"v2"}


def test_only_deployments_the_key_may_use_are_drawn_or_fallen_back_to():
    catalog = Catalog.from_rows([row(1, "v1"), row(2, "v2"), row(3, "hosted")], [route(((1, 90), (2, 10)), (3,))])
    split = catalog.served_for(ACME, "chat")

    assert names(split.chain(0.0, lambda name: name != "v1")) == ["v2", "hosted"]
    assert names(split.chain(0.5, lambda name: name == "hosted")) == ["hosted"]
    assert split.chain(0.5, lambda name: False) == ()


def test_a_route_never_reaches_another_organisations_deployment_or_an_unshared_platform_one():
    rows = [row(1, "v1"), row(2, "theirs", GLOBEX), row(3, "platform-shared", None, (ACME,)), row(4, "platform", None)]
    catalog = Catalog.from_rows(rows, [route(((1, 1), (2, 1), (3, 1), (4, 1)), (2, 4, 3))])
    split = catalog.served_for(ACME, "chat")

    assert names(split.targets) == ["v1", "platform-shared"]
    assert names(split.fallbacks) == ["platform-shared"]
    assert catalog.served_for(GLOBEX, "chat") is None


def test_a_route_is_its_own_organisations_only_and_does_not_shadow_its_own_deployments():
    catalog = Catalog.from_rows([row(1, "v1")], [route(((1, 1),))])

    assert catalog.served_for(GLOBEX, "chat") is None
    assert catalog.served_for(ACME, "v1").served_model_name == "v1"
    assert [split.name for split in catalog.splits_for(ACME)] == ["chat"]


def test_answers_of_a_target_name_the_route_and_the_engine_gets_the_deployments_model():
    catalog = Catalog.from_rows([row(1, "v1")], [route(((1, 1),))])
    target = catalog.served_for(ACME, "chat").targets[0]

    assert target.upstream_model == "v1"
    assert (b'"model":"v1"', b'"model":"chat"') in target.model_renames
    assert target.replicas[0] is catalog.replicas[10]  # the same replica objects: load refreshes reach routes too
