"""Read-only models over the cluster tables (created by the gate, not by migrations).

``ClusterNode`` maps the ``nodes`` table that the version gate keeps (see ``gate.py``):
one row per host, with the version that host's code reports. It is unmanaged: Django
never creates, alters or drops the table, and the app ships no migration for it, so
adding the app does not change any host's schema level.
"""

import datetime as dt

from django.conf import settings
from django.db import models
from django.utils import timezone


class UTCDateTimeField(models.DateTimeField):
    """A DATETIME column written as UTC text by SQLite or as TIMESTAMP by PostgreSQL.

    The seed's ``nodes.heartbeat`` has no time zone; the gate writes UTC. PostgreSQL
    hands back a naive datetime, which Django would refuse to localise with USE_TZ.
    """

    def from_db_value(self, value, expression, connection):
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                return None
        if isinstance(value, dt.datetime) and timezone.is_naive(value) and settings.USE_TZ:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


class ClusterNode(models.Model):
    """A member of the cluster as the version gate sees it (read-only)."""

    id = models.BigIntegerField(primary_key=True)
    name = models.TextField()
    description = models.TextField(blank=True, default="")
    address = models.TextField()
    schema = models.IntegerField(help_text="Number of migrations in this member's code")
    api_extensions = models.IntegerField(help_text="Number of API extensions in this member's code")
    heartbeat = UTCDateTimeField(null=True, help_text="Last time this member ran the gate (UTC)")
    pending = models.IntegerField(default=0)

    class Meta:
        managed = False
        db_table = "nodes"
        ordering = ["id"]
        verbose_name = "cluster node"
        verbose_name_plural = "cluster nodes"
        default_permissions = ("view",)

    def __str__(self):
        return f"{self.address} (schema {self.schema}, api_extensions {self.api_extensions})"

    @property
    def version(self):
        return (self.schema, self.api_extensions)

    def gate_state(self, members=None):
        """This member's state against every member: ready / waiting for X / ..."""
        from .cluster import Member
        from .cluster.versions import GateState, decide

        if members is None:
            members = list(type(self)._default_manager.using(self._state.db or "default"))
        others = [Member(m.address, m.schema, m.api_extensions) for m in members]
        decision = decide(self.version, others)
        if decision.state is GateState.READY:
            return "ready"
        if decision.state is GateState.PEERS_BEHIND:
            return "newer than " + ", ".join(m.address for m in decision.behind) + ": waiting for them"
        if decision.state is GateState.WE_ARE_BEHIND:
            return "behind: upgrade"
        return "inconsistent with " + ", ".join(m.address for m in decision.inconsistent)
