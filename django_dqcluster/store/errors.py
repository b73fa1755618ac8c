"""Errors the store reports to clients, already classified for the driver."""

from .. import wire


class StoreError(Exception):
    """An error with the PEP 249 class the client should raise, and whether a retry is safe."""

    def __init__(self, kind, message, *, retryable=False, unknown_outcome=False, code=None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.unknown_outcome = unknown_outcome
        self.code = code

    def to_wire(self):
        return wire.error_payload(
            self.kind, self.message, retryable=self.retryable,
            unknown_outcome=self.unknown_outcome, code=self.code,
        )


def retryable(message):
    return StoreError(wire.OPERATIONAL, message, retryable=True)


def unknown_outcome(message):
    return StoreError(wire.OPERATIONAL, message, unknown_outcome=True)


def programming(message):
    return StoreError(wire.PROGRAMMING, message)


def operational(message, code=None):
    return StoreError(wire.OPERATIONAL, message, code=code)
