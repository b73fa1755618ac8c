"""Celery tasks of the cluster version gate (the only module that imports Celery).

They replace the seed's ``WaitUpgradeNotification`` (a push with no timeout that could
deadlock a cluster, canonical/lxd#6300) with polling plus best-effort notification:

``wait_for_cluster_upgrade(alias, timeout)``
    Re-runs the gate with exponential backoff while members are behind, publishing its
    progress as task state ``WAITING`` (meta: every member's version, who is waited
    for, elapsed time, next check), so the wait is visible from any host
    (``AsyncResult(id).info``). Once every member reports the same version it runs the
    gated ``migrate`` (same cluster lock as the command: each migration is applied
    once, by whichever host gets there first), then notifies the peers. It holds one
    worker slot while it waits: route it to a queue of its own if that matters.

``cluster_upgraded(alias, by)``
    What a peer's worker runs when notified: re-check this host's gate (writes its row
    and heartbeat) and log the outcome. Sent to each member's own queue,
    ``dqcluster.<address>`` (``DQCLUSTER_NOTIFY_QUEUE``, a format string with
    ``{address}``), so a host's worker must consume it: ``celery worker -Q
    celery,dqcluster.<this host's address>``.

``recheck_cluster_gate(alias)``
    For Celery beat (LXD's KeepUpdated, every 5 minutes): re-run the gate, warn when
    this host is outdated (another member runs a newer version) and, if
    ``DQCLUSTER_UPDATE_COMMAND`` is set (an argv list, LXD's ``LXD_CLUSTER_UPDATE``),
    run it to upgrade this host. Also keeps this host's heartbeat fresh::

        CELERY_BEAT_SCHEDULE = {"dqcluster-recheck": {
            "task": "django_dqcluster.recheck_cluster_gate", "schedule": 300.0}}

Notifications are best effort: failing to send one is logged and reported in the
result, never raised, and never blocks a migration (canonical/microcluster#147).
"""

from __future__ import annotations

import io
import logging
import subprocess
import time

from celery import shared_task
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from . import gate

logger = logging.getLogger("django_dqcluster.tasks")

DEFAULT_NOTIFY_QUEUE = "dqcluster.{address}"


class ClusterGateRefused(Exception):
    """This host is behind or inconsistent: waiting cannot help, upgrading it does."""


class ClusterWaitTimeout(Exception):
    """Members were still behind when the task's timeout passed."""


def notify_queue(address: str) -> str:
    template = getattr(settings, "DQCLUSTER_NOTIFY_QUEUE", DEFAULT_NOTIFY_QUEUE)
    return template.format(address=address)


def _progress_meta(result: gate.GateResult, elapsed: float, next_check_in: float | None, attempt: int) -> dict:
    meta = result.as_dict()
    meta.update(
        {
            "elapsed_seconds": round(elapsed, 1),
            "next_check_in_seconds": None if next_check_in is None else round(next_check_in, 1),
            "checks": attempt,
        }
    )
    return meta


def notify_peers(alias: str, result: gate.GateResult) -> dict:
    """Tell every other member that the cluster was upgraded; best effort.

    Returns ``{"notified": [...], "notification_ids": {address: task id},
    "failed": {address: error}}``. Never raises.
    """
    notified, failed, ids = [], {}, {}
    broker_error = None
    for member in result.members:
        if member.is_self:
            continue
        if broker_error is not None:
            # Every peer's queue is on the same broker: do not wait out its
            # connection timeout once per peer.
            failed[member.address] = f"not sent, the broker failed for an earlier peer: {broker_error}"
            continue
        try:
            sent = cluster_upgraded.apply_async(
                kwargs={"alias": alias, "by": result.address},
                queue=notify_queue(member.address),
                retry=False,  # a broker outage must not hold the caller up
                expires=3600,  # a peer that is down for longer re-checks on its own
            )
        except Exception as error:  # noqa: BLE001 - whatever the broker raises
            broker_error = f"{type(error).__name__}: {error}"
            failed[member.address] = broker_error
            logger.warning("cluster upgrade notification to %s failed: %s", member.address, error)
        else:
            notified.append(member.address)
            ids[member.address] = sent.id
    return {"notified": notified, "notification_ids": ids, "failed": failed}


def _migrate(alias: str) -> tuple[list[str], str]:
    """Run the gated migrate; return (migrations this host applied, its output)."""
    from .management.commands.migrate import Command as MigrateCommand

    out = io.StringIO()
    command = MigrateCommand(stdout=out, stderr=out)
    call_command(command, database=alias, interactive=False, verbosity=1)
    return list(command.applied), out.getvalue()


