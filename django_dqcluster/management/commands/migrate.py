"""``manage.py migrate`` behind the cluster version gate.

Django's own ``migrate``, run only when every member of the cluster runs this host's
version, so that new migrations never run while other hosts still run old code:

1. the gate (``gate.run_gate``) writes this host's version row and decides;
2. refused (this host is behind, or inconsistent versions): nothing is applied, exit 2;
3. waiting (members behind): nothing is applied, exit 3, unless ``--wait`` (re-check with
   backoff until ready or ``--timeout``) or ``--queue-wait`` (hand the wait over to the
   Celery task ``wait_for_cluster_upgrade``, which migrates once the members caught up);
4. ready: take the cluster-wide migration lock, check the gate again under it, and run
   Django's migrate. Whoever gets the lock first applies each migration; the others
   then find nothing to apply. Finally this host's version row is written again.

The lock: on PostgreSQL a session advisory lock (``pg_try_advisory_lock``), released by
the server if the process dies. Elsewhere (SQLite, the dqcluster store) a lease row in
``dqcluster_lock``, taken and renewed by single-statement write transactions. A write
transaction cannot simply be held across the whole run there: Django runs each
migration in its own transaction on the same connection, and SQLite's schema editor
must toggle foreign keys outside any transaction. The lease has a TTL
(``DQCLUSTER_MIGRATION_LOCK_TTL``, default 600 s) and is renewed before each migration,
so a crashed holder blocks the others for at most one TTL. Its times are the
database's (SQLite's ``julianday('now')``, which the store fixes per entry from its
leader's clock), not each host's: a host whose clock ran ahead would otherwise take
a lease still held, and run the same migrations a second time.

When Django's test runner builds a test database (it calls ``migrate``), the gate and
the lock are skipped: that database is private to the run. ``--plan`` and ``--check``
apply nothing and skip them too; ``--skip-cluster-gate`` skips them on purpose.
"""

import os
import time
import uuid

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import migrate as django_migrate
from django.db import DatabaseError, IntegrityError, connections
from django.db import Error as DBError  # DatabaseError and InterfaceError (a client the store refused)

from ... import gate
from ...cluster import ClusterError, is_transient_error
from .ensure_cluster_schema import GateReporter, check_alias, cluster_error, format_age

# "dqmg" in ASCII; the schema engine's own advisory key is "dqcl".
PG_MIGRATE_LOCK_KEY = 0x64716D67
LOCK_NAME = "migrate"
DEFAULT_LOCK_TTL = 600.0


class LockTimeout(CommandError):
    pass


class LockLost(CommandError):
    pass


# Milliseconds since the epoch by the database's clock, as one SQL expression.
SQLITE_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


