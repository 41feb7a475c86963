"""Storage backends: the :class:`~ticketmail.backends.base.Backend` protocol, in-memory and SQLite."""

from ticketmail.backends.base import Backend, UnitOfWork

__all__ = ["Backend", "UnitOfWork"]
