"""Every error the cluster package raises, with the seed's exact texts.

The Go package reports failures as wrapped errors ("prefix: cause"). Here each wrap is an
exception whose ``str()`` is that same text and whose ``__cause__`` is the wrapped
exception, so that:

* messages compared by operators, tests and scripts stay byte-for-byte the seed's;
* ``retry.is_transient_error`` can still walk down to the driver's own exception (Go's
  ``errors.Cause``) and see that a "failed to apply update 0: database is locked" is worth
  another attempt.

The gate errors additionally carry every member's version, because "this node's version is
behind" with no hint of *which* member is ahead was one of the loudest LXD complaints
(canonical/lxd#5045): ``str(err)`` stays the seed text, ``err.report()`` adds the members
(of this error and of every error it wraps).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

# Seed texts, kept in one place so the exact wording is easy to audit.
MSG_GRACEFUL_ABORT = "schema check gracefully aborted"
MSG_SOME_NODES_BEHIND = "some nodes are behind this node's version"
MSG_NODE_BEHIND = "this node's version is behind, please upgrade"
MSG_INCONSISTENT = "nodes have inconsistent versions"
MSG_UNCLUSTERED = "found more than one unclustered nodes"


class Version(NamedTuple):
    """A node's version: the number of schema updates and of API extensions it knows."""

    schema: int
    api_extensions: int

    def __str__(self) -> str:
        return f"schema {self.schema}, api_extensions {self.api_extensions}"


class Member(NamedTuple):
    """One row of the ``nodes`` table, as far as the gate is concerned."""

    address: str
    schema: int
    api_extensions: int

    @property
    def version(self) -> Version:
        return Version(self.schema, self.api_extensions)


class ClusterError(Exception):
    """Base class of every error raised by ``django_dqcluster.cluster``."""

    def details(self) -> list[str]:
        """Extra lines an operator needs besides the message (none by default)."""
        return []

    def report(self) -> str:
        """The message, then the details of this error and of every error it wraps."""
        lines = [str(self)]
        error: BaseException | None = self
        while error is not None:
            details = getattr(error, "details", None)
            if callable(details):
                lines.extend(f"  {line}" for line in details())
            error = error.__cause__
        return "\n".join(lines)


def wrap(prefix: str, cause: BaseException, cls: type[ClusterError] = ClusterError) -> ClusterError:
    """Build ``cls("<prefix>: <cause>")`` chained to ``cause``, like Go's ``errors.Wrap``.

    The caller must ``raise wrap(...) from cause`` (or rely on the ``__cause__`` set here)
    so that the cause chain survives for the transient-error predicate.
    """
    error = cls(f"{prefix}: {cause}")
    error.__cause__ = cause
    return error


class SchemaError(ClusterError):
    """The schema engine could not bring the database to the expected version."""


class GracefulAbort(ClusterError):
    """Raised by a schema check to stop ``Schema.ensure`` *and still commit* its work.

    ``Schema.ensure`` raises it again after the commit, with ``version`` set to the schema
    version found in the database, so the caller knows nothing was applied.
    """

    def __init__(self, message: str = MSG_GRACEFUL_ABORT, *, version: int | None = None):
        super().__init__(message)
        self.version = version


class TransactionStateError(ClusterError):
    """The connection already had a transaction open when we needed to start our own."""


class ClusterOpenError(ClusterError):
    """``Cluster.open`` could not open the cluster database."""


class UnclusteredNodesError(ClusterError):
    """More than one ``0.0.0.0`` row: the nodes table is corrupt."""

    def __init__(self, message: str = MSG_UNCLUSTERED):
        super().__init__(message)


class NodeVersionUpdateError(ClusterError):
    """Our own row could not be updated (usually: our address is not in ``nodes``).

    ``str()`` is the seed's ``updated N rows instead of 1``; ``address`` and
    ``known_addresses`` say which address was looked up and which exist, the diagnostic
    canonical/lxd#4808 lacked.
    """

    def __init__(self, rows: int, address: str, known_addresses: Sequence[str]):
        super().__init__(f"updated {rows} rows instead of 1")
        self.rows = rows
        self.address = address
        self.known_addresses = list(known_addresses)

    def details(self) -> list[str]:
        known = ", ".join(self.known_addresses) or "(none)"
        return [f"address looked up: {self.address}", f"addresses present: {known}"]


class NodeNotFoundError(ClusterError):
    """No non-pending node row matches this node's address."""

    def __init__(self, address: str):
        super().__init__(f'no node registered with address "{address}"')
        self.address = address


class GateError(ClusterError):
    """A decision of the version gate. ``str()`` is exactly the seed's text.

    ``ours`` is this node's version and ``members`` every row of ``nodes`` that was
    compared (address, schema, api_extensions), so a caller can print them all.
    """

    default_message = ""

    def __init__(
        self,
        message: str | None = None,
        *,
        ours: Version | None = None,
        members: Iterable[Member] = (),
    ):
        super().__init__(message or self.default_message)
        self.ours = ours
        self.members = list(members)

    @property
    def message(self) -> str:
        """The seed text alone, for exact comparisons."""
        return str(self)

    def details(self) -> list[str]:
        """One line for this node's version, then one per member."""
        lines = [f"this node: {self.ours}"] if self.ours is not None else []
        lines.extend(f"{member.address}: {member.version}" for member in self.members)
        return lines


class SomeNodesAreBehind(GateError):
    """Some peers run an older version: this node must wait for them.

    Inside ``Cluster.ensure_schema`` this becomes a graceful abort and ``ensure_schema``
    returns ``False``; ``open_and_ensure`` raises it, with ``node_id`` already resolved so
    that the caller can keep heartbeating while it waits.
    """

    default_message = MSG_SOME_NODES_BEHIND

    def __init__(self, message: str | None = None, *, node_id: int | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.node_id = node_id


class NodeBehindError(GateError):
    """Another member runs a newer version: this node must be upgraded."""

    default_message = MSG_NODE_BEHIND


class InconsistentVersionsError(GateError):
    """Schema and API extension counts moved in opposite directions between members."""

    default_message = MSG_INCONSISTENT
