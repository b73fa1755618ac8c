"""A statement's parameters, checked before anything runs: what SQLite can bind.

Python's sqlite3 module refuses most unbindable values with its own
ProgrammingError, the same on every node, which the store reports like any
SQL error. An integer over 64 bits is the exception: it raises OverflowError,
which is no SQL error (and executemany() over something that is not a list
of parameter sets raises TypeError). The driver never sends one (it raises
OverflowError itself, as sqlite3 does), but any client speaking the protocol
could, and in a later parameter set of an executemany, which the leader does
not bind before the entry is in the log, it escaped every node's apply, again
at each attempt: the cluster wrote nothing more. Such a request is refused
here, naming the parameter, and one already in a log records a
ProgrammingError (statemachine.run_statement).
"""

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
INT_TOO_LARGE = "Python int too large to convert to SQLite INTEGER"


def unbindable(params, many):
    """Why ``params`` (one parameter set, or with ``many`` a list of them) cannot be bound, or None."""
    if not many:
        if params is not None and not isinstance(params, (list, tuple, dict)):
            return f"parameters must be a list or a mapping, not {type(params).__name__}"
        return _unbindable_in(params, "")
    if not isinstance(params, (list, tuple)):
        return f"executemany needs a list of parameter sets, not {type(params).__name__}"
    for number, one in enumerate(params, 1):
        if not isinstance(one, (list, tuple, dict)):
            return f"parameter set {number} must be a list or a mapping of parameters, not {type(one).__name__}"
        problem = _unbindable_in(one, f"parameter set {number}, ")
        if problem:
            return problem
    return None


def _unbindable_in(params, where):
    if isinstance(params, dict):
        named = params.items()
    elif isinstance(params, (list, tuple)):
        named = enumerate(params, 1)
    else:
        return None
    for name, value in named:
        if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
            return f"{where}parameter {name}: {INT_TOO_LARGE}"
    return None
