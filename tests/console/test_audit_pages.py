"""The audit log viewer: the organisation's events only, filters, keyset pages with a fixed number of queries,
and CSV / JSON Lines exports streamed through `apps.audit.selectors`."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from apps.audit.services import audit_record

pytestmark = pytest.mark.django_db


def _events(org, owner, count, action="bulk.happened"):
    for _ in range(count):
        audit_record(action=action, actor=owner, target=org)


def test_the_log_shows_own_events_only(acme, globex, viewer, signed_in):
    page = signed_in(viewer).get("/console/audit/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "acme.happened" in html
    assert "globex.happened" not in html
    assert 'data-testid="audit-table"' in html
    assert 'data-testid="audit-export-csv"' in html


def test_the_log_runs_a_fixed_number_of_queries(
    acme, owner, signed_in, django_assert_max_num_queries, django_assert_num_queries
):
    client = signed_in(owner)
    _events(acme.org, owner, 1)
    client.get("/console/audit/", {"action": "bulk."})
    # One more than the events' page: the query that names the page's people (`apps.console.audit_display`).
    with django_assert_max_num_queries(9) as few:
        client.get("/console/audit/", {"action": "bulk."})
    _events(acme.org, owner, 40)
    with django_assert_num_queries(len(few.captured_queries)):
        page = client.get("/console/audit/", {"action": "bulk."})
    html = page.content.decode()
    assert html.count('data-testid="audit-row"') == 25
    older = re.search(r'older=([^"&]+)"', html).group(1)
    second = client.get(f"/console/audit/?action=bulk.&older={older}").content.decode()
    first_seqs = set(re.findall(r'<th scope="row">(\d+)</th>', html))
    second_seqs = set(re.findall(r'<th scope="row">(\d+)</th>', second))
    assert second_seqs
    assert not first_seqs & second_seqs


def test_filters_narrow_by_action_actor_and_object(acme, owner, signed_in):
    _events(acme.org, owner, 3, action="special.thing")
    client = signed_in(owner)
    by_action = client.get("/console/audit/", {"action": "special."}).content.decode()
    assert by_action.count('data-testid="audit-row"') == 3
    by_object = client.get(
        "/console/audit/", {"target_type": "keys.apikey", "target_id": str(acme.key.key.pk)}
    ).content.decode()
    assert set(re.findall(r'data-action="([^"]+)"', by_object)) == {"key.create"}
    assert 'data-testid="audit-row"' not in client.get("/console/audit/", {"actor": "nobody"}).content.decode()


def test_exports_stream_jsonl_and_csv_of_own_events(acme, globex, owner, signed_in):
    client = signed_in(owner)
    jsonl = client.get("/console/audit/export.jsonl", {"action": "acme."})
    assert jsonl.streaming
    lines = [json.loads(line) for line in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert [line["action"] for line in lines] == ["acme.happened"]
    assert lines[0]["hash"]
    response = client.get("/console/audit/export.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows
    assert {row["organization_id"] for row in rows} == {str(acme.org.pk)}
    assert client.get("/console/audit/export.xml").status_code == 404


def test_the_outsider_cannot_read_acmes_events(acme, globex, outsider, signed_in):
    html = signed_in(outsider).get("/console/audit/").content.decode()
    assert "acme.happened" not in html
    assert "globex.happened" in html
