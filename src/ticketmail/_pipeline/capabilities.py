"""Optional capabilities of a backend or a unit of work, as `Protocol`s checked at run time.

A backend must satisfy `ticketmail.backends.base.Backend`; these are the extras the pipeline (and the dry
run) use when a backend has them, found with `isinstance` rather than by probing attribute names.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ticketmail.backends.base import QuarantineAdmin

__all__ = ["LedgerReader", "QuarantineAdmin"]


@runtime_checkable
class LedgerReader(Protocol):
    """Optional capability of a backend: read the ledger without a unit of work.

    `ticketmail.backends.base.BaseBackend` provides it; SQLite reads the ledger without taking the write lock,
    so concurrent pollers do not serialize on the check. Without it, a short unit of work answers.
    """

    def is_processed(self, key: str) -> bool:
        """Whether `key` is in the ledger."""
        ...
