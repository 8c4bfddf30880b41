"""The usage explorer: filters over the user's usage records, keyset pages with a fixed number of queries,
totals from the rollups, a streamed CSV export, and nothing of another organisation's usage."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.usage.models import UsageRecord

pytestmark = pytest.mark.django_db


def _usage(tenant, count, *, model="acme-model", outcome=UsageRecord.Outcome.OK, days_ago=0):
    now = timezone.now() - timedelta(days=days_ago)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=uuid.uuid4().hex,
            started_at=now - timedelta(seconds=n),
            organization=tenant.org,
            team=tenant.team,
            api_key=tenant.key.key,
            endpoint="chat.completions",
            model=model,
            prompt_tokens=5,
            completion_tokens=7,
            status_code=200 if outcome == "ok" else 500,
            outcome=outcome,
        )
        for n in range(count)
    )


def test_the_explorer_lists_own_usage_only(acme, globex, owner, signed_in):
    page = signed_in(owner).get("/console/usage/")
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('data-testid="usage-row"') == 1
    assert "acme-model" in html
    assert "globex-model" not in html
    assert 'data-testid="usage-export-csv"' in html


def test_the_explorer_runs_a_fixed_number_of_queries(
    acme, owner, signed_in, django_assert_max_num_queries, django_assert_num_queries
):
    client = signed_in(owner)
    client.get("/console/usage/")
    with django_assert_max_num_queries(10) as few:
        client.get("/console/usage/")
    _usage(acme, 60)
    with django_assert_num_queries(len(few.captured_queries)):
        page = client.get("/console/usage/")
    assert page.content.decode().count('data-testid="usage-row"') == 25
    assert "pager-older" in page.content.decode()


def test_filters_narrow_by_model_outcome_and_date(acme, owner, signed_in):
    _usage(acme, 3, model="other-model")
    _usage(acme, 2, outcome=UsageRecord.Outcome.ERROR)
    _usage(acme, 4, days_ago=10)
    client = signed_in(owner)
    assert (
        client.get("/console/usage/", {"model": "other-model"}).content.decode().count('data-testid="usage-row"') == 3
    )
    assert client.get("/console/usage/", {"outcome": "error"}).content.decode().count('data-testid="usage-row"') == 2
    since = (timezone.now() - timedelta(days=2)).date().isoformat()
    recent = client.get("/console/usage/", {"since": since}).content.decode()
    assert recent.count('data-testid="usage-row"') == 6
    by_key = client.get("/console/usage/", {"key": acme.key.key.prefix}).content.decode()
    assert by_key.count('data-testid="usage-row"') == 10


def test_a_foreign_key_or_team_filter_shows_nothing(acme, globex, owner, signed_in):
    client = signed_in(owner)
    assert 'data-testid="usage-row"' not in client.get("/console/usage/", {"key": globex.key.key.pk}).content.decode()
    assert 'data-testid="usage-row"' not in client.get("/console/usage/", {"team": globex.team.pk}).content.decode()


def test_the_csv_export_streams_the_filtered_rows(acme, globex, viewer, signed_in):
    _usage(acme, 3, outcome=UsageRecord.Outcome.ERROR)
    response = signed_in(viewer).get("/console/usage/export.csv", {"outcome": "error"})
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 3
    assert {row["outcome"] for row in rows} == {"error"}
    assert {row["organization_id"] for row in rows} == {str(acme.org.pk)}


def test_the_outsider_sees_none_of_acmes_usage(acme, globex, outsider, signed_in):
    response = signed_in(outsider).get("/console/usage/export.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {row["organization_id"] for row in rows} == {str(globex.org.pk)}


def _stored(tenant, count, *, model, key=None):
    """Usage stored the way the usage worker stores it: records and rollups at every grain."""
    from apps.usage.services import usage_records_store

    usage_records_store(
        [
            {
                "request_id": uuid.uuid4().hex,
                "started_at": timezone.now().timestamp(),
                "endpoint": "chat.completions",
                "api_key_id": (key or tenant.key.key).pk,
                "organization_id": tenant.org.pk,
                "team_id": tenant.team.pk,
                "model": model,
                "deployment_id": None,
                "replica_id": None,
                "prompt_tokens": 5,
                "completion_tokens": 7,
                "cost_micros": 10,
                "ttft_ms": 1.0,
                "latency_ms": 2.0,
                "status_code": 200,
                "outcome": "ok",
                "error_code": "",
                "estimated": False,
                "streamed": False,
                "guardrails": [],
            }
            for _ in range(count)
        ]
    )


def _total_requests(html: str) -> str:
    return html.split('data-testid="usage-total-requests">', 1)[1].split("<", 1)[0]


def test_the_totals_follow_the_filter_from_the_rollups(acme, globex, owner, signed_in):
    from apps.usage.rollups import usage_rollups_rebuild

    # The fixture's one request of the owner's key was written as an hourly rollup alone: derive the other grains.
    usage_rollups_rebuild(since=timezone.now() - timedelta(days=1), until=timezone.now() + timedelta(days=1))
    _stored(acme, 3, model="acme-model")
    _stored(acme, 2, model="acme-other", key=acme.service_key.key)
    _stored(globex, 7, model="acme-model")
    client = signed_in(owner)
    assert _total_requests(client.get("/console/usage/").content.decode()) == "6"
    assert _total_requests(client.get("/console/usage/?model=acme-other").content.decode()) == "2"
    assert _total_requests(client.get(f"/console/usage/?key={acme.key.key.pk}").content.decode()) == "4"
    assert _total_requests(client.get(f"/console/usage/?key={acme.service_key.key.prefix}").content.decode()) == "2"


def test_a_request_is_found_by_our_id_or_the_callers_and_shows_both(acme, globex, owner, signed_in):
    _usage(acme, 3)
    UsageRecord.objects.filter(organization=acme.org).update(client_request_id="job-7")
    ours = UsageRecord.objects.filter(organization=acme.org).first().request_id
    UsageRecord.objects.filter(organization=globex.org).update(client_request_id="job-7")
    client = signed_in(owner)

    by_caller = client.get("/console/usage/", {"request_id": "job-7"}).content.decode()
    by_ours = client.get("/console/usage/", {"request_id": ours}).content.decode()

    own = UsageRecord.objects.filter(organization=acme.org).count()
    assert by_caller.count('data-testid="usage-row"') == own  # not the other organisation's request with that id
    assert by_ours.count('data-testid="usage-row"') == 1
    assert ours in by_ours
    assert "job-7" in by_ours
