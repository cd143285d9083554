"""Slack webhook URLs become credentials: channels name an environment variable (url_env).

A migration cannot move a URL into the process environment, so each existing
Slack channel gets url_env = SLACK_<NAME>_URL and keeps its old URL in
`target` for one release, unused: sending reads url_env only and fails with
"environment variable SLACK_<NAME>_URL is not set" until the operator sets it.
The alerts.W001 system check and the admin list the channels still holding a
URL; saving such a channel in the admin (or the next release's migration)
clears it. See docs/upgrading.md.
"""

import re

from django.db import migrations, models


def slack_env_name(name: str) -> str:
    stem = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") or "CHANNEL"
    return f"SLACK_{stem}"[:96] + "_URL"


def name_url_envs(apps, schema_editor):
    AlertChannel = apps.get_model("alerts", "AlertChannel")
    for channel in AlertChannel.objects.filter(kind="slack", url_env=""):
        channel.url_env = slack_env_name(channel.name)
        channel.save(update_fields=["url_env"])


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="alertchannel",
            name="url_env",
            field=models.CharField(
                blank=True,
                help_text=(
                    "Environment variable holding the Slack incoming-webhook URL, "
                    "e.g. SLACK_OPS_URL."
                ),
                max_length=100,
            ),
        ),
        migrations.AlterField(
            model_name="alertchannel",
            name="target",
            field=models.CharField(
                blank=True,
                help_text=(
                    "Email: comma-separated addresses. Webhook: the URL to POST to. Slack: empty."
                ),
                max_length=1000,
            ),
        ),
        migrations.RunPython(name_url_envs, migrations.RunPython.noop),
    ]
