import os

from django.apps import AppConfig


class GateAppConfig(AppConfig):
    name = "tests.gate.gateapp"
    label = "gateapp"
    default_auto_field = "django.db.models.AutoField"

    def ready(self):
        if os.environ.get("DQ_GATE_REDIS"):
            from tests.gate import celery_app  # noqa: F401 - the project's Celery app
