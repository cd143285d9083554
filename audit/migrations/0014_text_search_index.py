"""An index for text search in event details, over any range (audit.selectors.details_search).

Searching details was a LIKE over every event of the range: 2 s at 10M events for
a week. Both databases get a trigram index, which answers the same question the
LIKE asked (the text anywhere in the JSON, ignoring case) for searches of three
characters or more:

- SQLite: an FTS5 table with the trigram tokenizer, contentless (it keeps the
  index, not a second copy of the JSON), filled by triggers in the same
  transaction as the event, and emptied of an event that retention deletes.
- PostgreSQL: a GIN index of pg_trgm on the JSON as text in capitals, the
  expression Django's icontains filters on (UPPER(...) LIKE UPPER(...)).

Existing events are indexed here: on a large table this migration takes minutes
(docs/upgrading.md).
"""

from django.db import migrations

SQLITE_FORWARD = [
    # detail=full: a search is a phrase of consecutive trigrams, which needs positions.
    "CREATE VIRTUAL TABLE audit_search USING fts5("
    "details, content='', tokenize='trigram', detail='full')",
    "INSERT INTO audit_search(rowid, details) SELECT id, details FROM audit_auditevent",
    "CREATE TRIGGER audit_search_insert AFTER INSERT ON audit_auditevent BEGIN "
    "INSERT INTO audit_search(rowid, details) VALUES (new.id, new.details); END",
    # A contentless table forgets a row only when told what it held.
    "CREATE TRIGGER audit_search_delete AFTER DELETE ON audit_auditevent BEGIN "
    "INSERT INTO audit_search(audit_search, rowid, details) "
    "VALUES ('delete', old.id, old.details); END",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS audit_search_delete",
    "DROP TRIGGER IF EXISTS audit_search_insert",
    "DROP TABLE IF EXISTS audit_search",
]
POSTGRESQL_FORWARD = [
    # Trusted since PostgreSQL 13: the database's owner may create it.
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS audit_details_trgm ON audit_auditevent "
    "USING gin ((UPPER(details::text)) gin_trgm_ops)",
]
POSTGRESQL_BACKWARD = ["DROP INDEX IF EXISTS audit_details_trgm"]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"sqlite": SQLITE_FORWARD, "postgresql": POSTGRESQL_FORWARD}.get(vendor, [])
    for sql in statements:
        schema_editor.execute(sql)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRESQL_BACKWARD}.get(vendor, [])
    for sql in statements:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("audit", "0013_fewer_indexes")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
