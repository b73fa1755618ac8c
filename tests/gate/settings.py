"""Settings of one simulated host, chosen through the environment.

Each "host" of the gate tests is its own process (``python -m django …``) with:

* ``DQ_GATE_DB``       ``sqlite:/path/to/file``, ``postgres:<database name>``, or
                       ``dqcluster:<data dir>:<raft port>:<client port>`` (one embedded store node)
* ``DQ_GATE_VERSION``  ``v1`` or ``v2``: which migration package this host's code has
* ``DQ_GATE_NODE``     this host's address (``DQCLUSTER_NODE_ADDRESS``)
* ``DQ_GATE_API``      comma-separated API extension names (``DQCLUSTER_API_EXTENSIONS``)
* ``DQ_GATE_REDIS``    broker / result backend URL for the Celery tests (optional)
* ``DQ_GATE_RESULT_BACKEND``  a result backend other than ``DQ_GATE_REDIS`` (optional)
* ``DQ_GATE_CLOCK_AHEAD``  seconds this host's wall clock runs fast (optional)

so two processes with different values are two hosts running different code versions
against one shared database, the honest way to simulate a rolling upgrade.
"""

import os

SECRET_KEY = "dqcluster-gate-tests"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]

_db = os.environ.get("DQ_GATE_DB", "sqlite:/tmp/dqcluster-gate.sqlite3")
_kind, _, _name = _db.partition(":")
if _kind == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _name,
            "USER": os.environ.get("DQ_GATE_PG_USER", "postgres"),
            "HOST": os.environ.get("DQ_GATE_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DQ_GATE_PG_PORT", "5432"),
        }
    }
elif _kind == "dqcluster":
    # One embedded store node: ``dqcluster:<data dir>:<raft port>:<client port>``.
    # The client port is explicit: its default (the Raft port + 1) may be any
    # other process's ephemeral port.
    _dir, _raft_port, _client_port = _name.rsplit(":", 2)
    DATABASES = {
        "default": {
            "ENGINE": "django_dqcluster.backend",
            "NAME": "app",
            "OPTIONS": {
                "embedded": True, "data_dir": _dir,
                "bind": f"127.0.0.1:{_raft_port}", "client": f"127.0.0.1:{_client_port}",
            },
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _name, "OPTIONS": {"timeout": 20}}}

INSTALLED_APPS = [
    "django_dqcluster",
    "tests.gate.gateapp",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ROOT_URLCONF = "tests.gate.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

MIGRATION_MODULES = {"gateapp": "tests.gate.gateapp.migrations_" + os.environ.get("DQ_GATE_VERSION", "v1")}
if _kind != "dqcluster":  # our ENGINE names the host after its node (OPTIONS["bind"])
    DQCLUSTER_NODE_ADDRESS = os.environ.get("DQ_GATE_NODE", "host-a")
DQCLUSTER_API_EXTENSIONS = [name for name in os.environ.get("DQ_GATE_API", "").split(",") if name]

if os.environ.get("DQ_GATE_CLOCK_AHEAD"):
    # A host whose clock is wrong: this process's wall clock runs that many seconds fast.
    import time as _time

    _wall_clock, _ahead = _time.time, float(os.environ["DQ_GATE_CLOCK_AHEAD"])
    _time.time = lambda: _wall_clock() + _ahead

DQCLUSTER_WAIT_MAX_INTERVAL = float(os.environ.get("DQ_GATE_MAX_INTERVAL", "2"))

_redis = os.environ.get("DQ_GATE_REDIS")
if _redis:
    CELERY_BROKER_URL = _redis
    CELERY_RESULT_BACKEND = os.environ.get("DQ_GATE_RESULT_BACKEND", _redis)
    CELERY_TASK_DEFAULT_QUEUE = os.environ.get("DQ_GATE_QUEUE", "celery")

if os.environ.get("DQ_GATE_CHECKS"):
    # Everything the system checks must flag (tests/gate/test_gate_checks.py).
    INSTALLED_APPS.insert(0, "tests.gate.shadowapp")
    DATABASES["cluster"] = {
        "ENGINE": "django_dqcluster.backend",
        "NAME": "app",
        "OPTIONS": {"embedded": True, "data_dir": "/nonexistent", "bind": "10.0.0.1:7000", "peers": ["10.0.0.2:7000"]},
    }
    DATABASES["open_secret"] = {
        "ENGINE": "django_dqcluster.backend",
        "NAME": "app",
        "OPTIONS": {"address": "127.0.0.1:7101", "secret_file": os.environ.get("DQ_GATE_OPEN_SECRET", "/nonexistent")},
    }
    DATABASES["open_token"] = {
        "ENGINE": "django_dqcluster.backend",
        "NAME": "app",
        "OPTIONS": {"address": "127.0.0.1:7101,127.0.0.1:7111",
                    "token_file": os.environ.get("DQ_GATE_OPEN_TOKEN", "/nonexistent")},
    }
    DQCLUSTER_API_EXTENSIONS = "not-a-list"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_dqcluster": {"handlers": ["stderr"], "level": os.environ.get("DQ_GATE_LOG", "WARNING")}},
}
