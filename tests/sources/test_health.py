"""Health records: transitions, events and the JSON state file shared between processes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.errors import BackendError, SourceError, TicketmailError
from ticketmail.sources.health import HealthEvent, HealthStore, MailboxHealth, read_health

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_unknown_until_polled() -> None:
    store = HealthStore()
    assert store.get("x").state == "unknown"


def test_transitions_and_events(tmp_path: Path) -> None:
    events: list[HealthEvent] = []
    store = HealthStore(tmp_path / "health.json", listeners=[events.append])
    store.record_success("a", at=at(0), waiting=3, processed=10)
    store.record_failure("a", at=at(5), error=SourceError("[AUTHENTICATIONFAILED] bad password", stage="auth"))
    store.record_failure("a", at=at(10), error=SourceError("[AUTHENTICATIONFAILED] bad password", stage="auth"))
    h = store.get("a")
    assert h.state == "unreachable"
    assert h.consecutive_failures == 2
    assert h.last_success == at(0)
    assert h.last_error is not None
    assert (h.last_error.stage, h.last_error.code) == ("auth", "source_error")
    store.record_success("a", at=at(15), waiting=0, processed=1)
    h = store.get("a")
    assert (h.state, h.consecutive_failures, h.last_error, h.last_success) == ("ok", 0, None, at(15))
    assert [(e.kind, e.at) for e in events] == [("unreachable", at(5)), ("recovered", at(15))]


def test_backend_failure_is_not_unreachable() -> None:
    events: list[HealthEvent] = []
    store = HealthStore(listeners=[events.append])
    store.record_success("a", at=at(0))
    h = store.record_failure("a", at=at(1), error=BackendError("disk full"))
    assert h.state == "failing"
    assert h.reachable is True
    assert h.last_error is not None
    assert h.last_error.stage == "backend"
    assert events == []


def test_first_ever_failure_fires_unreachable() -> None:
    events: list[HealthEvent] = []
    store = HealthStore(listeners=[events.append])
    store.record_failure("a", at=at(0), error=SourceError("refused", stage="connect"))
    assert [e.kind for e in events] == ["unreachable"]


def test_state_file_readable_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    store = HealthStore(path)
    store.record_success("support", at=at(0), waiting=7, processed=2, failed=1)
    code = (
        "import sys, json; from ticketmail.sources.health import read_health;"
        "h = read_health(sys.argv[1])['support']; print(json.dumps(h.to_dict()))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, check=True, text=True)
    data = json.loads(out.stdout)
    assert data["state"] == "ok"
    assert data["waiting"] == 7
    assert data["last_success"] == at(0).isoformat()
    raw = json.loads(path.read_text())
    assert raw["version"] == 1


def test_missing_file_means_no_data(tmp_path: Path) -> None:
    assert read_health(tmp_path / "nope.json") == {}


def test_corrupt_file_is_a_ticketmail_error_and_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    path.write_text("{not json")
    with pytest.raises(TicketmailError, match="not valid JSON"):
        read_health(path)
    HealthStore(path).record_success("a", at=at(0))
    assert read_health(path)["a"].state == "ok"


def test_no_secret_in_state(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    store = HealthStore(path)
    store.record_failure("a", at=at(0), error=SourceError("authentication failed for alice", stage="auth"))
    assert "hunter2" not in path.read_text()


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "reachable": st.one_of(st.booleans(), st.none(), st.integers()),
            "waiting": st.one_of(st.integers(), st.none(), st.text()),
            "last_success": st.one_of(st.text(), st.none(), st.just(T0.isoformat())),
            "consecutive_failures": st.one_of(st.integers(), st.booleans(), st.text()),
            "last_error": st.one_of(st.none(), st.dictionaries(st.text(), st.text())),
        },
    )
)
def test_from_dict_never_raises_on_odd_records(data: dict[str, object]) -> None:
    h = MailboxHealth.from_dict({"name": "x", **data})
    assert h.state in ("ok", "failing", "unreachable", "unknown")
    assert MailboxHealth.from_dict(h.to_dict()) == h


@given(st.binary(max_size=500))
def test_read_health_any_bytes_gives_records_or_a_ticketmail_error(data: bytes) -> None:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "health.json"
    path.write_bytes(data)
    try:
        records = read_health(path)
    except TicketmailError:
        return
    assert all(isinstance(h, MailboxHealth) for h in records.values())


@pytest.mark.integration
def test_concurrent_writers_in_several_processes_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    code = (
        "import sys, datetime as dt\n"
        "from ticketmail.sources.health import HealthStore\n"
        "store = HealthStore(sys.argv[1])\n"
        "for i in range(1, 41):\n"
        "    store.record_success(sys.argv[2], at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), processed=i)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"box{n}"]) for n in range(4)]
    for proc in procs:
        assert proc.wait(60) == 0
    records = read_health(path)
    assert sorted(records) == ["box0", "box1", "box2", "box3"]
    assert all(h.last_processed == 40 for h in records.values())