class MigrationLock:
    """The cluster-wide migration lock for one alias (a context manager).

    ``holder`` names this host in what the waiting hosts print. ``on_wait(holder_text,
    elapsed)`` is called while another host holds it.
    """

    def __init__(self, alias, holder, *, ttl=None, timeout=600.0, on_wait=None, sleeper=time.sleep, clock=time.monotonic):
        self.alias = alias
        self.connection = connections[alias]
        self.holder = f"{holder} (pid {os.getpid()}, {uuid.uuid4().hex[:8]})"
        self.ttl = float(ttl if ttl is not None else getattr(settings, "DQCLUSTER_MIGRATION_LOCK_TTL", DEFAULT_LOCK_TTL))
        if not self.ttl > 0:
            raise CommandError(f"DQCLUSTER_MIGRATION_LOCK_TTL must be a positive number of seconds, not {self.ttl}")
        self.timeout = timeout
        self.on_wait = on_wait
        self.sleeper = sleeper
        self.clock = clock
        self.held = False
        self.advisory = self.connection.vendor == "postgresql"
        self._ttl_ms = int(self.ttl * 1000)

    @property
    def now(self):
        """The lease's clock, as SQL: the database's where it has one we know, else this host's."""
        if self.connection.vendor == "sqlite":
            return SQLITE_NOW_MS
        return str(int(time.time() * 1000))

    # -- public ----------------------------------------------------------------------------

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()
        return False

    def acquire(self):
        start = self.clock()
        delay = 0.1
        if not self.advisory:
            self._create_table()
        while True:
            try:
                if self._try_acquire():
                    self.held = True
                    return
            except DatabaseError as error:
                # Another host's migration holds SQLite's write lock longer than the busy
                # timeout: the same as "the lock is taken", try again.
                if not is_transient_error(error):
                    raise
            elapsed = self.clock() - start
            if elapsed >= self.timeout:
                raise LockTimeout(
                    f"timed out after {self.timeout:.0f}s waiting for the cluster migration lock "
                    f"of database {self.alias!r}, held by {self.describe_holder()}",
                    returncode=1,
                )
            if self.on_wait:
                self.on_wait(self.describe_holder(), elapsed)
            self.sleeper(min(delay, max(self.timeout - elapsed, 0.01)))
            delay = min(delay * 2, 2.0)

    def renew(self):
        """Push the lease's expiry forward; raise ``LockLost`` if another host took it."""
        if not self.held or self.advisory:
            return
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE dqcluster_lock SET expires_at = {self.now} + %s WHERE name = %s AND holder = %s",
                [self._ttl_ms, LOCK_NAME, self.holder],
            )
            if cursor.rowcount != 1:
                self.held = False
                raise LockLost(
                    f"the cluster migration lock of database {self.alias!r} expired and was taken "
                    f"by {self.describe_holder()}; stopping before the next migration "
                    "(raise DQCLUSTER_MIGRATION_LOCK_TTL if single migrations run that long)",
                    returncode=1,
                )

    def release(self):
        if not self.held:
            return
        self.held = False
        with self.connection.cursor() as cursor:
            if self.advisory:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [PG_MIGRATE_LOCK_KEY])
            else:
                cursor.execute("DELETE FROM dqcluster_lock WHERE name = %s AND holder = %s", [LOCK_NAME, self.holder])

    def describe_holder(self):
        """Who holds the lock now, for the messages of the hosts that wait."""
        try:
            with self.connection.cursor() as cursor:
                if self.advisory:
                    cursor.execute(
                        "SELECT a.application_name, a.pid, a.client_addr FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = %s AND l.granted",
                        [PG_MIGRATE_LOCK_KEY],
                    )
                    row = cursor.fetchone()
                    if row is None:
                        return "nobody (just released)"
                    name, pid, client = row
                    return f"{name or 'an unnamed session'} (server pid {pid}{', from ' + str(client) if client else ''})"
                cursor.execute(f"SELECT holder, expires_at - {self.now} FROM dqcluster_lock WHERE name = %s",
                               [LOCK_NAME])
                row = cursor.fetchone()
        except DatabaseError as error:
            return f"an unknown holder ({error})"
        if row is None:
            return "nobody (just released)"
        holder, left_ms = row
        left = int(left_ms) / 1000
        return f"{holder}, lease {'expires in ' + format_age(left) if left > 0 else 'expired'}"

    # -- internals -------------------------------------------------------------------------

    def _create_table(self):
        with self.connection.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS dqcluster_lock ("
                "name VARCHAR(100) NOT NULL PRIMARY KEY, "
                "holder VARCHAR(300) NOT NULL, "
                "acquired_at BIGINT NOT NULL, "
                "expires_at BIGINT NOT NULL)"
            )

    def _try_acquire(self):
        if self.advisory:
            with self.connection.cursor() as cursor:
                # Shown to the hosts that wait (describe_holder).
                cursor.execute("SELECT set_config('application_name', %s, false)", [f"dqcluster migrate {self.holder}"[:63]])
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [PG_MIGRATE_LOCK_KEY])
                return bool(cursor.fetchone()[0])
        now = self.now
        with self.connection.cursor() as cursor:
            # Each statement is its own write transaction: take the row if it is free
            # (expired, or ours), else create it; a concurrent creator makes ours fail.
            cursor.execute(
                f"UPDATE dqcluster_lock SET holder = %s, acquired_at = {now}, expires_at = {now} + %s "
                f"WHERE name = %s AND (expires_at < {now} OR holder = %s)",
                [self.holder, self._ttl_ms, LOCK_NAME, self.holder],
            )
            if cursor.rowcount == 1:
                return True
            try:
                cursor.execute(
                    "INSERT INTO dqcluster_lock (name, holder, acquired_at, expires_at) "
                    f"VALUES (%s, %s, {now}, {now} + %s)",
                    [LOCK_NAME, self.holder, self._ttl_ms],
                )
            except IntegrityError:
                return False
            return True


