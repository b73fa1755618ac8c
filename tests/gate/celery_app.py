"""The test project's Celery app, as a project defines it (``proj/celery.py``).

Imported when Django starts (``gateapp``'s AppConfig.ready, standing in for the project
package's ``__init__``), so ``shared_task``s — ours included — bind to it in every host
process: the worker, and the ``migrate --queue-wait`` that queues the wait task.
"""

from celery import Celery

app = Celery("gatehost")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.set_default()
