"""API keys as osTicket has them: bound to client networks, with permissions and an active flag.

Why this shape:

* osTicket binds every key to the client's IP address, so a leaked key is useless from elsewhere. We
  keep that and allow several addresses or CIDR networks per key (`10.0.0.0/24`, `2001:db8::/48`).
* A key is a high-entropy random secret (256 bits from `secrets`), so storing `sha256(key)` is
  enough: a slow password hash protects low-entropy secrets against guessing, and a 256-bit secret cannot
  be guessed. Only the digest and a short public id (the key's prefix, used to find the row) are stored;
  the key itself is shown once, when issued.
* Digests are compared with `hmac.compare_digest()`, and an unknown id costs the same work as a known
  id with a wrong secret: one store lookup, one hash, one comparison, one address check (against a dummy
  record when there is no row), and the SQLite store decodes a dummy row when it finds none. Timing tells
  an attacker nothing about which ids exist.
* The secret is never part of a value that is printed or serialized by accident: `IssuedKey` is not
  an attrs class (`attrs.asdict` refuses it) and its `repr` masks the secret; `ApiKey` holds only
  the digest, left out of its `repr` and `to_dict`.
* Every authentication failure (unknown key, inactive key, wrong remote address, malformed header)
  raises the same `ApiKeyError` with osTicket's message, ``Unknown remote host or invalid API
  key``: which part was wrong is not disclosed.

Key format: `tm_<id>_<secret>`, where `<id>` is 12 lowercase hex characters and `<secret>` 43
URL-safe base64 characters.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import attrs

from ticketmail.errors import AuthError, BackendError, ForbiddenError, InvalidValueError, NotFoundError

__all__ = [
    "PERMISSIONS",
    "ApiKey",
    "ApiKeyError",
    "ApiKeyStore",
    "InMemoryKeyStore",
    "IssuedKey",
    "Network",
    "Permission",
    "PermissionDeniedError",
    "SQLiteKeyStore",
    "UnknownKeyError",
    "authenticate",
    "hash_key",
    "issue_key",
    "parse_network",
    "require",
]

Permission = Literal["create_tickets", "submit_email", "run_cron", "view_status"]
"""What a key may do: POST JSON/XML tickets, POST raw email, run one fetch cycle, read the status page."""

PERMISSIONS: tuple[Permission, ...] = ("create_tickets", "submit_email", "run_cron", "view_status")
"""Every permission, in documentation order."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

INVALID_KEY_MESSAGE = "Unknown remote host or invalid API key"

