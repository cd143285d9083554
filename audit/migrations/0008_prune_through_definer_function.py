"""On PostgreSQL, events are deleted only through audit_prune_seal(), never by
setting a variable (issue 11).

Before, the append-only trigger let any DELETE on audit_auditevent through
when `audit.allow_prune` was on, and any role can SET a custom variable. Now:

* `audit_prune_seal(prune_id)` is SECURITY DEFINER, owned by the role that
  runs this migration. It reads the AuditPrune record the retention run wrote
  first (in the same transaction), and deletes exactly the events it names:
  every event in the seal's id ranges when the record says `emptied`, else the
  listed (id, MAC) pairs that lie in the seal's ranges. If the number deleted
  differs from the record's `deleted_count` it raises, and the record goes
  with the rollback. Only sealed ids can be deleted this way.
* The trigger lets a DELETE on audit_auditevent through only when
  `audit.pruning` is set AND the statement runs as the function's owner,
  which for any other role is only the case inside the function.

What this does not stop: the table owner or a superuser (they can also
disable the trigger; seals and anchors catch that), and a role that calls
the function with a forged prune record (its MAC fails in verify_audit).
"""

from django.db import migrations

PRUNE_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_prune_seal(prune_id bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    rec public.audit_auditprune%ROWTYPE;
    seal public.audit_auditseal%ROWTYPE;
    deleted bigint;
BEGIN
    SELECT * INTO rec FROM public.audit_auditprune WHERE id = prune_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit prune refused: no prune record %', prune_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO seal FROM public.audit_auditseal WHERE number = rec.seal_number;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit prune refused: no seal %', rec.seal_number
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_catalog.set_config('audit.pruning', prune_id::text, true);
    IF rec.emptied THEN
        DELETE FROM public.audit_auditevent e
        WHERE EXISTS (
            SELECT 1 FROM jsonb_array_elements(seal.ranges) r
            WHERE e.id BETWEEN (r->>0)::bigint AND (r->>1)::bigint
        );
    ELSE
        DELETE FROM public.audit_auditevent e
        USING jsonb_array_elements(rec.pruned) p
        WHERE e.id = (p->>0)::bigint AND e.mac = p->>1
          AND EXISTS (
            SELECT 1 FROM jsonb_array_elements(seal.ranges) r
            WHERE e.id BETWEEN (r->>0)::bigint AND (r->>1)::bigint
        );
    END IF;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM pg_catalog.set_config('audit.pruning', '', true);
    IF deleted <> rec.deleted_count THEN
        RAISE EXCEPTION 'audit prune refused: prune record % names % events, % matched',
            prune_id, rec.deleted_count, deleted
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN deleted;
END;
$$;
"""

REJECT_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_reject_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_auditevent'
       AND coalesce(pg_catalog.current_setting('audit.pruning', true), '') <> ''
       AND current_user = (
           SELECT pg_catalog.pg_get_userbyid(proowner) FROM pg_catalog.pg_proc
           WHERE oid = 'public.audit_prune_seal(bigint)'::pg_catalog.regprocedure
       ) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
"""

# 0002's version, restored when migrating back.
OLD_REJECT_FUNCTION = """
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
    schema_editor.execute(PRUNE_FUNCTION, params=None)
    schema_editor.execute(REJECT_FUNCTION, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("ALTER FUNCTION audit_reject_change() RESET ALL")
    schema_editor.execute(OLD_REJECT_FUNCTION, params=None)
    schema_editor.execute("DROP FUNCTION IF EXISTS audit_prune_seal(bigint)")


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_auditanchormark")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
