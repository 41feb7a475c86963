"""InMemoryBackend specifics: locking, nesting, closing."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from ticketmail.backends import InMemoryBackend, NewEntry, NewTicket
from ticketmail.errors import BackendError
from ticketmail.model import Address

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_threads_serialize_units() -> None:
    backend = InMemoryBackend()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(50):
                with backend.unit_of_work() as uow:
                    number = f"W{worker}N{i:03d}"
                    assert not uow.number_exists(number)
                    uow.create_ticket(NewTicket(number, "s", Address("a@b.c"), T0))
                    uow.append_entry(number, NewEntry("message", None, "b", T0, message_id=f"{number}@x"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(backend.list_tickets()) == 400
    assert [e.id for t in backend.list_tickets() for e in backend.entries(t.number)] != []
    ids = sorted(e.id for t in backend.list_tickets() for e in backend.entries(t.number))
    assert ids == list(range(1, 401))


def test_nested_unit_is_refused_and_closed_backend_errors() -> None:
    backend = InMemoryBackend()
    with backend.unit_of_work(), pytest.raises(BackendError, match="nested"), backend.unit_of_work():
        pass
    with backend.unit_of_work() as uow:  # the refused nested unit did not break the outer state
        uow.create_ticket(NewTicket("OK000001", "s", Address("a@b.c"), T0))
    with backend:
        assert backend.get_ticket("OK000001") is not None
    with pytest.raises(BackendError, match="closed"):
        backend.list_tickets()


def test_rollback_restores_entry_ids_and_paging() -> None:
    backend = InMemoryBackend()
    with pytest.raises(KeyError), backend.unit_of_work() as uow:  # noqa: PT012
        uow.create_ticket(NewTicket("RB000001", "s", Address("a@b.c"), T0))
        uow.append_entry("RB000001", NewEntry("message", None, "b", T0))
        raise KeyError("x")
    with backend.unit_of_work() as uow:
        for i in range(3):
            uow.create_ticket(NewTicket(f"RB00000{i}", "s", Address("a@b.c"), T0))
        entry = uow.append_entry("RB000001", NewEntry("message", None, "b", T0))
    assert entry.id == 1
    assert [t.number for t in backend.list_tickets(limit=1, offset=1)] == ["RB000001"]
    assert "tickets=3" in repr(backend)
