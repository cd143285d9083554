"""Rollups of error groups (AuditErrorHour, AuditErrorLead), filled from the sealed
errors already stored; the sealer keeps them from then on. Errors are a small
share of events, read through the partial error index: seconds at 10M events."""

from django.db import migrations, models


def fill(apps, schema_editor):
    # The live function: the rollups are derived data, recountable at any time
    # (a later migration that regroups errors calls it again).
    from audit.integrity import rebuild_error_rollups

    rebuild_error_rollups()


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0014_text_search_index'),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditErrorHour',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.DateTimeField()),
                ('fingerprint', models.CharField(max_length=16)),
                ('count', models.BigIntegerField(default=0)),
                ('last_seen', models.DateTimeField()),
                ('last_id', models.BigIntegerField()),
            ],
            options={
                'indexes': [models.Index(fields=['fingerprint', 'hour'], name='audit_error_hour_fp')],
                'constraints': [models.UniqueConstraint(fields=('hour', 'fingerprint'), name='audit_error_hour_key')],
            },
        ),
        migrations.CreateModel(
            name='AuditErrorLead',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('fingerprint', models.CharField(max_length=16)),
                ('lead_public_id', models.CharField(max_length=32)),
                ('count', models.BigIntegerField(default=0)),
                ('last_seen', models.DateTimeField()),
            ],
            options={
                'indexes': [models.Index(fields=['fingerprint', '-last_seen'], name='audit_error_lead_seen')],
                'constraints': [models.UniqueConstraint(fields=('fingerprint', 'lead_public_id'), name='audit_error_lead_key')],
            },
        ),
        migrations.RunPython(fill, migrations.RunPython.noop, elidable=False),
    ]
