"""The usage explorer: filters over the user's usage records, keyset pages with a fixed number of queries,
totals from the rollups, a streamed CSV export, and nothing of another organisation's usage."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import UsageRecord
from tests.console.pages_fixtures import *  # noqa: F403

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
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 3
    assert {row["outcome"] for row in rows} == {"error"}
    assert {row["organization_id"] for row in rows} == {str(acme.org.pk)}


def test_the_outsider_sees_none_of_acmes_usage(acme, globex, outsider, signed_in):
    response = signed_in(outsider).get("/console/usage/export.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {row["organization_id"] for row in rows} == {str(globex.org.pk)}