_KEY_RE = re.compile(r"^tm_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY_DIGEST = hashlib.sha256(b"ticketmail: no such key").hexdigest()


class ApiKeyError(AuthError):
    """The API key is unknown, inactive or malformed, or the remote address is not allowed for it.

    The message is always osTicket's `Unknown remote host or invalid API key`: nothing more is leaked.
    """

    code = "invalid_api_key"


class PermissionDeniedError(ForbiddenError):
    """The key is valid but lacks the permission the endpoint needs (HTTP 403)."""

    code = "api_permission_denied"


class UnknownKeyError(NotFoundError):
    """A key management operation named a key id that does not exist."""

    code = "api_key_not_found"


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def hash_key(key: str) -> str:
    """The stored digest of a presented key: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_network(value: str) -> Network:
    """Parse an address (`127.0.0.1`, `::1`) or CIDR network (`10.0.0.0/8`).

    Raises:
        InvalidValueError: naming the value; a network with host bits set (`10.0.0.5/8`) is refused
            rather than silently widened, since that is almost always a typo.
    """
    text = value.strip()
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InvalidValueError(
            f"expected an IP address or CIDR network such as 127.0.0.1 or 10.0.0.0/8, got {value!r} ({exc})",
            field="ip",
        ) from exc
    return network


def _to_networks(values: Iterable[Network | str]) -> tuple[Network, ...]:
    out = tuple(
        v if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else parse_network(v) for v in values
    )
    if not out:
        raise InvalidValueError("an API key needs at least one allowed IP address or network", field="ip")
    return out


def _to_permissions(values: Iterable[str]) -> frozenset[Permission]:
    out: set[Permission] = set()
    for value in values:
        if value not in PERMISSIONS:
            raise InvalidValueError(
                f"expected a permission among {', '.join(PERMISSIONS)}, got {value!r}", field="permission"
            )
        out.add(value)  # type: ignore[arg-type,unused-ignore]
    return frozenset(out)


def _remote_address(remote_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = remote_addr.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # drop an IPv6 zone id
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; keys are written with the IPv4 form.
        return address.ipv4_mapped
    return address


@attrs.frozen
class ApiKey:
    """One stored API key (never the secret itself).

    Attributes:
        key_id: The public id (the key's prefix), used to find the row and to revoke the key.
        digest: Hex SHA-256 of the full key. Left out of `repr`.
        networks: Client addresses/networks the key may be used from.
        permissions: What the key may do.
        active: Inactive (revoked) keys authenticate nothing.
        name: A label for people ("monitoring", "web form").
        created: When the key was issued (aware UTC).
    """

    key_id: str
    digest: str = attrs.field(repr=False)
    networks: tuple[Network, ...] = attrs.field(converter=_to_networks)
    permissions: frozenset[Permission] = attrs.field(converter=_to_permissions)
    active: bool = True
    name: str = ""
    created: _dt.datetime = attrs.field(factory=_utc_now)

    def allows_address(self, remote_addr: str) -> bool:
        """Whether `remote_addr` (text form, as a server reports it) is inside one of the key's networks."""
        address = _remote_address(remote_addr)
        if address is None:
            return False
        return any(address.version == net.version and address in net for net in self.networks)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description (no digest, no secret)."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "networks": [str(n) for n in self.networks],
            "permissions": sorted(self.permissions),
            "active": self.active,
            "created": self.created.isoformat(),
        }


class IssuedKey:
    """A freshly issued key: the stored record and the secret, which is shown this once and never again.

    Deliberately not an attrs class, so `attrs.asdict` (or a JSON encoder walking attrs values) cannot put
    the secret into logs or responses; `repr` shows the key id only. Read `secret` explicitly.
    """

    __slots__ = ("_key", "_secret")

    def __init__(self, key: ApiKey, secret: str) -> None:
        self._key = key
        self._secret = secret

    @property
    def key(self) -> ApiKey:
        """The stored record (digest only)."""
        return self._key

    @property
    def secret(self) -> str:
        """The full key to give to the client, once."""
        return self._secret

    def __repr__(self) -> str:
        return f"IssuedKey(key_id={self._key.key_id!r}, secret='tm_{self._key.key_id}_***')"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IssuedKey):
            return NotImplemented
        return self._key == other._key and hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self._key.key_id)


@runtime_checkable
class ApiKeyStore(Protocol):
    """Where API keys live. Implementations must be safe to call from several threads."""

    def add(self, key: ApiKey) -> None:
        """Store a new key record (its id must be new)."""

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, or `None`."""

    def list(self) -> Sequence[ApiKey]:
        """Every key, oldest first."""

    def revoke(self, key_id: str) -> ApiKey:
        """Deactivate a key (the row is kept for the record); raises `UnknownKeyError`."""


def issue_key(
    store: ApiKeyStore,
    *,
    networks: Iterable[Network | str],
    permissions: Iterable[str] = ("create_tickets", "submit_email"),
    name: str = "",
    clock: Callable[[], _dt.datetime] = _utc_now,
) -> IssuedKey:
    """Generate a new random key, store its digest, and return the secret (to show the user once).

    The default permissions allow creating tickets and submitting email; running the fetch job must be
    granted explicitly (least privilege).
    """
    nets = _to_networks(networks)
    perms = _to_permissions(permissions)
    for _ in range(8):
        key_id = secrets.token_hex(6)
        if store.get(key_id) is None:
            break
    else:  # pragma: no cover - 48 random bits colliding eight times in a row
        raise BackendError("could not find a free API key id")
    secret = f"tm_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        key_id=key_id, digest=hash_key(secret), networks=nets, permissions=perms, name=name, created=clock()
    )
    store.add(record)
    return IssuedKey(key=record, secret=secret)


def authenticate(store: ApiKeyStore, presented: str | None, remote_addr: str) -> ApiKey:
    """Check a presented key and the client address; return the key record.

    Raises:
        ApiKeyError: for every failure, with the same message.
        BackendError: when the store cannot be read.
    """
    text = presented.strip() if presented else ""
    match = _KEY_RE.match(text)
    record = store.get(match.group(1)) if match else None
    # The same work whether or not the id exists: hash, compare and check the address against a dummy record
    # when there is no row (without short-circuits), so an unknown id costs what a wrong secret costs.
    candidate = record if record is not None else _DUMMY_KEY
    digest_ok = hmac.compare_digest(candidate.digest.encode("ascii"), hash_key(text).encode("ascii"))
    address_ok = candidate.allows_address(remote_addr)
    if record is None or not (digest_ok & address_ok & record.active):
        raise ApiKeyError(INVALID_KEY_MESSAGE)
    return record


_DUMMY_KEY = ApiKey(
    key_id="0" * 12,
    digest=_DUMMY_DIGEST,
    networks=("192.0.2.1/32",),
    permissions=(),
    active=False,
    created=_dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc),
)
"""Stands in for a missing row, so an unknown id is checked exactly like a known one (and always fails)."""


def require(key: ApiKey, permission: Permission) -> None:
    """Raise `PermissionDeniedError` (403) unless `key` has `permission`."""
    if permission not in key.permissions:
        raise PermissionDeniedError(f"this API key is not allowed to {permission.replace('_', ' ')}")


class InMemoryKeyStore:
    """Keys in a dict (tests, and apps that keep their keys elsewhere and load them at start)."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {k.key_id: k for k in keys}

    def add(self, key: ApiKey) -> None:
        """Store a new key record."""
        with self._lock:
            if key.key_id in self._keys:
                raise InvalidValueError(f"an API key with id {key.key_id!r} already exists", field="key_id")
            self._keys[key.key_id] = key

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, or `None`."""
        with self._lock:
            return self._keys.get(key_id)

    def list(self) -> Sequence[ApiKey]:
        """Every key, oldest first."""
        with self._lock:
            return sorted(self._keys.values(), key=lambda k: (k.created, k.key_id))

    def revoke(self, key_id: str) -> ApiKey:
        """Deactivate a key."""
        with self._lock:
            key = self._keys.get(key_id)
            if key is None:
                raise UnknownKeyError(f"no API key with id {key_id!r}", field="key_id")
            key = attrs.evolve(key, active=False)
            self._keys[key_id] = key
            return key


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ticketmail_api_keys (
    key_id      TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    networks    TEXT NOT NULL,
    permissions TEXT NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1,
    name        TEXT NOT NULL DEFAULT '',
    created     TEXT NOT NULL
)
"""


