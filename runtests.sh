#!/usr/bin/env bash
# The test command (README "Tests"): Django's own test suite for the 17 backend-relevant
# apps against a 3-node store through a follower (again reading through local reads, on
# one node and through a follower, once with deferred transactions through a follower and
# once with sealed sessions through the leader), then the project's pytest suite.
set -euo pipefail
cd "$(dirname "$0")"
# Strong reads through a follower: it answers those the leader says it may (it holds
# every answered write), the leader the rest; transactions and writes run on the leader.
python tests/django_suite/run.py tests/django_suite/apps.txt --via follower
# The same apps with consistency none: every SELECT outside a transaction is read from
# the node's file by the client itself (local reads), with Django's SQL functions.
python tests/django_suite/run.py tests/django_suite/apps.txt --nodes 1 --consistency none
# Once more through a follower: writes forwarded to the leader, reads from the follower's
# file, which the follower answers a write only once it holds (reading your own writes).
python tests/django_suite/run.py tests/django_suite/apps.txt --consistency none --via follower
# And with OPTIONS transaction_mode DEFERRED through a follower: transactions read there
# until their first write moves them to the leader, which takes the write lock if nothing
# was committed since they began reading.
python tests/django_suite/run.py tests/django_suite/apps.txt --transaction-mode DEFERRED --via follower
# And with every client session sealed (encrypted), as sessions to another host's node
# are, straight to the leader.
python tests/django_suite/run.py tests/django_suite/apps.txt --seal --via leader
python -m pytest "$@"
