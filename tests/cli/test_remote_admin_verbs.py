"""The local admin verbs, `inferia audit verify` and `inferia secrets rotate`, run as the console script against
the test database (committed rows: the tests are transactional), and the remote verbs' refusals that need no
running platform."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import connection, transaction

from apps.audit.services import audit_checkpoint_take, audit_record
from tests.kit.ports import port_reserve
from tests.kit.processes import INFERIA, child_database_url


def inferia(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DATABASE_URL": child_database_url(), **(env or {})}
    return subprocess.run([INFERIA, *args], env=environment, capture_output=True, text=True, timeout=60)


@pytest.fixture
def chain(transactional_db, org):
    return [audit_record(action=f"test.step{n}", actor=None, changes={"step": n}) for n in range(1, 6)]


def _tamper(sql: str, params: list) -> None:
    """Change audit rows as a database superuser could: with the append-only triggers switched off."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)


def test_audit_verify_exits_0_on_an_intact_chain_and_1_after_a_raw_sql_edit(chain):
    before = inferia("audit", "verify")
    _tamper("UPDATE audit_auditevent SET changes = %s WHERE seq = %s", [json.dumps({"step": 99}), chain[2].seq])
    after = inferia("audit", "verify")

    assert before.returncode == 0, before.stdout + before.stderr
    assert "chain OK" in before.stdout
    assert after.returncode == 1, after.stdout + after.stderr
    assert f"BROKEN at #{chain[2].seq} (edited)" in after.stdout


def test_audit_verify_reads_exported_checkpoints_and_detects_a_truncated_tail(chain, tmp_path):
    checkpoint = audit_checkpoint_take(actor=None)
    exported = tmp_path / "checkpoints.jsonl"
    exported.write_text(json.dumps({"seq": checkpoint.seq, "hash": checkpoint.hash}) + "\n")
    # Delete the newest events, the chain head's record and the checkpoint table: only the export remembers.
    _tamper("DELETE FROM audit_auditevent WHERE seq >= %s", [chain[3].seq])
    _tamper("DELETE FROM audit_auditcheckpoint WHERE id = %s", [checkpoint.pk])
    _tamper("UPDATE audit_auditchainhead SET seq = %s, hash = %s", [chain[2].seq, chain[2].hash])

    without = inferia("audit", "verify")
    with_export = inferia("audit", "verify", "--checkpoints", str(exported))
    unreadable = inferia("audit", "verify", "--checkpoints", str(tmp_path / "missing.jsonl"))

    assert without.returncode == 0, without.stdout
    assert with_export.returncode == 1, with_export.stdout + with_export.stderr
    assert "(truncated)" in with_export.stdout
    assert unreadable.returncode == 2
    assert "cannot read checkpoints" in unreadable.stderr


def test_secrets_rotate_re_encrypts_every_provider_under_the_new_first_key(transactional_db, org):
    from apps.compute.inventory_services import provider_create
    from apps.compute.models import Provider

    with transaction.atomic():
        for name in ("one", "two"):
            provider_create(organization=org, name=name, kind="simulator", actor=None, credentials={"token": name})
        provider_create(organization=org, name="none", kind="simulator", actor=None)
    new_key = Fernet.generate_key().decode()

    done = inferia("secrets", "rotate", env={"INFERIA_FERNET_KEYS": ",".join([new_key, *settings.INFERIA_FERNET_KEYS])})

    assert done.returncode == 0, done.stdout + done.stderr
    assert "re-encrypted the credentials of 2 provider(s)" in done.stdout
    only_new = MultiFernet([Fernet(new_key.encode())])
    tokens = Provider.objects.exclude(credentials_encrypted="").values_list("credentials_encrypted", flat=True)
    assert sorted(json.loads(only_new.decrypt(token.encode()))["token"] for token in tokens) == ["one", "two"]


def test_secrets_rotate_fails_cleanly_when_no_key_decrypts(transactional_db, org):
    from apps.compute.inventory_services import provider_create

    with transaction.atomic():
        provider_create(organization=org, name="one", kind="simulator", actor=None, credentials={"token": "x"})

    done = inferia("secrets", "rotate", env={"INFERIA_FERNET_KEYS": Fernet.generate_key().decode()})

    assert done.returncode == 1
    assert "cannot be decrypted" in done.stderr
    assert "Traceback" not in done.stderr


def test_remote_verbs_need_a_key_and_say_so_without_a_traceback(monkeypatch):
    monkeypatch.delenv("INFERIA_API_KEY", raising=False)

    done = inferia("keys", "list", "--url", f"http://127.0.0.1:{port_reserve()}")

    assert done.returncode == 1
    assert "set INFERIA_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_is_a_clear_error_that_never_shows_the_key():
    secret = "sk-inf-TopSecretValueThatMustNotLeak"

    done = inferia("usage", "--url", f"http://127.0.0.1:{port_reserve()}", env={"INFERIA_API_KEY": secret})

    assert done.returncode == 1
    assert "cannot reach Inferia at http://127.0.0.1:" in done.stderr
    assert secret not in done.stdout + done.stderr


def test_a_whole_secret_is_refused_where_a_prefix_belongs():
    secret = "sk-inf-TopSecretValueThatMustNotLeak"

    url = f"http://127.0.0.1:{port_reserve()}"

    done = inferia("keys", "revoke", secret, "--url", url, env={"INFERIA_API_KEY": "x"})

    assert done.returncode == 1
    assert "not the whole secret" in done.stderr
    assert secret not in done.stderr
