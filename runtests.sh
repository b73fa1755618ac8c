#!/usr/bin/env bash
# The test command (README "Tests"): Django's own test suite for the backend-relevant
# apps against a 3-node store, then the project's pytest suite.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f tests/django_suite/run.sh ]; then
  bash tests/django_suite/run.sh tests/django_suite/apps.txt
fi
python -m pytest "$@"
