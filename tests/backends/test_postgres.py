"""The PostgreSQL backend against a real, private PostgreSQL server: conformance, pipeline, migrations, errors."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

from ticketmail.backends.base import Backend
from ticketmail.backends.postgres import PostgresBackend
from ticketmail.testing.conformance import BackendConformance
from ticketmail.testing.pipeline_suite import pipeline_machine
from ticketmail.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    server = PostgresServer.shared()
    url = server.create_database()
    yield url
    server.drop_database(url)


def _schema() -> str:
    return f"t_{uuid.uuid4().hex[:20]}"


_TABLES = (
    "tickets, entries, attachments, entry_attachments, message_ids, participants, tags, custom_fields, ledger,"
    " audit, quarantine"
)


class _RecycledBackend(PostgresBackend):
    """A backend whose ``close`` empties its schema and keeps it for the next example (state machines make
    hundreds of fresh stores; a new schema and pool each time would dominate the run)."""

    idle: list[_RecycledBackend] = []  # noqa: RUF012

    def close(self) -> None:
        with self.connection() as conn:
            conn.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE")  # fixed table names
        type(self).idle.append(self)

    def really_close(self) -> None:
        super().close()


def _fresh(url: str) -> PostgresBackend:
    if _RecycledBackend.idle:
        return _RecycledBackend.idle.pop()
    return _RecycledBackend(url, schema=_schema(), pool_size=2)


@pytest.fixture(scope="module", autouse=True)
def _close_recycled() -> Iterator[None]:
    yield
    while _RecycledBackend.idle:
        _RecycledBackend.idle.pop().really_close()


class TestPostgresBackend(BackendConformance):
    state_machine_settings = settings(max_examples=20, stateful_step_count=12, deadline=None)

    @pytest.fixture(autouse=True)
    def _url(self, pg_url: str) -> None:
        self.url = pg_url

    def make_backend(self, directory: pathlib.Path) -> Backend:
        return _fresh(self.url)


_SUITE_DB: list[str] = []


def _pipeline_backend() -> PostgresBackend:
    if not _SUITE_DB:
        _SUITE_DB.append(PostgresServer.shared().create_database())
    return _fresh(_SUITE_DB[0])


TestPostgresPipeline = pytest.mark.slow(pipeline_machine(_pipeline_backend, steps=30).TestCase)
TestPostgresPipeline.settings = settings(max_examples=15, stateful_step_count=30, deadline=None)
