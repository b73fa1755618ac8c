"""pysyncobj's most frequent small calls, made without a Python frame.

A commit on a 3-node store runs ~930 Python and built-in calls on the
leader (yappi, one client's INSERTs). The most frequent were pysyncobj's:

* Hashing a member. Its state is kept in dictionaries keyed by node objects
  (next and match index, last response, connections), and ``Node.__hash__``
  is Python (``hash(self.id)``, ``id`` a property): 60 lookups per commit
  on the leader, three Python calls each. :class:`RaftMember` hashes in C.
* Reading the clock: pysyncobj's ``monotonic`` is a lambda around
  ``time.clock_gettime``, called ~30 times per commit on the leader.
  :func:`use_c_level_clock` puts the same call in a ``functools.partial``.

Every call still gives what it gave: a member hashes as its address did,
equals what it equalled, and the clock is the same clock.
"""

import functools
import time

from pysyncobj import monotonic
from pysyncobj.node import TCPNode


class RaftMember(TCPNode, str):
    """pysyncobj's TCPNode (its id is its address), also the address as text, hashed as that text.

    ``hash(TCPNode(address))`` is ``hash(address)``; ``str.__hash__`` gives
    the same number from C. Equality stays pysyncobj's (by id, with any
    Node, never with a plain string), so a member and a TCPNode of the same
    address are one key in every dictionary and set. A dictionary lookup
    with the very object it holds (the engine's own) then runs no Python.
    """

    # (Node's __eq__, __ne__, __str__ and __repr__ come before str's in the MRO.)
    __hash__ = str.__hash__

    def __new__(cls, address, **kwargs):
        return str.__new__(cls, address)

    def __reduce__(self):
        # Pickled (if ever) as pysyncobj's own class: readable where this one is unknown.
        return (TCPNode, (self.id,))


def _without_a_frame(clock):
    # The lambda is pysyncobj's clock where CLOCK_MONOTONIC_RAW exists; elsewhere
    # it falls back to functions of its own, kept as they are.
    if getattr(clock, "__name__", None) == "<lambda>":
        return functools.partial(time.clock_gettime, time.CLOCK_MONOTONIC_RAW)
    return clock


#: pysyncobj's clock (its election deadlines and response times are on it).
raft_clock = _without_a_frame(monotonic.monotonic)


def use_c_level_clock():
    """Give pysyncobj's modules :data:`raft_clock` in place of their lambda (the same clock)."""
    from pysyncobj import syncobj, tcp_connection, transport

    for module in (syncobj, tcp_connection, transport):
        module.monotonicTime = _without_a_frame(module.monotonicTime)
