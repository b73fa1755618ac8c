"""Settings for Django's own test suite against a dqcluster store (see run.sh).

Both aliases Django's suite needs (``default`` and ``other``, different
names) are databases of the same running cluster. The cluster's client
addresses and secret file come from the environment, which run.sh sets after
starting a 3-node LocalCluster.
"""

import os

_ADDRESSES = os.environ["DQCLUSTER_ADDRESSES"]  # "127.0.0.1:7101,127.0.0.1:7102,..."
_SECRET_FILE = os.environ["DQCLUSTER_SECRET_FILE"]
_RUN = os.environ.get("DQCLUSTER_RUN_ID", "run")

_OPTIONS = {
    "address": _ADDRESSES,
    "secret_file": _SECRET_FILE,
    "consistency": os.environ.get("DQCLUSTER_CONSISTENCY", "strong"),
    "timeout": float(os.environ.get("DQCLUSTER_TIMEOUT", "30")),
}
if os.environ.get("DQCLUSTER_TRANSACTION_MODE"):
    _OPTIONS["transaction_mode"] = os.environ["DQCLUSTER_TRANSACTION_MODE"]
if os.environ.get("DQCLUSTER_SEAL"):
    _OPTIONS["seal"] = True

DATABASES = {
    "default": {
        "ENGINE": "django_dqcluster.backend",
        "NAME": f"django_{_RUN}_default",
        "OPTIONS": dict(_OPTIONS),
    },
    "other": {
        "ENGINE": "django_dqcluster.backend",
        "NAME": f"django_{_RUN}_other",
        "OPTIONS": dict(_OPTIONS),
    },
}

SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
