"""History cannot be changed: the ORM refuses, and PostgreSQL refuses underneath for code that bypasses it."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from apps.audit.models import AuditAppendOnlyError, AuditCheckpoint, AuditEvent
from apps.audit.services import audit_checkpoint_take, audit_record


@pytest.fixture
def event(db):
    return audit_record(action="test.event", changes={"n": 1})


def test_it_refuses_to_save_an_existing_event(event):
    event.action = "test.rewritten"
    with pytest.raises(AuditAppendOnlyError):
        event.save()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


def test_it_refuses_to_delete_an_event(event):
    with pytest.raises(AuditAppendOnlyError):
        event.delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_it_refuses_queryset_update_delete_and_bulk_update(event):
    with pytest.raises(AuditAppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(AuditAppendOnlyError):
        AuditEvent.objects.all().delete()
    event.action = "x"
    with pytest.raises(AuditAppendOnlyError):
        AuditEvent.objects.bulk_update([event], ["action"])
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


def test_checkpoints_are_append_only_too(event):
    checkpoint = audit_checkpoint_take()
    with pytest.raises(AuditAppendOnlyError):
        AuditCheckpoint.objects.filter(pk=checkpoint.pk).delete()
    with pytest.raises(AuditAppendOnlyError):
        checkpoint.save()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET action = 'x'",
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
        "UPDATE audit_auditcheckpoint SET seq = 0",
        "DELETE FROM audit_auditcheckpoint",
        "TRUNCATE audit_auditcheckpoint",
    ],
)
def test_the_database_refuses_raw_sql_that_rewrites_history(event, sql):
    audit_checkpoint_take()
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert AuditEvent.objects.filter(pk=event.pk, action="test.event").exists()
    assert AuditCheckpoint.objects.exists()


def test_inserting_stays_possible_through_raw_sql_checks(event):
    # The trigger guards changes, not appends: the service's inserts go through untouched.
    second = audit_record(action="test.second")
    assert second.seq == event.seq + 1
    assert second.prev_hash == event.hash


def test_the_test_suites_flush_may_still_truncate(transactional_db):
    # Transactional tests end with a TRUNCATE of every table: the suite's flush opts in (tests/conftest.py),
    # while a plain session still may not.
    audit_record(action="test.flushed-after")
    with pytest.raises(IntegrityError, match="append-only"), connection.cursor() as cursor:
        cursor.execute("TRUNCATE audit_auditevent")
