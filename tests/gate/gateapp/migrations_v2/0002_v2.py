"""The v2 release's migration: a schema change plus a log row naming the host that ran it.

``DQ_GATE_MIGRATION_SLEEP`` stretches it so that two concurrent ``migrate`` runs overlap.
"""

import os
import time

from django.db import migrations


def log(apps, schema_editor):
    time.sleep(float(os.environ.get("DQ_GATE_MIGRATION_SLEEP", "0")))
    apps.get_model("gateapp", "ApplyLog").objects.using(schema_editor.connection.alias).create(
        host=os.environ.get("DQ_GATE_NODE", "?"), migration="0002"
    )


class Migration(migrations.Migration):
    dependencies = [("gateapp", "0001_initial")]
    operations = [
        migrations.RunSQL(
            "CREATE TABLE gateapp_v2only (id INTEGER PRIMARY KEY, note VARCHAR(50))",
            "DROP TABLE gateapp_v2only",
        ),
        migrations.RunPython(log, migrations.RunPython.noop),
    ]
