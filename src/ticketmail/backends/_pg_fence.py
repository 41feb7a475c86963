"""Fencing: the mailbox lease that the commits of the current thread must still hold."""

from __future__ import annotations

import threading

from ticketmail.errors import BackendError

_fence_local = threading.local()


def current_fence() -> tuple[str, str, int] | None:
    """The `(mailbox, holder, token)` lease that commits in this thread must still hold, if any.

    Set by `ticketmail.sources.leases.MailboxLease` while a worker holds a mailbox; a unit of work
    whose lease expired or was taken over is refused at commit time (`LeaseLostError`).
    """
    value = getattr(_fence_local, "fence", None)
    return value if isinstance(value, tuple) else None


def set_fence(value: tuple[str, str, int] | None) -> None:
    """Set (or clear with `None`) the lease the current thread's commits must hold."""
    _fence_local.fence = value


class LeaseLostError(BackendError):
    """The mailbox lease this worker held expired or was taken over; the unit was rolled back, nothing acknowledged."""

    code = "lease_lost"
    status = 409
