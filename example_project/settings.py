"""Settings for the example project, read from the environment with django-environ.

By default the project runs its own store node inside the Django process
(an embedded one-node cluster under ``var/example``). Point ``DATABASE_URL``
at a running cluster to use it instead, e.g. the one that
``python -m django_dqcluster.store.local_cluster`` starts:

    DATABASE_URL="dqcluster://127.0.0.1:PORT/example?secret_file=var/cluster/cluster.secret"
"""

from pathlib import Path

import environ

import django_dqcluster  # noqa: F401  (registers the dqcluster:// scheme with django-environ)

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

SECRET_KEY = env("DJANGO_SECRET_KEY", default="example-only-not-secret")
DEBUG = env.bool("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    # First, so its `migrate` (the cluster version gate) wins over Django's.
    "django_dqcluster",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "example_project.notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATA_DIR = Path(env("DQCLUSTER_DATA_DIR", default=str(BASE_DIR / "var" / "example")))

if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django_dqcluster.backend",
            "NAME": "example",
            "OPTIONS": {
                # This process runs the node; a one-node cluster needs no peers.
                "embedded": True,
                "data_dir": str(DATA_DIR),
                "bind": env("DQCLUSTER_BIND", default="127.0.0.1:7401"),
                "client": env("DQCLUSTER_CLIENT", default="127.0.0.1:7402"),
            },
        }
    }

# The version gate: what this code adds to the cluster's API, in order.
DQCLUSTER_API_EXTENSIONS = ["notes"]
# This host's name in the cluster's nodes table. Unset, it is the node's address
# from DATABASES, or the host name where that is a loopback address (the same on
# every host); several "hosts" on one machine (upgrade_demo.py) set it apart.
DQCLUSTER_NODE_ADDRESS = env("DQCLUSTER_NODE_ADDRESS", default=None)
# The longest pause between two checks of a waiting migrate --wait or Celery task.
DQCLUSTER_WAIT_MAX_INTERVAL = env.float("DQCLUSTER_WAIT_MAX_INTERVAL", default=30.0)
# GET /dqcluster/metrics answers a Prometheus scrape that sends this bearer token (unset: off).
DQCLUSTER_METRICS_TOKEN = env("DQCLUSTER_METRICS_TOKEN", default=None)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default="redis://127.0.0.1:6379/0")
