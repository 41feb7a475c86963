"""Optional capabilities of a backend or a unit of work, as `Protocol`s checked at run time.

A backend must satisfy `ticketmail.backends.base.Backend`; these are the extras the pipeline (and the dry
run) use when a backend has them, found with `isinstance` rather than by probing attribute names.
"""

from __future__ import annotations

from ticketmail.backends.base import LedgerReader, QuarantineAdmin

__all__ = ["LedgerReader", "QuarantineAdmin"]
