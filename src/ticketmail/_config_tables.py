"""The `[storage]` and `[api]` tables of the configuration file, and the helpers every table reader uses.

`ticketmail.config` loads the file and re-exports what is public here (`StorageConfig`, `ApiConfig`,
`did_you_mean`, `mask_url`). The value checks of both tables are attrs validators from
`ticketmail._validators`, so an error reads `"<file>: [api] api.port must be ..., got ..."`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ticketmail._validators import at_least, at_most, optional, positive
from ticketmail.errors import ConfigError

__all__ = [
    "API_KEYS",
    "DEFAULT_MAX_BODY",
    "LEASE_TTL_RANGE",
    "STORAGE_KEYS",
    "ApiConfig",
    "StorageConfig",
    "api_from_table",
    "check_keys",
    "did_you_mean",
    "expect",
    "mask_url",
    "resolve",
    "storage_from_table",
]

STORAGE_KEYS: tuple[str, ...] = ("path", "sqlite", "url", "state_dir", "lease_ttl")
API_KEYS: tuple[str, ...] = (
    "keys",
    "max_body",
    "trusted_proxies",
    "host",
    "port",
    "mailbox",
    "max_connections",
    "request_timeout",
)
DEFAULT_MAX_BODY = 10 * 1024 * 1024
LEASE_TTL_RANGE = (0.5, 3600.0)
"""The seconds a mailbox lease may last (`[storage] lease_ttl`, `fetch --lease-ttl`)."""

_URL_PASSWORD = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*://[^/@:]*:)([^/@]*)(@)")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`"; did you mean 'x'?"` for the closest of `known`, else `" (known: a, b, ...)"`."""
    names = sorted(set(known))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f" (known: {', '.join(names)})" if names else ""


def mask_url(url: str) -> str:
    """`url` with the password of its user-info replaced by `********`."""
    return _URL_PASSWORD.sub(r"\1********\3", url)


def check_keys(table: Mapping[str, Any], known: Sequence[str], source: str, where: str) -> None:
    """Refuse a key of `table` that is not in `known`, with a "did you mean"."""
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{source}: [{where}] {key}: unknown key{did_you_mean(key, known)}", field=f"{where}.{key}"
            )


def expect(value: object, kinds: tuple[type, ...], source: str, where: str, what: str) -> Any:
    """`value` when it is one of `kinds` (a bool only when `bool` is named), else a `ConfigError`."""
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ConfigError(f"{source}: [{where}]: expected {what}, got {type(value).__name__}", field=where)
    return value


def resolve(base: Path, value: str) -> str:
    """A file name of the configuration, relative to its directory (`:memory:` as is)."""
    return value if value == ":memory:" else str(base / value)


@attrs.frozen
class StorageConfig:
    """Where tickets are stored.

    Attributes:
        path: The SQLite database file (resolved against the configuration file's directory).
        url: A backend URL (`postgresql://...`, `sqlite:///path`); shown with its password masked.
        state_dir: Locks, health and retry state of the pollers (default `<database>.state/`).
        lease_ttl: Seconds a worker's mailbox lease lasts without a heartbeat, from 0.5 to 3600 (PostgreSQL:
            workers on several machines share the mailboxes; default 30).
    """

    path: str | None = None
    url: str | None = attrs.field(default=None, repr=lambda u: "None" if u is None else repr(mask_url(u)))
    state_dir: str | None = None
    lease_ttl: float | None = attrs.field(
        default=None,
        validator=optional(
            attrs.validators.and_(at_least(LEASE_TTL_RANGE[0], "storage", integer=False), at_most(3600, "storage"))
        ),
    )

    @property
    def target(self) -> str | None:
        """What the backend is opened from: the URL when set, else the SQLite path."""
        return self.url or self.path


_PORT = attrs.validators.and_(at_least(0, "api"), at_most(65535, "api"))


@attrs.frozen
class ApiConfig:
    """Settings of `ticketmail serve` and the API handler.

    Attributes:
        keys: The SQLite file holding API keys (default: the ticket database itself).
        max_body: Request body limit in bytes (default 10 MiB).
        trusted_proxies: Networks of reverse proxies whose `X-Forwarded-For` names the real client.
        host: Address to listen on (default `127.0.0.1`).
        port: Port to listen on (default 8080).
        mailbox: The mailbox name API tickets are recorded under (default `api`); when a `[[mailboxes]]`
            entry has that name, its department, category and priority apply.
        max_connections: Connections `ticketmail serve` handles at once; one more is answered 503 (default 64).
        request_timeout: Seconds a client has to send a whole request, headers and body (default 30).
    """

    keys: str | None = None
    max_body: int = attrs.field(default=DEFAULT_MAX_BODY, validator=at_least(1, "api"))
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8080, validator=_PORT)
    mailbox: str = "api"
    max_connections: int = attrs.field(default=64, validator=at_least(1, "api"))
    request_timeout: float = attrs.field(default=30.0, validator=positive("api"))


