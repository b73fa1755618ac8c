"""Settings of the Celery worker of test_celery_time_limits.py: a client of one store node.

* ``DQ_CELERY_CLIENT``       the node's client address (``HOST:PORT``)
* ``DQ_CELERY_SECRET_FILE``  the cluster's secret file
* ``DQ_CELERY_BROKER``       the Redis URL used as broker and result backend

Connections persist across tasks (``CONN_MAX_AGE = None``), as in workers that
keep them: a connection a time limit interrupted serves the next task too.
"""

import os

SECRET_KEY = "celery-time-limit-tests"
USE_TZ = False
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "tests.backend.bapp", "django_dqcluster"]
DATABASES = {
    "default": {
        "ENGINE": "django_dqcluster.backend",
        "NAME": "celery_time_limits",
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            "address": os.environ["DQ_CELERY_CLIENT"],
            "secret_file": os.environ["DQ_CELERY_SECRET_FILE"],
            "timeout": 30,
        },
    }
}
CELERY_BROKER_URL = os.environ["DQ_CELERY_BROKER"]
CELERY_RESULT_BACKEND = os.environ["DQ_CELERY_BROKER"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
