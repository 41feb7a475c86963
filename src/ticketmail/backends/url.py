"""Open a backend from one string: a `postgresql://` URL or a SQLite file path.

Every command that takes `--db` (and the `[storage] url` setting) goes through `open_backend()`, so
`--db tickets.sqlite3` keeps meaning SQLite while `--db postgresql://desk@db.internal/helpdesk` opens
`PostgresBackend` (`pip install 'ticketmail[postgres]'`).

Besides the libpq parameters, a PostgreSQL URL may carry ticketmail options in its query string, which are
removed before the URL reaches libpq: `schema` (default `ticketmail`), `pool_size` (default 5),
`synchronous_commit` (default: the server's, normally `on`; `off` is the explicit, documented trade of
the last moments of commits on a server crash for speed) and `lease_ttl` (seconds, default 30), e.g.
`postgresql://desk@db/helpdesk?schema=support&pool_size=10`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ticketmail.errors import ConfigError

if TYPE_CHECKING:
    from ticketmail.api.keys import SQLiteKeyStore
    from ticketmail.backends.base import Backend
    from ticketmail.backends.postgres_keys import PostgresKeyStore

__all__ = ["is_database_url", "local_state_dir", "open_backend", "open_key_store", "split_options"]

POSTGRES_SCHEMES = ("postgresql", "postgres")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_database_url(target: str | os.PathLike[str]) -> bool:
    """Whether `target` is a `postgresql://` / `postgres://` URL (anything else is a SQLite path)."""
    match = _URL.match(os.fspath(target))
    return bool(match) and match.group(1).lower() in POSTGRES_SCHEMES  # type: ignore[union-attr]


def _number(name: str, value: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name} in the database URL must be a number, got {value!r}", field="db") from None


# The ticketmail options a URL may carry, and how each is read from its text.
_READERS: dict[str, Any] = {
    "schema": str,
    "pool_size": lambda value: _number("pool_size", value, int),
    "synchronous_commit": str,
    "lease_ttl": lambda value: _number("lease_ttl", value, float),
}


def split_options(url: str) -> tuple[str, dict[str, Any]]:
    """`url` without the ticketmail options (`schema`, `pool_size`, `synchronous_commit`, `lease_ttl`), and those."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _READERS:
            options[name] = _READERS[name](value)
        else:
            kept.append((name, value))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment)), options


def _check(target: str) -> None:
    if not isinstance(target, str) or not target.strip():
        raise ConfigError("the database must be a SQLite file path or a postgresql:// URL", field="db")
    match = _URL.match(target)
    if match and match.group(1).lower() not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"unsupported database URL scheme {match.group(1)!r}: use postgresql://... or a SQLite file path",
            field="db",
        )


def open_backend(target: str, *, create: bool = True, **options: Any) -> Backend:
    """The backend `target` names: PostgreSQL for a `postgresql://` URL, else a SQLite file.

    Args:
        target: `postgresql://user:password@host:5432/dbname` (`postgres://` too) or a file path.
        create: Create the database (SQLite file, PostgreSQL schema) when missing and migrate an older one.
            With `False` a missing SQLite file is a `ConfigError` and a missing
            PostgreSQL schema a `BackendSetupError`.
        **options: Passed to the backend's constructor (e.g. `pool_size` for PostgreSQL, `synchronous`
            for SQLite); the URL's own `schema`/`pool_size` options come first.
    """
    _check(target)
    if is_database_url(target):
        try:
            from ticketmail.backends.postgres import PostgresBackend
        except ImportError as exc:  # pragma: no cover - the extra is part of the test install
            raise ConfigError(
                "a postgresql:// database needs the PostgreSQL extra: pip install 'ticketmail[postgres]'", field="db"
            ) from exc
        url, from_url = split_options(target)
        return PostgresBackend(url, create=create, **{**options, **from_url})
    from ticketmail.backends.sqlite import SQLiteBackend

    if not create and not Path(target).exists():
        raise ConfigError(f"no ticket database at {target}; run 'ticketmail ingest' first", field="db")
    return SQLiteBackend(target, **options)


def open_key_store(target: str) -> SQLiteKeyStore | PostgresKeyStore:
    """The API key store living next to the tickets of `target` (same database, same schema)."""
    _check(target)
    if is_database_url(target):
        from ticketmail.backends.postgres_keys import PostgresKeyStore

        url, options = split_options(target)
        return PostgresKeyStore(url, schema=options.get("schema", "ticketmail"))
    from ticketmail.api.keys import SQLiteKeyStore

    return SQLiteKeyStore(target)


def local_state_dir(target: str) -> Path:
    """The default state directory (health, local locks) for `target`.

    Next to a SQLite file (`tickets.sqlite3.state`); for a database URL, `ticketmail.state` in the current
    directory (the state is per machine: health and local retry counters; leases live in the database).
    """
    if is_database_url(target):
        return Path("ticketmail.state")
    path = Path(target)
    return path.with_name(path.name + ".state")
