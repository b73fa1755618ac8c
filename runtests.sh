#!/usr/bin/env bash
# The test command (README "Tests"): Django's own test suite for the 17 backend-relevant
# apps against a 3-node store (and once more reading through local reads), then the
# project's pytest suite.
set -euo pipefail
cd "$(dirname "$0")"
python tests/django_suite/run.py tests/django_suite/apps.txt
# The same apps with consistency none: every SELECT outside a transaction is read from
# the node's file by the client itself (local reads), with Django's SQL functions.
python tests/django_suite/run.py tests/django_suite/apps.txt --nodes 1 --consistency none
python -m pytest "$@"
