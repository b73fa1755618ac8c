#!/usr/bin/env bash
# The test command (README "Tests"): Django's own test suite for the 17 backend-relevant
# apps against a 3-node store, then the project's pytest suite.
set -euo pipefail
cd "$(dirname "$0")"
python tests/django_suite/run.py tests/django_suite/apps.txt
python -m pytest "$@"
