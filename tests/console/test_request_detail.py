"""A request's detail page: its ids, outcome and error, key, team, deployment and replica, guardrails, timings,
tokens and cost, and its captured prompt and answer while they are kept; reached from the usage list, the dashboard's
errors and a key's recent requests; another organisation's request is a 404."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.template import Context, Template
from django.utils import timezone

from apps.usage.models import RequestCapture, UsageRecord

pytestmark = pytest.mark.django_db


def _url(record: UsageRecord) -> str:
    return f"/console/usage/requests/{record.request_id}/"


def _failed(
    tenant, *, code="model_not_found", message="The model 'nope' does not exist or you do not have access to it."
):
    return UsageRecord.objects.create(
        request_id=uuid.uuid4().hex,
        client_request_id="caller-42",
        started_at=timezone.now(),
        organization=tenant.org,
        team=tenant.team,
        api_key=tenant.key.key,
        endpoint="chat.completions",
        model="nope",
        status_code=404,
        outcome=UsageRecord.Outcome.ERROR,
        error_code=code,
        error_message=message,
        latency_ms=3.2,
    )


def test_the_detail_shows_what_the_request_used_and_how_it_went(acme, owner, signed_in):
    record = acme.usage
    record.client_request_id = "my-trace-7"
    record.ttft_ms = 41.6
    record.cost_micros = 123
    record.latency_ms = 87.3
    record.guardrails = [{"category": "email", "action": "redact", "count": 2}]
    record.save()
    page = signed_in(owner).get(_url(record))
    html = page.content.decode()
    assert page.status_code == 200
    assert record.request_id in html
    assert 'data-testid="request-client-id">my-trace-7<' in html
    assert 'data-testid="request-ttft">42 ms<' in html
    assert 'data-testid="request-latency">87 ms<' in html
    assert 'data-testid="request-prompt-tokens">10<' in html
    assert 'data-testid="request-completion-tokens">20<' in html
    assert 'data-testid="request-cost">$0.000123<' in html
    assert acme.key.key.name in html
    assert acme.team.name in html
    assert acme.deployment.name in html
    assert f"#{acme.replica.pk}" in html
    assert "email: redact \N{MULTIPLICATION SIGN}2" in html
    assert 'data-testid="request-no-capture"' in html
    assert acme.replica.endpoint not in html  # where a replica listens stays inside the platform


def test_a_failed_request_says_why(acme, owner, signed_in):
    record = _failed(acme)
    html = signed_in(owner).get(_url(record)).content.decode()
    assert 'data-testid="request-error"' in html
    assert "HTTP 404" in html
    assert "model_not_found" in html
    assert "The model &#x27;nope&#x27; does not exist" in html


def test_another_organisations_request_is_404(acme, globex, owner, outsider, signed_in):
    assert signed_in(owner).get(_url(globex.usage)).status_code == 404
    assert signed_in(outsider).get(_url(acme.usage)).status_code == 404
    assert signed_in(outsider).get(_url(globex.usage)).status_code == 200


def test_an_unknown_or_hostile_id_is_404(acme, owner, signed_in):
    client = signed_in(owner)
    assert client.get("/console/usage/requests/no-such-request/").status_code == 404
    assert client.get("/console/usage/requests/" + "a" * 500 + "/").status_code == 404
    assert client.get("/console/usage/requests/%00/").status_code == 404


def test_signing_in_is_required(acme, client):
    response = client.get(_url(acme.usage))
    assert response.status_code == 302
    assert "/console/login/" in response["Location"]


def test_a_kept_capture_shows_until_its_retention_ends(acme, owner, signed_in):
    capture = RequestCapture.objects.create(
        usage_record=acme.usage,
        organization=acme.org,
        team=acme.team,
        prompt="user: write to [EMAIL] <b>now</b>",
        answer="Sure.",
        expires_at=timezone.now() + timedelta(days=1),
    )
    client = signed_in(owner)
    html = client.get(_url(acme.usage)).content.decode()
    assert "user: write to [EMAIL] &lt;b&gt;now&lt;/b&gt;" in html  # escaped, never markup
    assert 'data-testid="request-answer">Sure.<' in html
    capture.expires_at = timezone.now() - timedelta(seconds=1)
    capture.save()
    html = client.get(_url(acme.usage)).content.decode()
    assert "[EMAIL]" not in html
    assert 'data-testid="request-no-capture"' in html


def test_the_detail_runs_a_fixed_number_of_queries(acme, owner, signed_in, django_assert_max_num_queries):
    client = signed_in(owner)
    client.get(_url(acme.usage))
    with django_assert_max_num_queries(12):
        assert client.get(_url(acme.usage)).status_code == 200


def test_usage_rows_link_to_the_detail_and_failed_rows_say_why(acme, owner, signed_in):
    record = _failed(acme, message="x" * 300)
    html = signed_in(owner).get("/console/usage/").content.decode()
    assert f'href="{_url(record)}"' in html
    assert f'href="{_url(acme.usage)}"' in html
    assert "<code>model_not_found</code>" in html
    assert ">" + "x" * 79 + "…</span>" in html  # the message, cut (whole in the title)


def test_the_failed_filter_lists_every_outcome_but_completed(acme, owner, signed_in):
    _failed(acme)
    UsageRecord.objects.filter(pk=acme.usage.pk).update(outcome=UsageRecord.Outcome.OK)
    denied = _failed(acme, code="rate_limit_exceeded", message="Slow down.")
    UsageRecord.objects.filter(pk=denied.pk).update(outcome=UsageRecord.Outcome.DENIED, status_code=429)
    html = signed_in(owner).get("/console/usage/", {"outcome": "failed"}).content.decode()
    assert html.count('data-testid="usage-row"') == 2
    assert acme.usage.request_id not in html


def test_the_dashboards_errors_link_to_the_failed_requests(acme, owner, signed_in):
    html = signed_in(owner).get("/console/dashboard/", {"org": acme.org.slug, "range": "7d"}).content.decode()
    link = html.split('data-testid="stat-errors"', 1)[0].rsplit("<a ", 1)[1]
    since = (timezone.localtime() - timedelta(days=7)).date()
    assert "/console/usage/?outcome=failed" in link
    assert f"org={acme.org.slug}" in link
    assert f"since={since.isoformat()}" in link or f"since={(since + timedelta(days=1)).isoformat()}" in link


def test_a_keys_recent_requests_link_to_their_detail(acme, owner, signed_in):
    html = signed_in(owner).get(f"/console/keys/{acme.key.key.pk}/").content.decode()
    assert f'href="{_url(acme.usage)}"' in html


@pytest.mark.parametrize(
    ("micros", "shown"),
    [(0, "$0.00"), (None, "$0.00"), (123, "$0.000123"), (1_234_500, "$1.2345"), (2_000_000, "$2.00"),
     (1_234_567_890_000, "$1,234,567.89"), (-5, "-$0.000005")],
)  # fmt: skip
def test_money_shows_currency_units_to_the_last_micro_unit(micros, shown):
    rendered = Template("{% load console_pages %}{{ value|money }}").render(Context({"value": micros}))
    assert rendered == shown
