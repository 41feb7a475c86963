"""`fetch --lease-ttl`: validated by argparse, and it reaches the lease manager over `[storage] lease_ttl`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

import ticketmail.cli.fetch as fetch_cli
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.cli import main
from ticketmail.pipeline import Pipeline


class _Lease:
    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


class _Manager:
    def __init__(self, names: Any, ttl: float | None, fair_share: bool) -> None:
        self.names, self.ttl, self.fair_share, self.closed = list(names), ttl, fair_share, False

    def lock(self, name: str) -> _Lease:
        return _Lease()

    def close(self) -> None:
        self.closed = True


class _LeasingBackend(SQLiteBackend):
    """SQLite with the lease capability PostgreSQL has: `fetch` must find it and pass the TTL."""

    managers: ClassVar[list[_Manager]] = []

    def lease_manager(self, mailboxes: Any, *, ttl: float | None = None, fair_share: bool = True) -> _Manager:
        manager = _Manager(mailboxes, ttl, fair_share)
        self.managers.append(manager)
        return manager


@pytest.fixture
def config(tmp_path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "md" / sub).mkdir(parents=True)
    path = tmp_path / "t.toml"
    path.write_text(
        '[storage]\npath = "t.sqlite3"\nlease_ttl = 12\n[[mailboxes]]\nname = "md"\nprotocol = "maildir"\npath = "md"\n'
    )
    return path


def test_the_flag_overrides_the_file_and_reaches_the_lease_manager(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def open_pipeline(cfg: Any, args: Any, **kwargs: Any) -> Pipeline:
        return Pipeline(_LeasingBackend(config.parent / "t.sqlite3"))

    monkeypatch.setattr(fetch_cli, "open_pipeline", open_pipeline)
    _LeasingBackend.managers = []
    assert main(["fetch", "--quiet", "--config", str(config)]) == 0
    assert main(["fetch", "--quiet", "--config", str(config), "--lease-ttl", "2.5"]) == 0
    assert [(m.names, m.ttl, m.fair_share, m.closed) for m in _LeasingBackend.managers] == [
        (["md"], 12.0, False, True),  # [storage] lease_ttl; a one-shot fetch takes any free mailbox
        (["md"], 2.5, False, True),  # the flag wins
    ]
    assert capsys.readouterr() == ("", "")


def test_the_flag_is_checked_and_without_leases_it_says_so(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0.4", "3601", "nan", "soon"):
        with pytest.raises(SystemExit) as exited:
            main(["fetch", "--config", str(config), "--lease-ttl", bad])
        assert exited.value.code == 2
        assert "--lease-ttl: expected a lease time in seconds" in capsys.readouterr().err
    assert main(["fetch", "--config", str(config), "--lease-ttl", "30"]) == 0  # SQLite: local locks
    assert "--lease-ttl has no effect here" in capsys.readouterr().err


def test_the_file_value_is_range_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[storage]\npath = "t.sqlite3"\nlease_ttl = 0.1\n')
    assert main(["fetch", "--config", str(path)]) == 2
    assert "storage.lease_ttl must be a number >= 0.5, got 0.1 [invalid_config]" in capsys.readouterr().err
