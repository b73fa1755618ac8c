"""Moving a project off the store to PostgreSQL with Django's dumpdata and loaddata: the README's recipe, run."""

import json
import os
import uuid

import pytest

from tests.services import service_unavailable

from .test_example_project import example_env, manage

PG_ADMIN_DSN = os.environ.get("DQCLUSTER_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")

#: The README's command, word for word.
DUMP = ["dumpdata", "--natural-foreign", "--natural-primary", "-e", "contenttypes", "-e", "auth.permission",
        "-e", "dqcluster"]


@pytest.fixture
def postgresql_database():
    psycopg = pytest.importorskip("psycopg")
    name = f"dq_move_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        service_unavailable(f"PostgreSQL is not running at {PG_ADMIN_DSN!r}: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgres://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def ran(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_a_project_on_the_store_moves_to_postgresql_with_its_rows_users_and_counters(tmp_path, postgresql_database):
    on_store = example_env(tmp_path)
    ran(manage(on_store, "migrate", "-v0"))
    ran(manage(on_store, "shell", "-c", (
        "from django.contrib.auth.models import User\n"
        "from example_project.notes.models import Note\n"
        "User.objects.create_superuser('admin', 'admin@example.com', 'a password')\n"
        "for i in range(5): Note.objects.create(text=f'note {i} é')\n"
        "Note.objects.filter(text='note 4 é').delete()  # the next id stays 6 on the store\n"
    )))
    dump = tmp_path / "data.json"
    ran(manage(on_store, *DUMP, "-o", str(dump)))
    assert {row["model"] for row in json.loads(dump.read_text())} == {"auth.user", "notes.note"}

    on_postgresql = dict(on_store, DATABASE_URL=postgresql_database)
    ran(manage(on_postgresql, "migrate", "-v0"))
    assert "Installed 5 object(s)" in ran(manage(on_postgresql, "loaddata", str(dump)))

    moved = json.loads(ran(manage(on_postgresql, "shell", "-c", (
        "import json\n"
        "from django.contrib.auth import authenticate\n"
        "from django.db import connection\n"
        "from django_dqcluster.models import ClusterNode\n"
        "from example_project.notes.models import Note\n"
        "print(json.dumps({'vendor': connection.vendor,\n"
        "    'notes': sorted(Note.objects.values_list('id', 'text')),\n"
        "    'next_id': Note.objects.create(text='the first on PostgreSQL').id,\n"
        "    'admin_logs_in': authenticate(username='admin', password='a password') is not None,\n"
        "    'gate_members': list(ClusterNode.objects.values_list('name', flat=True))}))\n"
    ))).splitlines()[-1])
    assert moved["vendor"] == "postgresql"
    assert moved["notes"] == [[1, "note 0 é"], [2, "note 1 é"], [3, "note 2 é"], [4, "note 3 é"]]
    # loaddata set the sequence past the largest id it loaded: the deleted note's id 5 is used again.
    assert moved["next_id"] == 5
    assert moved["admin_logs_in"]
    # Only the host that ran migrate there: the store's member did not come along to hold up the gate.
    assert len(moved["gate_members"]) == 1
    assert on_store["DQCLUSTER_BIND"] not in moved["gate_members"]
