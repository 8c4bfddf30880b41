"""Tamper detection: edit, delete or truncate rows the way a database superuser could (with the append-only
triggers switched off), and `audit_verify` names the first broken link."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from apps.audit.models import AuditChainHead, AuditCheckpoint, AuditEvent
from apps.audit.selectors import audit_checkpoints_jsonl
from apps.audit.services import AuditContext, audit_checkpoint_take, audit_record
from apps.audit.verify import audit_verify, checkpoints_from_jsonl


def _as_superuser(sql: str, params: list | None = None) -> None:
    """Run SQL with the append-only triggers disabled for this transaction, as a superuser could."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params or [])
        cursor.execute("SET LOCAL session_replication_role = origin")


@pytest.fixture
def chain(db, owner):
    return [
        audit_record(
            action=f"test.step{n}",
            actor=owner,
            changes={"step": n, "password": "hunter2"},
            context=AuditContext(ip_address="2001:db8:0:0::1" if n % 2 else "10.0.0.1", user_agent="pytest"),
        )
        for n in range(1, 8)
    ]


def test_an_untouched_chain_verifies(chain):
    report = audit_verify()
    assert report.ok, report.as_text()
    assert report.events_checked == AuditEvent.objects.count() >= 7
    assert report.last_seq == AuditChainHead.objects.get().seq


def test_secrets_are_masked_before_hashing(chain):
    assert chain[0].changes["password"] == "********"
    assert AuditEvent.objects.get(pk=chain[0].pk).changes == {"step": 1, "password": "********"}


def test_it_detects_an_edited_row(chain):
    victim = chain[3]
    _as_superuser("UPDATE audit_auditevent SET changes = %s WHERE seq = %s", [json.dumps({"step": 99}), victim.seq])
    report = audit_verify()
    assert not report.ok
    assert (report.first_break.seq, report.first_break.kind) == (victim.seq, "edited")


def test_it_detects_an_edited_row_whose_hash_was_recomputed(chain):
    # A forger who rewrites the row and its own hash still breaks the link to the next event.
    victim = chain[2]
    _as_superuser("UPDATE audit_auditevent SET hash = %s WHERE seq = %s", ["f" * 64, victim.seq])
    report = audit_verify()
    assert report.first_break.seq == victim.seq
    assert report.first_break.kind == "edited"


def test_it_detects_a_deleted_row(chain):
    victim = chain[4]
    _as_superuser("DELETE FROM audit_auditevent WHERE seq = %s", [victim.seq])
    report = audit_verify()
    assert (report.first_break.seq, report.first_break.kind) == (victim.seq, "missing")


def test_it_detects_a_deleted_row_when_the_rest_were_renumbered(chain):
    victim = chain[4]
    _as_superuser("DELETE FROM audit_auditevent WHERE seq = %s", [victim.seq])
    _as_superuser("UPDATE audit_auditevent SET seq = seq - 1 WHERE seq > %s", [victim.seq])
    report = audit_verify()
    assert report.first_break.seq == victim.seq
    assert report.first_break.kind in {"edited", "relinked"}


def test_it_detects_a_truncated_tail_against_the_head(chain):
    _as_superuser("DELETE FROM audit_auditevent WHERE seq >= %s", [chain[5].seq])
    report = audit_verify()
    assert (report.first_break.seq, report.first_break.kind) == (chain[5].seq, "truncated")


def test_it_detects_a_truncated_tail_when_the_head_was_rewound_too(chain):
    audit_checkpoint_take()
    _as_superuser("DELETE FROM audit_auditevent WHERE seq >= %s", [chain[5].seq])
    _as_superuser("UPDATE audit_auditchainhead SET seq = %s, hash = %s", [chain[4].seq, chain[4].hash])
    report = audit_verify()
    assert (report.first_break.seq, report.first_break.kind) == (chain[5].seq, "truncated")


def test_it_detects_a_rewritten_tail_with_an_exported_checkpoint(chain):
    # The forger removes the checkpoints table's evidence as well; the exported copy kept elsewhere remains.
    audit_checkpoint_take()
    exported = list(audit_checkpoints_jsonl())
    _as_superuser("DELETE FROM audit_auditevent WHERE seq >= %s", [chain[5].seq])
    _as_superuser("DELETE FROM audit_auditcheckpoint")
    _as_superuser("UPDATE audit_auditchainhead SET seq = %s, hash = %s", [chain[4].seq, chain[4].hash])
    assert audit_verify().ok  # the database alone is consistent again...
    report = audit_verify(extra_checkpoints=checkpoints_from_jsonl(exported))
    assert (report.first_break.seq, report.first_break.kind) == (chain[5].seq, "truncated")


def test_it_detects_a_tail_replaced_with_new_events_by_checkpoint(chain):
    audit_checkpoint_take()
    last = chain[-1]
    _as_superuser("DELETE FROM audit_auditevent WHERE seq >= %s", [chain[5].seq])
    _as_superuser("UPDATE audit_auditchainhead SET seq = %s, hash = %s", [chain[4].seq, chain[4].hash])
    audit_record(action="test.replacement")
    audit_record(action="test.replacement")
    report = audit_verify()
    assert (report.first_break.seq, report.first_break.kind) == (last.seq, "checkpoint_mismatch")


def test_beat_checkpoints_only_when_the_head_moved(chain):
    first = audit_checkpoint_take()
    assert audit_checkpoint_take().pk == first.pk
    audit_record(action="test.more")
    second = audit_checkpoint_take()
    assert second.seq == first.seq + 1
    assert AuditCheckpoint.objects.count() == 2


def test_a_checkpoint_asked_for_by_a_person_is_recorded_and_covers_its_own_event(chain, owner):
    checkpoint = audit_checkpoint_take(actor=owner)
    newest = AuditEvent.objects.order_by("-seq").first()
    assert newest.action == "audit.checkpoint"
    assert (checkpoint.seq, checkpoint.hash, checkpoint.taken_by) == (newest.seq, newest.hash, owner.email)


def test_the_management_command_exits_non_zero_on_tampering(chain, tmp_path):
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "chain OK" in out.getvalue()
    audit_checkpoint_take()
    export = tmp_path / "checkpoints.jsonl"
    export.write_text("".join(audit_checkpoints_jsonl()))
    _as_superuser("DELETE FROM audit_auditevent WHERE seq = %s", [chain[1].seq])
    with pytest.raises(CommandError) as excinfo:
        call_command("audit_verify", "--checkpoints", str(export), stdout=io.StringIO())
    assert excinfo.value.returncode == 1


def test_a_break_reports_the_last_event_that_still_verified(chain):
    victim = chain[3]
    _as_superuser("UPDATE audit_auditevent SET changes = %s WHERE seq = %s", [json.dumps({"step": 99}), victim.seq])
    report = audit_verify()
    assert report.last_seq == victim.seq - 1
    assert report.last_hash == AuditEvent.objects.get(seq=victim.seq - 1).hash
    assert f"last good #{victim.seq - 1}," in report.as_text()
