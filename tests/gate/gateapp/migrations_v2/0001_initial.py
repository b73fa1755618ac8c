import os

from django.db import migrations, models


def log(apps, schema_editor):
    apps.get_model("gateapp", "ApplyLog").objects.using(schema_editor.connection.alias).create(
        host=os.environ.get("DQ_GATE_NODE", "?"), migration="0001"
    )


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
            ],
        ),
        migrations.CreateModel(
            name="ApplyLog",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("host", models.CharField(max_length=200)),
                ("migration", models.CharField(max_length=100)),
            ],
        ),
        migrations.RunPython(log, migrations.RunPython.noop),
    ]