_DUMMY_ROW = (
    "0" * 12,
    _DUMMY_DIGEST,
    '["192.0.2.1/32"]',
    "[]",
    0,
    "",
    "2000-01-01T00:00:00+00:00",
)


class SQLiteKeyStore:
    """Keys in their own table (`ticketmail_api_keys`) of a SQLite file, usually the tickets database.

    The store keeps its own connection (guarded by a lock, so one store serves a threading server) and
    creates the table if it is missing. `sqlite3` errors surface as `BackendError`.
    """

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self._path, timeout=timeout, check_same_thread=False, isolation_level=None)
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open the API key table in {self._path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({self._path!r})"

    @staticmethod
    def _row(row: tuple[str, str, str, str, int, str, str]) -> ApiKey:
        key_id, digest, networks, permissions, active, name, created = row
        return ApiKey(
            key_id=key_id,
            digest=digest,
            networks=json.loads(networks),
            permissions=json.loads(permissions),
            active=bool(active),
            name=name,
            created=_dt.datetime.fromisoformat(created),
        )

    def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[str, str, str, str, int, str, str]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.IntegrityError as exc:
                raise InvalidValueError(f"an API key with this id already exists ({exc})", field="key_id") from exc
            except sqlite3.Error as exc:
                raise BackendError(f"the API key table in {self._path} failed: {exc}") from exc

    def add(self, key: ApiKey) -> None:
        """Store a new key record."""
        self._run(
            "INSERT INTO ticketmail_api_keys (key_id, digest, networks, permissions, active, name, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key.key_id,
                key.digest,
                json.dumps([str(n) for n in key.networks]),
                json.dumps(sorted(key.permissions)),
                int(key.active),
                key.name,
                key.created.isoformat(),
            ),
        )

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, or `None`."""
        rows = self._run(
            "SELECT key_id, digest, networks, permissions, active, name, created FROM ticketmail_api_keys"
            " WHERE key_id = ?",
            (key_id,),
        )
        if not rows:
            self._row(_DUMMY_ROW)  # decode a row anyway: a missing id costs what a known one costs
            return None
        return self._row(rows[0])

    def list(self) -> Sequence[ApiKey]:
        """Every key, oldest first."""
        rows = self._run(
            "SELECT key_id, digest, networks, permissions, active, name, created FROM ticketmail_api_keys"
            " ORDER BY created, key_id"
        )
        return [self._row(r) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Deactivate a key (kept for the record)."""
        self._run("UPDATE ticketmail_api_keys SET active = 0 WHERE key_id = ?", (key_id,))
        key = self.get(key_id)
        if key is None:
            raise UnknownKeyError(f"no API key with id {key_id!r}", field="key_id")
        return key

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
