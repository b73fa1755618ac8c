"""A project's Celery app whose tasks reach their soft time limit in the middle of a query.

    DJANGO_SETTINGS_MODULE=tests.backend.celery_settings \
        python -m celery -A tests.backend.celery_worker worker --pool=prefork --concurrency=1

Celery raises ``SoftTimeLimitExceeded`` in the task from a signal handler,
wherever the task is: here, waiting for the node's answer. A task that catches
it and goes on with the database (records that it timed out, as tasks do) must
get its own answers, and a transaction it was in must be gone.
"""

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, transaction

app = Celery("celery_time_limits")
app.config_from_object("django.conf:settings", namespace="CELERY")

#: Never ends on the test's node, which has no step limit: only the node's cancellation stops it.
ENDLESS_READ = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


@app.task
def create_table():
    from django.db.utils import OperationalError

    from tests.backend.bapp.models import Item

    try:
        with connection.schema_editor() as editor:
            editor.create_model(Item)
    except OperationalError as error:  # from an earlier run of this worker's database
        if "already exists" not in str(error):
            raise
    return "ready"


@app.task(soft_time_limit=1)
def read_past_the_time_limit(number):
    """``number`` read back after the limit stopped a read; what the connection answers then."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(ENDLESS_READ)
            return f"the read ended: {cursor.fetchall()}"
    except SoftTimeLimitExceeded:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s", [number])
        return cursor.fetchall()


@app.task(soft_time_limit=1)
def transaction_past_the_time_limit(name):
    """The rows named ``name`` once the limit stopped a transaction that wrote one and the task recorded so."""
    from tests.backend.bapp.models import Item

    try:
        with transaction.atomic():
            Item.objects.create(name=name, value=1)
            with connection.cursor() as cursor:
                cursor.execute(ENDLESS_READ)
    except SoftTimeLimitExceeded:
        Item.objects.create(name=name, value=2)
    return list(Item.objects.filter(name=name).values_list("value", flat=True))


@app.task
def answer(number):
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s", [number])
        return cursor.fetchall()
