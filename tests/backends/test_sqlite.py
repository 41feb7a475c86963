"""SQLite specifics: pragmas, migrations, locking, real concurrent processes, error translation."""

from __future__ import annotations

import datetime as dt
import pathlib
import sqlite3
import subprocess
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.backends import (
    BackendLockedError,
    InMemoryBackend,
    NewEntry,
    NewTicket,
    QuarantineRecord,
    SchemaVersionError,
    SQLiteBackend,
)
from ticketmail.backends.sqlite import MIGRATIONS, SCHEMA_VERSION, migrate
from ticketmail.errors import BackendError, InvalidValueError
from ticketmail.model import Address, Attachment, Provenance

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
ALICE = Address("alice@example.org", "Alice")


def _ticket(number: str, **kw: object) -> NewTicket:
    return NewTicket(number=number, subject="s", requester=ALICE, created=T0, **kw)  # type: ignore[arg-type]


def _raw(path: pathlib.Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_pragmas_and_schema(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.sqlite3"
    with SQLiteBackend(path) as backend:
        assert backend.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version
        conn = backend._conn  # white-box: the pragmas the docs promise
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"tickets_requester_created", "entries_ticket", "quarantine_item"} <= indexes
    raw = _raw(path)
    versions = [row[0] for row in raw.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [m.version for m in MIGRATIONS]


def test_memory_database_and_full_sync(tmp_path: pathlib.Path) -> None:
    with SQLiteBackend(":memory:") as backend, backend.unit_of_work() as uow:
        uow.create_ticket(_ticket("MEM00001"))
    with SQLiteBackend(tmp_path / "f.db", synchronous="FULL") as backend:
        assert backend._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    with pytest.raises(InvalidValueError, match="synchronous"):
        SQLiteBackend(tmp_path / "g.db", synchronous="SOMETIMES")  # type: ignore[arg-type]


def test_reopen_keeps_data(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.sqlite3"
    with SQLiteBackend(path) as backend, backend.unit_of_work() as uow:
        uow.create_ticket(_ticket("KEEP0001", tags=("a",)))
    with SQLiteBackend(path) as backend:
        ticket = backend.get_ticket("KEEP0001")
        assert ticket is not None
        assert ticket.tags == ("a",)


def test_migrates_an_older_database(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = _raw(path)
    assert migrate(conn, target=1) == 1
    conn.execute(
        "INSERT INTO quarantine (at, raw, reason_code, reason, prov_mailbox, prov_kind, prov_key)"
        " VALUES ('2026-01-01T00:00:00.000000+00:00', x'6f6c64', 'c', 'r', 'mb', 'imap', '1:1')"
    )
    conn.close()
    with SQLiteBackend(path) as backend:
        assert backend.schema_version == SCHEMA_VERSION
        (item,) = backend.quarantined()
        assert item.raw == b"old"
        assert item.attempts == 1
        with backend.unit_of_work() as uow:  # the backfilled digest makes the old row dedupe
            qid = uow.quarantine(QuarantineRecord(T0, b"old", "c2", "again", Provenance("mb", "imap", "1:1")))
        assert qid == item.id
        assert backend.quarantined()[0].attempts == 2


def test_refuses_a_newer_database(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "new.sqlite3"
    SQLiteBackend(path).close()
    conn = _raw(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', 'now')", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(SchemaVersionError, match="newer") as info:
        SQLiteBackend(path)
    assert info.value.code == "schema_too_new"
    assert isinstance(info.value, BackendError)


def test_driver_errors_become_backend_errors(tmp_path: pathlib.Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 200)
    with pytest.raises(BackendError) as info:
        SQLiteBackend(garbage)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    with pytest.raises(BackendError):
        SQLiteBackend(tmp_path / "missing-dir" / "x.db")


def test_lock_timeout_is_a_backend_locked_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "locked.sqlite3"
    with SQLiteBackend(path, timeout=0.05) as backend:
        with backend.unit_of_work() as uow:
            uow.create_ticket(_ticket("LOCK0001"))
        other = _raw(path)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(BackendLockedError) as info, backend.unit_of_work() as uow:
                uow.create_ticket(_ticket("LOCK0002"))
            assert info.value.code == "backend_locked"
            assert backend.get_ticket("LOCK0001") is not None  # WAL: readers are not blocked by the writer
        finally:
            other.execute("ROLLBACK")
            other.close()
        with backend.unit_of_work() as uow:  # usable again once the lock is gone
            uow.create_ticket(_ticket("LOCK0002"))
        assert len(backend.list_tickets()) == 2


def test_parameterized_sql_stores_hostile_text(tmp_path: pathlib.Path) -> None:
    hostile = "x'); DROP TABLE tickets; --"
    with SQLiteBackend(tmp_path / "h.db") as backend:
        with backend.unit_of_work() as uow:
            uow.create_ticket(NewTicket(hostile, hostile, Address(hostile), T0, tags=(hostile,)))
            uow.record_message_id(hostile, f"<{hostile}>", "inbound")
        ticket = backend.get_ticket(hostile)
        assert ticket is not None
        assert ticket.subject == hostile


def test_unstorable_text_is_an_input_error(tmp_path: pathlib.Path) -> None:
    with SQLiteBackend(tmp_path / "s.db") as backend:
        with pytest.raises(InvalidValueError), backend.unit_of_work() as uow:
            uow.create_ticket(NewTicket("SUR00001", "bad \udcff surrogate", ALICE, T0))
        assert backend.list_tickets() == []


def test_attachment_bytes_stored_once(tmp_path: pathlib.Path) -> None:
    data = Attachment("a.bin", "application/octet-stream", b"\x00" * 4096)
    copy = Attachment("b.bin", "application/octet-stream", b"\x00" * 4096)
    with SQLiteBackend(tmp_path / "a.db") as backend:
        with backend.unit_of_work() as uow:
            for number in ("ATT00001", "ATT00002"):
                uow.create_ticket(_ticket(number))
                uow.append_entry(number, NewEntry("message", None, "b", T0, attachments=(data, copy)))
        conn = backend._conn
        assert conn.execute("SELECT count(*) FROM attachments").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM entry_attachments").fetchone()[0] == 4


def test_closed_backend_and_nested_units(tmp_path: pathlib.Path) -> None:
    backend = SQLiteBackend(tmp_path / "c.db")
    with backend.unit_of_work(), pytest.raises(BackendError, match="nested"), backend.unit_of_work():
        pass
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        backend.get_ticket("x")
    with pytest.raises(BackendError, match="closed"), backend.unit_of_work():
        pass
    assert "c.db" in repr(backend)


def test_threads_share_one_backend(tmp_path: pathlib.Path) -> None:
    errors: list[BaseException] = []
    with SQLiteBackend(tmp_path / "threads.db") as backend:

        def work(worker: int) -> None:
            try:
                for i in range(25):
                    with backend.unit_of_work() as uow:
                        number = f"T{worker}X{i:03d}"
                        uow.create_ticket(_ticket(number))
                        uow.append_entry(number, NewEntry("message", None, "b", T0, message_id=f"{number}@x"))
                    assert backend.get_ticket(number) is not None
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        tickets = backend.list_tickets()
        assert len(tickets) == 150
        assert all(t.entry_count == 1 for t in tickets)


@pytest.mark.integration
def test_processes_writing_one_file_have_each_effect_once(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "shared.sqlite3"
    SQLiteBackend(path).close()  # create and migrate once, so workers race on data, not on schema
    worker = pathlib.Path(__file__).with_name("sqlite_worker.py")
    count = 150
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(path), str(w), str(count), str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    created = 0
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        created += int(out.strip())
    assert created == count  # every key was created by exactly one process
    with SQLiteBackend(path) as backend:
        tickets = backend.list_tickets()
        assert sorted(t.number for t in tickets) == sorted(f"Nkey{i:04d}" for i in range(count))
        assert all(t.entry_count == 1 for t in tickets)
        assert sum(1 for _ in backend.audit_log()) == count
        conn = backend._conn
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == count
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == count
        assert conn.execute("SELECT count(*) FROM message_ids").fetchone()[0] == count
        assert conn.execute("SELECT count(*) FROM attachments").fetchone()[0] == 1


@pytest.mark.integration
def test_processes_opening_a_new_file_migrate_once(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "fresh.sqlite3"
    code = "import sys; from ticketmail.backends import SQLiteBackend; SQLiteBackend(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    raw = _raw(path)
    assert [r[0] for r in raw.execute("SELECT version FROM schema_version")] == [m.version for m in MIGRATIONS]


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(subject=_text, body=_text, tag=_text, field=_text, name=st.none() | _text)
def test_text_round_trips_like_the_model(
    tmp_path_factory: pytest.TempPathFactory, subject: str, body: str, tag: str, field: str, name: str | None
) -> None:
    path = tmp_path_factory.mktemp("rt") / "rt.db"
    results = []
    for backend in (InMemoryBackend(), SQLiteBackend(path)):
        with backend:
            with backend.unit_of_work() as uow:
                uow.create_ticket(
                    NewTicket(
                        "RT000001", subject, Address("a@b.c", name), T0, tags=(tag,), custom_fields=(("f", field),)
                    )
                )
                uow.append_entry("RT000001", NewEntry("note", Address("x@y.z", name), body, T0, html=body))
            results.append((backend.get_ticket("RT000001"), [attrs_tuple(e) for e in backend.entries("RT000001")]))
    assert results[0] == results[1]


def attrs_tuple(entry: object) -> tuple[object, ...]:
    import attrs

    return attrs.astuple(entry, recurse=False)


_any_text = st.text(max_size=20)


@given(
    number=_any_text,
    subject=_any_text,
    email=_any_text,
    kind=st.sampled_from(["message", "reply", "note", "bogus"]),
    mid=st.none() | _any_text,
    priority=st.none() | st.integers(),
    raw=st.binary(max_size=64),
)
def test_any_input_gives_a_result_or_a_ticketmail_error(
    tmp_path_factory: pytest.TempPathFactory,
    number: str,
    subject: str,
    email: str,
    kind: str,
    mid: str | None,
    priority: int | None,
    raw: bytes,
) -> None:
    from ticketmail.errors import TicketmailError

    outcomes = []
    path = tmp_path_factory.mktemp("any") / "any.db"
    for backend in (InMemoryBackend(), SQLiteBackend(path)):
        with backend:
            try:
                with backend.unit_of_work() as uow:
                    uow.quarantine(QuarantineRecord(T0, raw, "c", subject, Provenance("m", "file", email)))
                    uow.create_ticket(NewTicket(number, subject, Address(email), T0, priority=priority))
                    uow.append_entry(number, NewEntry(kind, None, subject, T0, message_id=mid))  # type: ignore[arg-type]
                outcome: object = ("ok", backend.get_ticket(number), len(backend.quarantined()))
            except TicketmailError as exc:
                outcome = ("error", exc.code, len(backend.list_tickets()), len(backend.quarantined()))
            outcomes.append(outcome)
    # The model stores any str and int; SQLite refuses surrogates and >64-bit ints: the rest must agree.
    storable = all(not ("\ud800" <= ch <= "\udfff") for ch in number + subject + email + (mid or ""))
    if storable and (priority is None or -(2**63) <= priority < 2**63):
        assert outcomes[0] == outcomes[1]


def test_read_helpers_take_no_write_lock(tmp_path: pathlib.Path) -> None:
    from ticketmail.backends import ProcessedRecord

    path = tmp_path / "r.db"
    with SQLiteBackend(path, timeout=0.05) as backend:
        with backend.unit_of_work() as uow:
            uow.create_ticket(_ticket("OLD00001"))
            uow.create_ticket(_ticket("NEW00001"))
            uow.set_status("OLD00001", "merged", merged_into="NEW00001")
            uow.record_processed(ProcessedRecord("k", "created", T0, "OLD00001"))
        other = _raw(path)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock: reads still work
        try:
            assert backend.is_processed("k")
            assert not backend.is_processed("nope")
            found = backend.find_ticket("OLD00001")
            assert found is not None
            assert found.number == "NEW00001"
            unfollowed = backend.find_ticket("OLD00001", follow=False)
            assert unfollowed is not None
            assert unfollowed.status == "merged"
            assert backend.find_ticket("missing") is None
        finally:
            other.execute("ROLLBACK")
            other.close()
    memory = InMemoryBackend()
    with memory.unit_of_work() as uow:
        uow.create_ticket(_ticket("A0000001"))
    assert memory.find_ticket("A0000001") is not None
    assert not memory.is_processed("k")


def test_migrates_version_3_custom_fields_to_json(tmp_path: pathlib.Path) -> None:
    """A file written before typed custom fields (``str(value)`` text) opens with JSON values."""
    path = tmp_path / "v3.sqlite3"
    conn = _raw(path)
    assert migrate(conn, target=3) == 3
    conn.execute(
        "INSERT INTO tickets (id, number, subject, requester_email, requester_key, status, created, updated,"
        " source, entry_count) VALUES (1, 'OLD00001', 's', 'a@example.org', 'a@example.org', 'open',"
        " '2026-01-01T00:00:00.000000+00:00', '2026-01-01T00:00:00.000000+00:00', 'api', 0)"
    )
    old = [
        ("product", "Choice(key='p2', label='Scanner')"),
        ("colours", "(Choice(key='r', label='Red'), Choice(key='o', label=\"O'Hara\"))"),
        ("budget", "12.5"),
        ("when", "2026-03-01 09:30:00+00:00"),
        ("quote", 'say "hi" \\ bye'),
        ("linked_ticket", "AB12CD34"),
    ]
    conn.executemany(
        "INSERT INTO custom_fields (ticket_id, name, position, value) VALUES (1, ?, ?, ?)",
        [(name, i, value) for i, (name, value) in enumerate(old)],
    )
    conn.close()
    with SQLiteBackend(path) as backend:
        assert backend.schema_version == SCHEMA_VERSION >= 4
        ticket = backend.get_ticket("OLD00001")
        assert ticket is not None
        assert ticket.custom_fields == (
            ("product", {"key": "p2", "label": "Scanner"}),
            ("colours", [{"key": "r", "label": "Red"}, {"key": "o", "label": "O'Hara"}]),
            ("budget", "12.5"),  # the type was lost before: text stays text
            ("when", "2026-03-01 09:30:00+00:00"),
            ("quote", 'say "hi" \\ bye'),
            ("linked_ticket", "AB12CD34"),
        )
        with backend.unit_of_work() as uow:  # new tickets next to the migrated ones store typed values
            uow.create_ticket(_ticket("NEW00001", custom_fields=(("budget", 12.5), ("ok", True))))
        new = backend.get_ticket("NEW00001")
        assert new is not None
        assert new.custom_fields == (("budget", 12.5), ("ok", True))
        assert type(new.custom("budget")) is float
        assert new.custom("ok") is True
    raw = _raw(path)
    values = [v for (v,) in raw.execute("SELECT value FROM custom_fields ORDER BY ticket_id, position")]
    raw.close()
    assert values[2] == '"12.5"'
    assert values[-2:] == ["12.5", "true"]


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


def _exact(value: object) -> object:
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return (type(value).__name__, repr(value))


@given(values=st.lists(_json_values, max_size=5))
def test_any_json_custom_value_round_trips_exactly(values: list[object]) -> None:
    """Every JSON value comes back with the same types (and for floats the same bits) from SQLite and memory."""
    fields = tuple((f"f{i}", value) for i, value in enumerate(values))
    for backend in (SQLiteBackend(":memory:"), InMemoryBackend()):
        with backend:
            with backend.unit_of_work() as uow:
                uow.create_ticket(_ticket("JSON0001", custom_fields=fields))
            ticket = backend.get_ticket("JSON0001")
            assert ticket is not None
            assert [_exact(v) for _, v in ticket.custom_fields] == [_exact(v) for v in values]