@shared_task(bind=True, name="django_dqcluster.wait_for_cluster_upgrade")
def wait_for_cluster_upgrade(
    self,
    alias: str = DEFAULT_DB_ALIAS,
    timeout: float = 3600.0,
    interval: float = 1.0,
    max_interval: float = 30.0,
) -> dict:
    """Wait until every member runs this host's version, then migrate once and notify."""
    start = time.monotonic()
    delay = max(float(interval), 0.01)
    attempt = 0
    try:
        while True:
            attempt += 1
            result = gate.run_gate(alias)
            elapsed = time.monotonic() - start
            if result.status is gate.GateStatus.REFUSED:
                raise ClusterGateRefused(result.message)  # it names every member and its version
            if result.ready:
                self.update_state(state="MIGRATING", meta=_progress_meta(result, elapsed, None, attempt))
                try:
                    applied, output = _migrate(alias)
                except CommandError as error:
                    if getattr(error, "returncode", 1) == gate.EXIT_WAITING:
                        # A member changed between our check and the migrate's own: wait on.
                        logger.info("cluster changed before migrate; waiting again: %s", error)
                        applied = None
                    else:
                        raise
                if applied is not None:
                    notifications = notify_peers(alias, result)
                    logger.info(
                        "cluster upgrade on %s: applied %d migration(s) here; notified %s",
                        result.address, len(applied), notifications["notified"],
                    )
                    outcome = _progress_meta(result, time.monotonic() - start, None, attempt)
                    outcome.update({"applied": applied, "migrate_output": output, **notifications})
                    return outcome
            remaining = float(timeout) - (time.monotonic() - start)
            if remaining <= 0:
                raise ClusterWaitTimeout(
                    f"gave up after {elapsed:.0f}s: {result.message}"
                )
            pause = min(delay, float(max_interval), remaining)
            self.update_state(state="WAITING", meta=_progress_meta(result, elapsed, pause, attempt))
            logger.info("cluster gate on %s: %s; next check in %.0fs", result.address, result.message, pause)
            time.sleep(pause)
            delay = min(delay * 2, float(max_interval))
    finally:
        # A worker thread keeps its connection between tasks: do not hold it open.
        connections[alias].close()


@shared_task(name="django_dqcluster.cluster_upgraded")
def cluster_upgraded(alias: str = DEFAULT_DB_ALIAS, by: str | None = None) -> dict:
    """A peer finished the upgrade: re-check this host's gate now instead of at the next poll."""
    outcome = recheck_cluster_gate.run(alias)
    outcome["notified_by"] = by
    logger.info("cluster upgrade notification from %s: this host is %s", by, outcome["state"])
    return outcome


@shared_task(name="django_dqcluster.recheck_cluster_gate")
def recheck_cluster_gate(alias: str = DEFAULT_DB_ALIAS) -> dict:
    """Periodic re-check: refresh our row and heartbeat, warn (and update) when outdated."""
    try:
        result = gate.run_gate(alias)
    finally:
        connections[alias].close()
    outcome = result.as_dict()
    outcome["outdated"] = bool(result.ahead)
    if result.ahead:
        names = ", ".join(m.describe() for m in result.ahead)
        logger.warning(
            "this host (%s, %s) is outdated: %s run a newer version; upgrade it", result.address, result.ours, names
        )
        command = getattr(settings, "DQCLUSTER_UPDATE_COMMAND", None)
        if command:
            outcome["update_command"] = _run_update_command(command)
    elif result.status is gate.GateStatus.WAITING:
        names = ", ".join(m.describe() for m in result.waiting_for)
        logger.warning("this host (%s) waits for members to upgrade: %s", result.address, names)
    return outcome


def _run_update_command(command) -> dict:
    if isinstance(command, str) or not isinstance(command, (list, tuple)):
        logger.error("DQCLUSTER_UPDATE_COMMAND must be an argv list, not %r", command)
        return {"error": "DQCLUSTER_UPDATE_COMMAND must be an argv list"}
    timeout = float(getattr(settings, "DQCLUSTER_UPDATE_TIMEOUT", 600))
    try:
        completed = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.error("DQCLUSTER_UPDATE_COMMAND %r failed: %s", command, error)
        return {"error": str(error)}
    if completed.returncode:
        logger.error("DQCLUSTER_UPDATE_COMMAND %r exited %d: %s", command, completed.returncode, completed.stderr.strip())
    return {"returncode": completed.returncode, "stdout": completed.stdout[-2000:], "stderr": completed.stderr[-2000:]}