def _validated(cls: type[Any], kwargs: Mapping[str, Any], source: str, table: str) -> Any:
    """`cls(**kwargs)` with a validator's error prefixed by the file and the table."""
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", field=exc.field) from exc


def storage_from_table(table: Mapping[str, Any], source: str, base: Path) -> StorageConfig:
    """`[storage]`: a SQLite `path` (or the older `sqlite`) or a backend `url`, `state_dir`, `lease_ttl`."""
    check_keys(table, STORAGE_KEYS, source, "storage")
    for key in ("path", "sqlite", "url", "state_dir"):
        if key in table and (not isinstance(table[key], str) or not table[key].strip()):
            shown = "a secret-bearing value" if key == "url" else type(table[key]).__name__
            raise ConfigError(f"{source}: [storage] {key}: expected a non-empty string, got {shown}", field=key)
    if "path" in table and "sqlite" in table:
        raise ConfigError(f"{source}: [storage] sqlite: give path or sqlite (the older name), not both", field="sqlite")
    path, url = _storage_target(table.get("path", table.get("sqlite")), table.get("url"), source)
    lease_ttl = table.get("lease_ttl")
    if lease_ttl is not None:
        lease_ttl = expect(lease_ttl, (int, float), source, "storage.lease_ttl", "a number of seconds")
    kwargs = {
        "path": resolve(base, path) if path is not None else None,
        "url": url,
        "state_dir": resolve(base, table["state_dir"]) if "state_dir" in table else None,
        "lease_ttl": float(lease_ttl) if lease_ttl is not None else None,
    }
    config: StorageConfig = _validated(StorageConfig, kwargs, source, "storage")
    return config


def _storage_target(path: str | None, url: str | None, source: str) -> tuple[str | None, str | None]:
    if url is not None and path is not None:
        raise ConfigError(f"{source}: [storage] url: give either path (SQLite) or url, not both", field="url")
    if url is not None and "://" not in url:
        raise ConfigError(
            f"{source}: [storage] url: expected a URL such as postgresql://user@host/db, got {mask_url(url)!r}",
            field="url",
        )
    if url is not None and url.startswith("sqlite:///"):
        # SQLAlchemy's spelling: sqlite:///relative.db, sqlite:////absolute/path.db
        return url[len("sqlite:///") :], None
    return path, url


# `[api]` key -> (accepted types, what the error calls it); the values' ranges are ApiConfig's validators.
_API_TYPES: Mapping[str, tuple[tuple[type, ...], str]] = {
    "keys": ((str,), "a file name"),
    "max_body": ((int,), "a number of bytes"),
    "trusted_proxies": ((list,), "a list of networks"),
    "host": ((str,), "a host name or address"),
    "port": ((int,), "a port number"),
    "mailbox": ((str,), "a mailbox name"),
    "max_connections": ((int,), "a number of connections"),
    "request_timeout": ((int, float), "a number of seconds"),
}


def _networks(items: list[Any], source: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"{source}: [api] trusted_proxies: {str(item)[:60]!r} is not an IP address or network",
                field="api.trusted_proxies",
            ) from exc
    return tuple(networks)


def api_from_table(table: Mapping[str, Any], source: str, base: Path) -> ApiConfig:
    """`[api]`: the settings of `ticketmail serve` (see `ApiConfig`)."""
    check_keys(table, API_KEYS, source, "api")
    kwargs: dict[str, Any] = {
        key: expect(value, _API_TYPES[key][0], source, f"api.{key}", _API_TYPES[key][1]) for key, value in table.items()
    }
    if "keys" in kwargs:
        kwargs["keys"] = resolve(base, kwargs["keys"])
    if "trusted_proxies" in kwargs:
        kwargs["trusted_proxies"] = _networks(kwargs["trusted_proxies"], source)
    if "request_timeout" in kwargs:
        kwargs["request_timeout"] = float(kwargs["request_timeout"])
    config: ApiConfig = _validated(ApiConfig, kwargs, source, "api")
    return config
