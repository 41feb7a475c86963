"""API keys in PostgreSQL (table `api_keys` in the backend's schema), for `serve` on a database URL.

The same records and behaviour as `ticketmail.api.keys.SQLiteKeyStore`: only digests are stored, a
revoked key is kept for the record, a duplicate id is `InvalidValueError`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ticketmail.api.keys import ApiKey, UnknownKeyError
from ticketmail.backends.postgres import redact_url
from ticketmail.backends.postgres_schema import migrate, translate_all
from ticketmail.errors import InvalidValueError

__all__ = ["PostgresKeyStore"]

_COLUMNS = "key_id, digest, networks, permissions, active, name, created"


class PostgresKeyStore:
    """API keys in the `api_keys` table of a PostgreSQL schema (created by the schema migrations).

    Args:
        url: A libpq connection URL.
        schema: The ticketmail schema (the one the tickets live in).
    """

    def __init__(self, url: str, *, schema: str = "ticketmail") -> None:
        self._url = url
        self._lock = threading.Lock()
        with translate_all(f"connect to {redact_url(url)}"):
            self._conn = psycopg.connect(url, autocommit=True, application_name="ticketmail-keys")
        try:
            migrate(self._conn, schema)
            with translate_all("open the API key table"):
                self._conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
                self._conn.execute("SET TIME ZONE 'UTC'")
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresKeyStore({redact_url(self._url)!r})"

    @staticmethod
    def _row(row: Sequence[Any]) -> ApiKey:
        key_id, digest, networks, permissions, active, name, created = row
        return ApiKey(
            key_id=key_id,
            digest=digest,
            networks=json.loads(networks),
            permissions=json.loads(permissions),
            active=bool(active),
            name=name,
            created=created,
        )

    def _run(self, query: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock, translate_all("use the API key table"):
            try:
                cur = self._conn.execute(query.encode(), params)
            except psycopg.errors.UniqueViolation as exc:
                raise InvalidValueError("an API key with this id already exists", field="key_id") from exc
            return cur.fetchall() if cur.description else []

    def add(self, key: ApiKey) -> None:
        """Store a new key record."""
        self._run(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",  # noqa: S608
            (
                key.key_id,
                key.digest,
                json.dumps([str(n) for n in key.networks]),
                json.dumps(sorted(key.permissions)),
                key.active,
                key.name,
                key.created,
            ),
        )

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, or `None`."""
        rows = self._run(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,))  # noqa: S608
        return self._row(rows[0]) if rows else None

    def list(self) -> Sequence[ApiKey]:
        """Every key, oldest first."""
        return [self._row(r) for r in self._run(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created, key_id")]  # noqa: S608

    def revoke(self, key_id: str) -> ApiKey:
        """Deactivate a key (kept for the record)."""
        self._run("UPDATE api_keys SET active = false WHERE key_id = %s", (key_id,))
        key = self.get(key_id)
        if key is None:
            raise UnknownKeyError(f"no API key with id {key_id!r}", field="key_id")
        return key

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
