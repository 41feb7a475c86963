"""The shipped backends pass the shipped conformance suite (SQLite on a real file)."""

from __future__ import annotations

import pathlib

from ticketmail.backends import InMemoryBackend, SQLiteBackend
from ticketmail.backends.base import Backend
from ticketmail.testing.conformance import BackendConformance


class TestInMemoryBackend(BackendConformance):
    def make_backend(self, directory: pathlib.Path) -> Backend:
        return InMemoryBackend()


class TestSQLiteBackend(BackendConformance):
    def make_backend(self, directory: pathlib.Path) -> Backend:
        return SQLiteBackend(directory / "tickets.sqlite3")