class Command(django_migrate.Command):
    help = (
        django_migrate.Command.help
        + " Runs the cluster version gate first: migrations are applied only when every "
        "member runs this host's version (exit 3 while members are behind, exit 2 when "
        "this host is behind), under a cluster-wide lock so each one is applied once."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        group = parser.add_argument_group("cluster gate")
        group.add_argument(
            "--skip-cluster-gate",
            action="store_true",
            help="Migrate without the version gate and the cluster lock (single host, repairs).",
        )
        group.add_argument(
            "--wait",
            action="store_true",
            help="While members are behind, re-check with exponential backoff until ready or --timeout, then migrate.",
        )
        group.add_argument(
            "--queue-wait",
            action="store_true",
            help="While members are behind, queue the Celery task wait_for_cluster_upgrade "
            "(it migrates once they caught up) and exit 0.",
        )
        group.add_argument(
            "--timeout",
            type=float,
            default=600.0,
            help="Seconds --wait (or the queued task) waits for members at most (default 600).",
        )
        group.add_argument(
            "--lock-timeout",
            type=float,
            default=600.0,
            help="Seconds to wait for another host's migration to finish (default 600).",
        )

    def handle(self, *args, **options):
        self.cluster_lock = None
        self.migrating = False
        self.applied = []
        alias = options["database"]
        check_alias(alias)
        if (
            options["skip_cluster_gate"]
            or options["plan"]
            or options["check_unapplied"]
            or not gate.gate_enabled(alias)
        ):
            return super().handle(*args, **options)
        if options["wait"] and options["queue_wait"]:
            raise CommandError("--wait and --queue-wait exclude each other: wait here, or let Celery wait")
        for name in ("timeout", "lock_timeout"):
            if not options[name] > 0:
                raise CommandError(f"--{name.replace('_', '-')} must be a positive number of seconds, not {options[name]}")

        verbosity = options["verbosity"]
        reporter = GateReporter(self, verbosity)
        deadline = time.monotonic() + options["timeout"]
        try:
            while True:
                result = self.pass_gate(alias, options, reporter, deadline)
                if result is None:
                    return  # handed over to Celery
                lock = MigrationLock(
                    alias,
                    result.address,
                    timeout=options["lock_timeout"],
                    on_wait=self.lock_waiter(verbosity),
                )
                with lock:
                    self.cluster_lock = lock
                    # Members may have changed while we waited for the lock.
                    recheck = gate.run_gate(alias)
                    if recheck.ready:
                        if verbosity >= 2:
                            self.stdout.write(f"  Took the cluster migration lock; {recheck.message}")
                        self.migrating = True
                        super().handle(*args, **options)
                        self.migrating = False
                        gate.record_node_version(alias)
                        return
                    self.cluster_lock = None
                if not options["wait"] or recheck.status is gate.GateStatus.REFUSED:
                    self.stop(recheck, reporter)
                # --wait: members changed under us; wait again (same deadline).
        except (ClusterError, DBError) as error:
            if self.migrating:
                raise  # a migration's own error, as plain migrate reports it: the gate had passed
            raise cluster_error(error) from error
        finally:
            self.cluster_lock = None

    def pass_gate(self, alias, options, reporter, deadline):
        """The gate's answer once ready; raises for refused/waiting; None if queued."""
        remaining = deadline - time.monotonic()
        if options["wait"] and remaining > 0:
            result = gate.wait_for_gate(alias, timeout=remaining, on_progress=reporter.progress)
        else:
            result = gate.run_gate(alias)
        if result.ready:
            if options["verbosity"] >= 1:
                self.stdout.write(f"Cluster gate: {result.message}", self.style.MIGRATE_HEADING)
                if result.bootstrapped:
                    self.stdout.write("  Created the cluster tables; this host is the first member.")
                elif result.registered:
                    self.stdout.write(f"  Registered this host ({result.address}) as a new member.")
            return result
        if result.status is gate.GateStatus.WAITING and options["queue_wait"]:
            reporter.result(result)
            self.queue_wait(alias, options)
            return None
        self.stop(result, reporter)

    def stop(self, result, reporter):
        reporter.result(result)
        if result.status is gate.GateStatus.WAITING:
            reporter.write("  No migrations applied: the last member to upgrade applies them.", self.style.WARNING)
        raise CommandError(result.message, returncode=result.exit_code)

    def queue_wait(self, alias, options):
        try:
            from ...tasks import wait_for_cluster_upgrade
        except ImportError as error:
            raise CommandError(f"--queue-wait needs Celery (pip install 'django-dqcluster[celery]'): {error}") from error
        app = wait_for_cluster_upgrade.app
        if not app.conf.broker_url and not app.conf.task_always_eager:
            # Without the project's Celery app loaded, shared tasks fall back to Celery's
            # default app and its default broker (amqp://localhost), which may well
            # accept the message: a wait nobody would ever run.
            raise CommandError(
                "--queue-wait: no Celery broker is configured (set CELERY_BROKER_URL and load the "
                "project's Celery app in its __init__.py); nothing was applied",
                returncode=1,
            )
        try:
            task = wait_for_cluster_upgrade.apply_async(
                kwargs={"alias": alias, "timeout": options["timeout"], "max_interval": gate.wait_max_interval()},
                retry=False,
            )
        except Exception as error:  # noqa: BLE001 - the broker's errors are many and varied
            raise CommandError(
                f"could not queue the cluster wait task ({type(error).__name__}: {error}); "
                "nothing was applied: run migrate again, or with --wait",
                returncode=1,
            ) from error
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"  Queued Celery task wait_for_cluster_upgrade ({task.id}): it migrates once every "
                f"member runs this version (waits at most {options['timeout']:.0f}s). Nothing applied here.",
                self.style.WARNING,
            )
        self.queued_task_id = task.id

    def lock_waiter(self, verbosity):
        state = {"last": None, "printed_at": None}

        def on_wait(holder, elapsed):
            if verbosity < 1:
                return
            holder_id = holder.split(", lease")[0]
            if holder_id != state["last"] or elapsed - state["printed_at"] >= 10:
                state["last"] = holder_id
                state["printed_at"] = elapsed
                self.stdout.write(f"  Waiting for the cluster migration lock, held by {holder}...", self.style.WARNING)

        return on_wait

    def migration_progress_callback(self, action, migration=None, fake=False):
        # Renew the lease between migrations (outside their transactions), and stop
        # before applying anything if another host took the lock meanwhile.
        if action in ("apply_start", "unapply_start") and self.cluster_lock is not None:
            self.cluster_lock.renew()
        if action in ("apply_success",) and migration is not None:
            self.applied.append(f"{migration.app_label}.{migration.name}")
        super().migration_progress_callback(action, migration, fake)
