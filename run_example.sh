#!/usr/bin/env bash
# Run the example project (README "Set up and run").
#   ./run_example.sh            the project with its own embedded one-node store (var/example)
#   ./run_example.sh cluster    a local 3-node store (var/cluster) and the project as its client
#   ./run_example.sh upgrade [--celery]
#                               a rolling upgrade of three hosts from v1 to v2 (var/upgrade)
set -euo pipefail
cd "$(dirname "$0")"
PORT="${PORT:-8000}"

if [ "${1:-}" = "upgrade" ]; then
  shift
  exec python -m example_project.upgrade_demo "$@"
fi

if [ "${1:-embedded}" = "cluster" ]; then
  mkdir -p var
  # Every node registers Django's SQLite functions, so the ORM works as on plain SQLite.
  python -m django_dqcluster.store.local_cluster --nodes 3 --dir var/cluster \
    --connection-hook django.db.backends.sqlite3._functions:register > var/cluster.out 2>&1 &
  cluster_pid=$!
  trap 'kill $cluster_pid 2>/dev/null; wait $cluster_pid 2>/dev/null' EXIT
  for _ in $(seq 1 150); do
    grep -q '^clients:' var/cluster.out 2>/dev/null && break
    kill -0 "$cluster_pid" 2>/dev/null || { cat var/cluster.out; echo "the store did not start" >&2; exit 1; }
    sleep 0.2
  done
  cat var/cluster.out
  clients=$(sed -n 's/^clients: //p' var/cluster.out)
  first="${clients%%,*}"
  # One address is enough: the driver learns the other members from the node.
  export DATABASE_URL="dqcluster://${first}/example?secret_file=var/cluster/cluster.secret"
  echo "DATABASE_URL=$DATABASE_URL"
fi

python manage.py migrate --noinput
python manage.py cluster_status
echo "Open http://127.0.0.1:${PORT}/ (Ctrl-C stops)"
python manage.py runserver --noreload "127.0.0.1:${PORT}"
