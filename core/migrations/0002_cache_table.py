from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    # The rate limiters and figure caches live in the database cache: without
    # its table every API request is a 500. `migrate` alone must be enough on
    # a fresh install; createcachetable skips a table that exists.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
