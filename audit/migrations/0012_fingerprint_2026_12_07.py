"""Regroup stored errors under fingerprint strategy "2026-12-07" (audit.fingerprints).

Only errors whose message holds an HTTP status code or an endpoint get another
fingerprint; the rest keep theirs, so their URLs, alert incidents and states
stay. The MAC does not cover the fingerprint, so sealed history still
verifies.

On PostgreSQL the append-only trigger refuses every UPDATE. As in 0004, a
migration runs as the table's owner and lifts it for its own transaction:
ALTER TABLE holds an ACCESS EXCLUSIVE lock until commit, so no other session
writes (or reads) the table while the trigger is off, and a failure rolls the
trigger back on with the rest. An application role that does not own the
table cannot do this, which is why this is a migration and not a command.
"""

from django.db import migrations

TABLE = "audit_auditevent"
BATCH = 2000


def regroup(schema_editor, strategy: str) -> int:
    """Rewrite every error's fingerprint with `strategy`; the number of rows changed."""
    from audit.fingerprints import STRATEGIES

    compute = STRATEGIES[strategy]
    connection = schema_editor.connection
    postgres = connection.vendor == "postgresql"
    changed = 0
    with connection.cursor() as cursor:
        if postgres:
            cursor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER {TABLE}_append_only")
        last = 0
        while True:
            # By id, in batches: the errors of a large trail never sit in memory at once.
            cursor.execute(
                f"SELECT id, error_type, error_message, traceback, fingerprint FROM {TABLE} "
                "WHERE fingerprint <> '' AND id > %s ORDER BY id LIMIT %s",
                [last, BATCH],
            )
            rows = cursor.fetchall()
            if not rows:
                break
            last = rows[-1][0]
            updates = [
                (new, pk)
                for pk, error_type, message, traceback, old in rows
                if (new := compute(error_type, message, traceback)) and new != old
            ]
            if not updates:
                continue
            changed += len(updates)
            if postgres:
                values = ", ".join(["(%s, %s)"] * len(updates))
                cursor.execute(
                    f"UPDATE {TABLE} AS e SET fingerprint = v.fp FROM (VALUES {values}) "
                    "AS v(fp, id) WHERE e.id = v.id",
                    [value for pair in updates for value in pair],
                )
            else:
                cursor.executemany(f"UPDATE {TABLE} SET fingerprint = %s WHERE id = %s", updates)
        if postgres:
            cursor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER {TABLE}_append_only")
    return changed


def forwards(apps, schema_editor):
    # The strategy of this migration's time, not whatever is current later.
    regroup(schema_editor, "2026-12-07")


def backwards(apps, schema_editor):
    regroup(schema_editor, "2026-12")


class Migration(migrations.Migration):
    dependencies = [("audit", "0011_errorgroupstate")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
