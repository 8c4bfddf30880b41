"""The database half of append-only history: PostgreSQL refuses UPDATE, DELETE and TRUNCATE on the audit event and
checkpoint tables, whoever asks, so that code bypassing the ORM cannot rewrite history either.

A superuser can still disable the triggers; that is what the hash chain and the checkpoints detect.
TRUNCATE is allowed only to a session that sets `inferia.audit_allow_truncate = 'on'` (the test suite's flush
between transactional tests, or wiping a development database): a deliberate, visible act, never something
the application does.
"""

from django.db import migrations

TABLES = ("audit_auditevent", "audit_auditcheckpoint")

FUNCTION = """
CREATE OR REPLACE FUNCTION inferia_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('inferia.audit_allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
"""


def _triggers(table: str) -> str:
    return f"""
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION inferia_audit_append_only();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION inferia_audit_append_only();
"""


def _drop(table: str) -> str:
    return f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}; DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};"


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_checkpoint_append_only")]

    operations = [
        migrations.RunSQL(
            FUNCTION + "".join(_triggers(table) for table in TABLES),
            reverse_sql="".join(_drop(table) for table in TABLES) + "DROP FUNCTION IF EXISTS inferia_audit_append_only();",
        ),
    ]
