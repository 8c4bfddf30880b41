"""Money on the management pages: budgets are typed in the currency ("5" is $5.00, stored as 5,000,000 micro-units)
on the policy and key forms, refused with a reason when they are not amounts, warned about when one request would
exceed them, and shown in the currency on lists, key pages, usage and the CSV export. A key created with limits gets
its policy in the same audited transaction, and its page shows every level combined."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from apps.audit.models import AuditEvent
from apps.keys.models import ApiKey
from apps.policies.models import Policy
from apps.policies.serializers import PolicyOut, PolicyUpdateIn
from apps.policies.services import api_key_create_with_policy

pytestmark = pytest.mark.django_db


def _team_policy_post(client, acme, **fields):
    acme.policy.delete()  # the tenant's team policy: one policy per team
    body = {"organization": acme.org.pk, "level": "team", "team": acme.team.pk, "enabled": "on", **fields}
    return client.post("/console/policies/new/", body, follow=True)


def _notices(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_a_budget_of_5_is_five_units_of_the_currency_and_is_listed_as_such(acme, owner, signed_in):
    client = signed_in(owner)
    _team_policy_post(client, acme, budget_per_day="5", budget_per_month="120.50")

    policy = Policy.objects.get(team=acme.team)
    assert (policy.budget_per_day_micros, policy.budget_per_month_micros) == (5_000_000, 120_500_000)
    listed = client.get("/console/policies/").content.decode()
    assert "$5.00/day" in listed
    assert "$120.50/month" in listed


def test_the_edit_form_shows_the_budget_as_an_amount_and_saves_what_is_typed(acme, owner, signed_in):
    client = signed_in(owner)
    Policy.objects.filter(pk=acme.policy.pk).update(budget_per_day_micros=5_000_000)
    page = client.get(f"/console/policies/{acme.policy.pk}/").content.decode()
    assert re.search(r'name="budget_per_day" value="5.00"', page)
    assert "Budget per day (USD)" in page

    client.post(f"/console/policies/{acme.policy.pk}/", {"enabled": "on", "budget_per_day": "0.000001"})
    acme.policy.refresh_from_db()
    assert acme.policy.budget_per_day_micros == 1
    client.post(f"/console/policies/{acme.policy.pk}/", {"enabled": "on", "budget_per_day": ""})
    acme.policy.refresh_from_db()
    assert acme.policy.budget_per_day_micros is None


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("-5", "cannot be negative"),
        ("NaN", "5 or 5.00"),
        ("1e9", "5 or 5.00"),
        ("5,00", "5 or 5.00"),
        ("0.0000001", "At most 6 decimal places"),
        ("99999999999999", "At most $1,000,000,000,000.00"),
        ("5\x00", "5 or 5.00"),
        ("1" * 41, "5 or 5.00"),
    ],
)
def test_an_amount_that_is_not_money_is_a_form_error_and_saves_nothing(acme, owner, signed_in, typed, why):
    client = signed_in(owner)
    created = _team_policy_post(client, acme, budget_per_day=typed)
    assert any("budget_per_day" in notice and why in notice for notice in _notices(created)), _notices(created)
    assert not Policy.objects.filter(team=acme.team).exists()

    org_policy = Policy.objects.create(organization=acme.org, budget_per_day_micros=1)
    edited = client.post(f"/console/policies/{org_policy.pk}/", {"budget_per_day": typed}, follow=True)
    assert any(why in notice for notice in _notices(edited))
    org_policy.refresh_from_db()
    assert org_policy.budget_per_day_micros == 1


def test_the_old_micro_unit_field_is_no_longer_read_as_money(acme, owner, signed_in):
    _team_policy_post(signed_in(owner), acme, budget_per_day_micros="5")
    assert Policy.objects.get(team=acme.team).budget_per_day_micros is None


def test_a_budget_below_one_reference_request_saves_with_a_warning_that_explains_it(acme, owner, signed_in):
    # $10 per 1M prompt tokens and $30 per 1M completion tokens: 1,000 + 500 tokens cost $0.025.
    type(acme.deployment).objects.filter(pk=acme.deployment.pk).update(
        price_input_per_mtok_micros=10_000_000, price_output_per_mtok_micros=30_000_000
    )
    created = _team_policy_post(signed_in(owner), acme, budget_per_day="0.01", budget_per_month="100")

    assert Policy.objects.get(team=acme.team).budget_per_day_micros == 10_000
    warnings = [m for m in created.context["messages"] if m.level_tag == "warning"]
    assert len(warnings) == 1
    text = str(warnings[0])
    assert "budget per day ($0.01)" in text
    assert "budget per month" not in text
    assert "1,000 prompt and 500 completion tokens" in text
    assert "acme-model ($0.025)" in text


def test_no_warning_for_a_budget_that_covers_a_request_nor_from_another_organisations_prices(
    acme, globex, owner, signed_in
):
    type(acme.deployment).objects.filter(pk=globex.deployment.pk).update(
        price_input_per_mtok_micros=10**12, price_output_per_mtok_micros=10**12
    )
    created = _team_policy_post(signed_in(owner), acme, budget_per_day="5")
    assert not [m for m in created.context["messages"] if m.level_tag == "warning"]


def test_the_api_keeps_micro_units_and_documents_them():
    for serializer in (PolicyUpdateIn(), PolicyOut()):
        help_text = str(serializer.fields["budget_per_day_micros"].help_text)
        assert "micro-units" in help_text
        assert "5000000 is 5.00" in help_text


# --- keys ---------------------------------------------------------------------------------------------------------


def _key_post(client, acme, **fields):
    body = {"organization": acme.org.pk, "name": "limited", "scopes": ["inference"], **fields}
    return client.post("/console/keys/new/", body, follow=True)


def test_a_key_is_created_with_its_models_rate_limits_and_budget_in_one_audited_step(acme, owner, signed_in):
    response = _key_post(
        signed_in(owner),
        acme,
        team=acme.team.pk,
        allowed_models="acme-model, llama-*",
        requests_per_minute="30",
        tokens_per_minute="20000",
        budget_per_day="5",
    )

    key = ApiKey.objects.get(name="limited")
    assert response.redirect_chain[-1][0] == "/console/keys/secret/"
    assert key.allowed_models == ["acme-model", "llama-*"]
    policy = Policy.objects.get(api_key=key)
    assert (policy.requests_per_minute, policy.tokens_per_minute) == (30, 20_000)
    assert (policy.budget_per_day_micros, policy.budget_per_month_micros) == (5_000_000, None)
    actions = set(
        AuditEvent.objects.filter(target_id__in=[str(key.pk), str(policy.pk)]).values_list("action", flat=True)
    )
    assert {"key.create", "policy.create"} <= actions


def test_a_key_without_limits_gets_no_policy(acme, owner, signed_in):
    _key_post(signed_in(owner), acme)
    assert not Policy.objects.filter(api_key__name="limited").exists()
    assert ApiKey.objects.filter(name="limited").exists()


def test_a_key_with_a_budget_that_is_not_money_is_not_created(acme, owner, signed_in):
    response = _key_post(signed_in(owner), acme, budget_per_day="-1")
    assert any("cannot be negative" in notice for notice in _notices(response))
    assert not ApiKey.objects.filter(name="limited").exists()


def test_a_member_who_may_not_set_policies_cannot_give_their_key_limits(acme, member, signed_in):
    client = signed_in(member)
    refused = _key_post(client, acme, budget_per_day="5")
    assert any("may not set policies" in notice for notice in _notices(refused))
    assert not ApiKey.objects.filter(name="limited").exists()
    assert 'name="budget_per_day"' not in client.get("/console/keys/").content.decode()


def test_a_refused_policy_issues_no_key(acme, globex, owner):
    with pytest.raises(ValidationError):
        api_key_create_with_policy(
            actor=owner,
            organization=acme.org,
            name="half",
            scopes=["inference"],
            policy_fields={"budget_per_day_micros": 5_000_000, "guardrail_profile": globex.guardrail_profile},
        )
    assert not ApiKey.objects.filter(name="half").exists()
    assert not AuditEvent.objects.filter(action="key.create", changes__name="half").exists()


def test_the_key_page_shows_every_level_combined_and_the_spend_in_the_currency(acme, owner, signed_in):
    client = signed_in(owner)
    Policy.objects.create(organization=acme.org, budget_per_day_micros=10_000_000, requests_per_minute=100)
    Policy.objects.filter(pk=acme.policy.pk).update(budget_per_day_micros=5_000_000)  # team: rpm 600, $5/day
    _key_post(client, acme, team=acme.team.pk, requests_per_minute="30", budget_per_day="7")
    key = ApiKey.objects.get(name="limited")

    page = client.get(f"/console/keys/{key.pk}/").content.decode()
    section = page[page.index('data-testid="key-effective-policy"') :]
    rpm = re.search(r"Requests per minute</th>(.*?)</tr>", section, re.S).group(1)
    assert [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", rpm)] == [
        "100", "600", "30", "30"
    ]  # fmt: skip
    budget = re.search(r"Budget per day</th>(.*?)</tr>", section, re.S).group(1)
    assert [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", budget)] == [
        "$10.00", "$5.00", "$7.00", "$5.00"
    ]  # fmt: skip

    owners_key = client.get(f"/console/keys/{acme.key.key.pk}/").content.decode()
    assert re.search(r'data-testid="key-spend">\$0\.0003<', owners_key)  # the tenant's one request: 300 micro-units


def test_another_organisations_key_page_is_404(acme, globex, owner, signed_in):
    assert signed_in(owner).get(f"/console/keys/{globex.key.key.pk}/").status_code == 404


def test_usage_and_its_export_show_money_in_the_currency(acme, owner, signed_in):
    client = signed_in(owner)
    page = client.get("/console/usage/").content.decode()
    assert "$0.0003" in page
    with override_settings(INFERIA_CURRENCY="EUR"):
        export = b"".join(client.get("/console/usage/export.csv").streaming_content).decode()
        assert "€0.0003" in client.get("/console/usage/").content.decode()
    header, row = export.splitlines()[:2]
    assert "cost_eur" in header.split(",")
    assert "cost_micros" not in header
    assert row.split(",")[header.split(",").index("cost_eur")] == "0.0003"


def test_a_key_created_with_a_budget_below_one_request_is_issued_with_the_warning(acme, owner, signed_in):
    type(acme.deployment).objects.filter(pk=acme.deployment.pk).update(
        price_input_per_mtok_micros=10_000_000, price_output_per_mtok_micros=30_000_000
    )
    response = _key_post(signed_in(owner), acme, budget_per_month="0.02")

    assert Policy.objects.get(api_key__name="limited").budget_per_month_micros == 20_000
    warnings = [str(m) for m in response.context["messages"] if m.level_tag == "warning"]
    assert len(warnings) == 1
    assert "budget per month ($0.02)" in warnings[0]
    assert "acme-model ($0.025)" in warnings[0]
