"""CSV exports (usage and audit; console and REST API) never hand a spreadsheet a formula: text from users that
starts like one is neutralised with a leading quote, numbers Inferia writes stay numbers, and the charset is named."""

from __future__ import annotations

import csv
import io
import uuid

import pytest
from django.utils import timezone

from apps.audit.exports import csv_cell
from apps.audit.services import AuditContext, audit_record
from apps.usage.models import UsageRecord

pytestmark = pytest.mark.django_db

FORMULAS = ['=HYPERLINK("http://evil.test")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def _rows(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.parametrize("text", FORMULAS)
def test_it_quotes_text_that_starts_like_a_formula(text):
    assert csv_cell(text) == "'" + text


def test_it_leaves_plain_text_and_numbers_alone():
    assert [csv_cell(v) for v in ["gpt-4o", "", -42, -0.5, None, True]] == ["gpt-4o", "", -42, -0.5, None, True]


def test_the_usage_export_neutralises_a_model_name_sent_to_v1_and_keeps_numbers(acme, viewer, signed_in):
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=uuid.uuid4().hex,
            started_at=timezone.now(),
            organization=acme.org,
            api_key=acme.key.key,
            endpoint="chat.completions",
            model=model,
            cost_micros=-1500,  # a refund-style negative Inferia writes itself
            latency_ms=12.5,
            status_code=404,
            outcome=UsageRecord.Outcome.ERROR,
            error_code="model_not_found",
        )
        for model in FORMULAS
    )
    response = signed_in(viewer).get("/console/usage/export.csv", {"outcome": "error"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = _rows(response)
    assert sorted(row["model"] for row in rows) == sorted("'" + text for text in FORMULAS)
    assert {row["cost_usd"] for row in rows} == {"-0.0015"}
    assert {row["latency_ms"] for row in rows} == {"12.5"}


def test_the_audit_exports_neutralise_user_text(acme, owner, signed_in, as_user):
    context = AuditContext(ip_address="192.0.2.7", user_agent="=cmd|' /C calc'!A0")
    audit_record(action="csv.probe", actor=owner, target=acme.org, changes={"name": "-x"}, context=context)
    console = signed_in(owner).get("/console/audit/export.csv", {"action": "csv.probe"})
    api = as_user(owner).get("/api/audit-events/export/", {"type": "csv", "action": "csv.probe"})
    for response in (console, api):
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        (row,) = _rows(response)
        assert row["user_agent"] == "'=cmd|' /C calc'!A0"
        assert row["changes"].startswith("{")
        assert int(row["seq"]) > 0
        assert row["organization_id"] == str(acme.org.pk)
