"""Moving the usage models from the audit app to the usage app changes the project's state, not the database: rows
written before the move are read through the new models after it, with the same indexes, constraints, triggers and
permissions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from apps.audit.services import audit_record
from apps.usage.models import UsageKeyRollup, UsageModelRollup, UsageRecord, UsageRollup
from apps.usage.services import usage_records_store

BEFORE_THE_MOVE = [("audit", "0009_usage_client_request_id"), ("usage", None)]
MODELS = (UsageRecord, UsageRollup, UsageModelRollup, UsageKeyRollup)
TABLES = (*(model._meta.db_table for model in MODELS), "audit_auditevent", "audit_auditcheckpoint")
HOUR = datetime(2026, 11, 20, 14, tzinfo=UTC)


def _schema() -> dict[str, tuple[set[str], set[str]]]:
    """Per table: the names of its indexes and constraints, and of its triggers."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relname = ANY(%s)",
            [list(TABLES)],
        )
        triggers: dict[str, set[str]] = {table: set() for table in TABLES}
        for table, name in cursor.fetchall():
            triggers[table].add(name)
        return {
            table: (set(connection.introspection.get_constraints(cursor, table)), triggers[table]) for table in TABLES
        }


def _rows_before_the_move(executor: MigrationExecutor) -> dict[str, int]:
    """Rows and a permission written by the models as they were in the audit app."""
    old = executor.loader.project_state(("audit", "0009_usage_client_request_id")).apps
    record = old.get_model("audit", "UsageRecord").objects.create(
        request_id="before-the-move",
        client_request_id="theirs",
        started_at=HOUR,
        organization_id=7,
        endpoint="chat.completions",
        model="m",
        prompt_tokens=3,
        completion_tokens=4,
        status_code=200,
        outcome="ok",
        guardrails=[{"category": "pii", "action": "redact", "count": 1}],
    )
    rollup = old.get_model("audit", "UsageRollup").objects.create(
        hour=HOUR, organization_id=7, model="m", requests=1, prompt_tokens=3, completion_tokens=4
    )
    ContentType = old.get_model("contenttypes", "ContentType")
    content_type = ContentType.objects.get(app_label="audit", model="usagerecord")
    permission = old.get_model("auth", "Permission").objects.get(content_type=content_type, codename="view_usagerecord")
    return {"record": record.pk, "rollup": rollup.pk, "permission": permission.pk}


@pytest.mark.django_db(transaction=True)
def test_rows_indexes_triggers_and_permissions_survive_the_move():
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    schema_after = _schema()
    try:
        executor.migrate(BEFORE_THE_MOVE)
        schema_before = _schema()
        executor.loader.build_graph()
        written = _rows_before_the_move(executor)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaves)

    # The move itself touched no index, constraint or trigger.
    assert _schema() == schema_before == schema_after
    for model in MODELS:
        names = schema_after[model._meta.db_table][0]
        assert {index.name for index in model._meta.indexes} <= names
        assert {constraint.name for constraint in model._meta.constraints} <= names
    assert schema_after["audit_auditevent"][1] == {"audit_auditevent_append_only", "audit_auditevent_no_truncate"}

    record = UsageRecord.objects.get(pk=written["record"])
    assert (record.request_id, record.client_request_id, record.prompt_tokens) == ("before-the-move", "theirs", 3)
    assert record.guardrails == [{"category": "pii", "action": "redact", "count": 1}]
    assert UsageRollup.objects.get(pk=written["rollup"]).requests == 1
    # The roles that held the permission hold the same row, now the usage app's.
    permission = Permission.objects.select_related("content_type").get(pk=written["permission"])
    assert (permission.content_type.app_label, permission.codename) == ("usage", "view_usagerecord")
    assert not Permission.objects.filter(content_type__app_label="audit", codename__endswith="usagerecord").exists()

    # New rows go on from the same sequences and unique constraints.
    event = {
        "request_id": "after-the-move", "client_request_id": "", "started_at": HOUR.timestamp() + 60,
        "organization_id": 7, "team_id": None, "api_key_id": None, "deployment_id": None, "replica_id": None,
        "endpoint": "chat.completions", "model": "m", "prompt_tokens": 1, "completion_tokens": 1, "cost_micros": 0,
        "ttft_ms": None, "latency_ms": 5.0, "status_code": 200, "outcome": "ok", "error_code": "", "estimated": False,
        "streamed": False, "guardrails": [],
    }  # fmt: skip
    assert usage_records_store([event]) == 1
    assert usage_records_store([{**event}]) == 0
    assert UsageRecord.objects.get(request_id="after-the-move").pk > written["record"]
    assert UsageRollup.objects.get(pk=written["rollup"]).requests == 2

    # The audit log's append-only trigger still refuses changes.
    audit_record(action="test.after-the-move")
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET action = 'rewritten'")
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent")
