"""Usage and audit exports against the real ASGI server (uvicorn): the body streams (the export's cursor is still
open on the server when the client holds only the first bytes; Django's handler never has to buffer a synchronous
iterator), and the rows are exactly the filtered set of the caller's organisation.

The server is another process and sees committed data only: these tests use the transactional database."""

from __future__ import annotations

import csv
import http.client
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from apps.audit.models import AuditEvent
from apps.console.auth_flow import SESSION_SECOND_FACTOR
from apps.keys.services import api_key_create
from tests.kit.processes import TestProcess, child_database_url, web_start

pytestmark = pytest.mark.django_db(transaction=True)

# Larger than what the loopback socket buffers and the server can hold: a streaming server is still reading rows
# when the client has taken the first bytes only.
USAGE_ROWS = 90_000
AUDIT_ROWS = 50_000
FIRST_BYTES = 64 * 1024
BUFFERED_WARNING = "must consume synchronous iterators"


@pytest.fixture
def web(transactional_db: Any) -> Iterator[TestProcess]:
    """A server per test: the flush after a transactional test recreates content types and permissions under new ids,
    which a longer-lived server would still hold in its caches."""
    process = web_start(child_database_url())
    yield process
    process.stop()


def _usage_seed(organization: Any, rows: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_usagerecord (request_id, started_at, endpoint, model, prompt_tokens, completion_tokens, "
            "cost_micros, ttft_ms, latency_ms, status_code, outcome, error_code, estimated, streamed, guardrails, "
            "organization_id) "
            "SELECT %s || '-' || i, now() - i * interval '1 second', 'chat.completions', "
            "CASE WHEN i %% 4 = 0 THEN 'other-model' ELSE 'wanted-model' END, 10, 5, 100, 10, 20, 200, 'ok', '', "
            "false, true, '[]'::jsonb, %s FROM generate_series(1, %s) i",
            [organization.slug, organization.pk, rows],
        )


def _audit_seed(organization: Any, rows: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditevent (seq, occurred_at, actor_label, action, target_type, target_id, target_repr, "
            "changes, user_agent, request_id, outcome, prev_hash, hash, organization_id) "
            "SELECT h.seq + e, now(), 'seed', 'seed.happened', 'orgs.organization', '1', 'seed', '{}'::jsonb, '', "
            "'', 'success', repeat('0', 64), repeat('0', 64), %s "
            "FROM generate_series(1, %s) e, (SELECT coalesce(max(seq), 0) AS seq FROM audit_auditevent) h",
            [organization.pk, rows],
        )
        cursor.execute("UPDATE audit_auditchainhead SET seq = (SELECT max(seq) FROM audit_auditevent)")


def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_SECOND_FACTOR] = "none"  # what a password-only sign-in records
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def _export_cursor_open() -> bool:
    """Whether a server connection is inside an export: its named cursor declared or being fetched from, its
    transaction open."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state IN ('active', 'idle in transaction') AND (query ILIKE 'FETCH%%' OR query ILIKE 'DECLARE%%')"
        )
        return cursor.fetchone()[0] > 0


def _get(web: TestProcess, path: str, headers: dict[str, str], *, check_streams: bool) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        assert response.status == 200, response.read()[:500]
        first = response.read(FIRST_BYTES)
        if check_streams:
            assert len(first) == FIRST_BYTES
            assert _export_cursor_open(), "the whole export was read before the first bytes were sent"
        return first + response.read()
    finally:
        conn.close()


def test_the_usage_export_streams_exactly_the_filtered_records_of_the_organisation(web, acme, globex, outsider, owner):
    _usage_seed(acme.org, USAGE_ROWS)
    _usage_seed(globex.org, 30)
    body = _get(
        web, "/console/usage/export.csv?model=wanted-model", {"Cookie": _session_cookie(owner)}, check_streams=True
    )
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    wanted = {f"acme-{i}" for i in range(1, USAGE_ROWS + 1) if i % 4}
    assert len(rows) == len(wanted)
    assert {row["request_id"] for row in rows} == wanted
    assert [row["started_at"] for row in rows] == sorted((row["started_at"] for row in rows), reverse=True)

    foreign = _get(
        web, "/console/usage/export.csv?model=wanted-model", {"Cookie": _session_cookie(outsider)}, check_streams=False
    )
    foreign_ids = {row["request_id"] for row in csv.DictReader(io.StringIO(foreign.decode()))}
    assert foreign_ids == {f"globex-{i}" for i in range(1, 31) if i % 4}
    assert BUFFERED_WARNING not in web.output


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_audit_export_streams_exactly_the_organisations_events(web, acme, globex, outsider, owner, fmt):
    _audit_seed(acme.org, AUDIT_ROWS)
    _audit_seed(globex.org, 20)
    expected = set(AuditEvent.objects.filter(organization=acme.org).values_list("seq", flat=True))

    body = _get(web, f"/console/audit/export.{fmt}", {"Cookie": _session_cookie(owner)}, check_streams=True)
    if fmt == "jsonl":
        seqs = [json.loads(line)["seq"] for line in body.decode().splitlines()]
    else:
        seqs = [int(row["seq"]) for row in csv.DictReader(io.StringIO(body.decode()))]
    assert seqs == sorted(expected)

    foreign = _get(web, f"/console/audit/export.{fmt}", {"Cookie": _session_cookie(outsider)}, check_streams=False)
    assert not expected & _seqs(foreign, fmt)
    assert BUFFERED_WARNING not in web.output


def _seqs(body: bytes, fmt: str) -> set[int]:
    if fmt == "jsonl":
        return {json.loads(line)["seq"] for line in body.decode().splitlines()}
    return {int(row["seq"]) for row in csv.DictReader(io.StringIO(body.decode()))}


def test_the_audit_api_export_streams_to_a_key_and_stays_in_its_organisation(web, acme, globex, owner, outsider):
    _audit_seed(acme.org, AUDIT_ROWS)
    expected = set(AuditEvent.objects.filter(organization=acme.org).values_list("seq", flat=True))
    secret = api_key_create(organization=acme.org, name="exporter", scopes=["read"], actor=owner).secret
    expected |= set(AuditEvent.objects.filter(organization=acme.org).values_list("seq", flat=True))

    body = _get(web, "/api/audit-events/export/", {"Authorization": f"Bearer {secret}"}, check_streams=True)
    assert _seqs(body, "jsonl") == expected

    foreign_secret = api_key_create(organization=globex.org, name="other", scopes=["read"], actor=outsider).secret
    foreign = _get(
        web, "/api/audit-events/export/?type=csv", {"Authorization": f"Bearer {foreign_secret}"}, check_streams=False
    )
    assert _seqs(foreign, "csv")
    assert not expected & _seqs(foreign, "csv")
