# Indexes for the dashboard's lead list (filters by source and owner, newest
# first; prefix search on name and company).

import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('leads', '0001_initial'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='lead',
            index=models.Index(fields=['source', '-created_at'], name='lead_source_created'),
        ),
        migrations.AddIndex(
            model_name='lead',
            index=models.Index(fields=['owner', '-created_at'], name='lead_owner_created'),
        ),
        migrations.AddIndex(
            model_name='lead',
            index=models.Index(django.db.models.functions.text.Lower('name'), name='lead_name_lower'),
        ),
        migrations.AddIndex(
            model_name='lead',
            index=models.Index(django.db.models.functions.text.Lower('company'), name='lead_company_lower'),
        ),
    ]
