"""On PostgreSQL, refuse UPDATE and DELETE of audit rows in the database itself.

The ORM already refuses them; the trigger also stops raw SQL and other
clients. The one exception is the retention command, which sets
`audit.allow_prune = on` for its own transaction (SET LOCAL) and may then
DELETE events, never UPDATE them. TRUNCATE is left alone: it needs table
ownership, which the application role should not have in production.
SQLite gets no trigger: whoever can write the file can drop one, and the
seals catch what it would have stopped.
"""

from django.db import migrations

TABLES = ["audit_auditevent", "audit_auditseal", "audit_auditprune"]

FUNCTION = """
CREATE OR REPLACE FUNCTION audit_reject_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_auditevent'
       AND current_setting('audit.allow_prune', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION, params=None)
    for table in TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change()"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS audit_reject_change()")


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
