"""Loading mailbox configuration from TOML or a plain mapping, every mistake a `ConfigError` naming the key."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ticketmail.errors import ConfigError
from ticketmail.sources._config_secrets import Secret, is_secret_key, mask_secrets
from ticketmail.sources._mailbox_config import MailboxConfig, SourcesConfig, TokenProvider

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["load_config", "mailbox_from_dict"]

_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "protocol": (str,),
    "address": (str,),
    "addresses": (list, str),
    "host": (str,),
    "port": (int,),
    "security": (str,),
    "ca_file": (str,),
    "verify": (bool,),
    "username": (str,),
    "auth": (str,),
    "password": (str, Secret),
    "password_env": (str,),
    "password_file": (str,),
    "token_provider": (str,),
    "token_env": (str,),
    "token_file": (str,),
    "path": (str,),
    "folder": (str,),
    "after": (str,),
    "fetch": (str,),
    "max_per_run": (int,),
    "batch_size": (int,),
    "max_message_size": (int,),
    "oversize": (str,),
    "poll_interval": (int, float),
    "idle": (bool,),
    "enabled": (bool,),
    "max_retries": (int,),
    "quarantine_folder": (str,),
    "timeout": (int, float),
    "department": (str,),
    "category": (str,),
    "priority": (int,),
    "provider": (str,),
    "client_id": (str,),
    "client_secret": (str, Secret),
    "client_secret_env": (str,),
    "client_secret_file": (str,),
    "tenant": (str,),
    "scopes": (list, str),
    "token_url": (str,),
    "authorization_url": (str,),
    "device_authorization_url": (str,),
    "grant": (str,),
    "service_account_file": (str,),
    "token_store": (str,),
    "mailbox": (str,),
    "graph_url": (str,),
}
_PATH_KEYS: tuple[str, ...] = ("ca_file", "password_file", "token_file", "path")
_PATH_KEYS += ("client_secret_file", "service_account_file", "token_store")


def _import_provider(spec: str) -> TokenProvider:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"token_provider: expected 'package.module:callable', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"token_provider: cannot import {spec!r} ({type(exc).__name__}: {exc})") from exc
    if not callable(obj):
        raise ValueError(f"token_provider: {spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _env_token(var: str) -> TokenProvider:
    def provider() -> str:
        return os.environ.get(var, "")

    return provider


def _file_token(path: str) -> TokenProvider:
    def provider() -> str:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    return provider


def mailbox_from_dict(
    data: Mapping[str, Any], *, base_dir: str | Path | None = None, where: str = "mailbox"
) -> MailboxConfig:
    """Build a `MailboxConfig` from a plain mapping (one `[[mailboxes]]` table).

    Besides the attribute names, accepts `token_provider = "pkg.mod:callable"` (imported),
    `token_env = "VAR"` and `token_file = "path"` for OAuth2. Relative paths (`ca_file`,
    `password_file`, `token_file`, `path`) are resolved against `base_dir` when given.
    A `token_provider` given as a callable is used as is.

    Raises:
        ConfigError: Unknown key, wrong type or invalid value; the message starts with `where` and the key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    kwargs = {key: value for key, value in data.items() if _typed(key, value, where)}
    for key in _PATH_KEYS:
        if key in kwargs and base_dir is not None:
            kwargs[key] = str(Path(base_dir, kwargs[key]))
    try:
        _resolve_token_source(kwargs)
        _check_lists(kwargs)
        if "name" not in kwargs:
            raise ConfigError("name: required", field="name")
        return MailboxConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc.message}", field=exc.field) from exc
    except (ValueError, TypeError) as exc:
        text = str(exc)
        bad_key = text.split(":", 1)[0] if ":" in text else None
        raise ConfigError(f"{where}.{text}", field=bad_key) from exc


def _typed(key: str, value: Any, where: str) -> bool:
    """Whether to keep `key` (`None` means "not set"); raises for an unknown key or a value of the wrong type."""
    if key not in _TYPES:
        close = difflib.get_close_matches(str(key), sorted(_TYPES), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}.{key}: unknown key{hint} (known: {', '.join(sorted(_TYPES))})", field=key)
    if value is None:  # from Python dicts: None means "not set" (TOML has no null)
        return False
    if key == "token_provider" and callable(value):
        return True
    expected = _TYPES[key]
    ok = False if isinstance(value, bool) and bool not in expected else isinstance(value, expected)
    if not ok:
        names = " or ".join(t.__name__ for t in expected)
        # Never echo a secret, even a wrong one (an unquoted numeric password is still the password).
        shown = f"a value of type {type(value).__name__} (quote it)" if is_secret_key(key) else repr(value)
        raise ConfigError(f"{where}.{key}: expected {names}, got {shown}", field=key)
    return True


def _resolve_token_source(kwargs: dict[str, Any]) -> None:
    """Turn `token_provider = "pkg.mod:fn"`, `token_env` or `token_file` into the `token_provider` callable."""
    token_specs = [k for k in ("token_provider", "token_env", "token_file") if k in kwargs]
    if len(token_specs) > 1:
        raise ConfigError(
            f"token_provider: give only one of token_provider, token_env, token_file ({token_specs})",
            field="token_provider",
        )
    if isinstance(kwargs.get("token_provider"), str):
        kwargs["token_provider"] = _import_provider(kwargs["token_provider"])
    if "token_env" in kwargs:
        kwargs["token_provider"] = _env_token(kwargs.pop("token_env"))
    if "token_file" in kwargs:
        kwargs["token_provider"] = _file_token(kwargs.pop("token_file"))


def _check_lists(kwargs: dict[str, Any]) -> None:
    if isinstance(kwargs.get("scopes"), str):
        kwargs["scopes"] = kwargs["scopes"].split()
    for key in ("scopes", "addresses"):
        value = kwargs.get(key)
        if isinstance(value, list):
            bad = [item for item in value if not isinstance(item, str)]
            if bad:
                raise ConfigError(f"{key}: expected strings, got {bad!r}", field=key)


def load_config(path: str | Path) -> SourcesConfig:
    """Load a TOML configuration file: `[storage]` and `[[mailboxes]]`.

    Every error is a `ConfigError` whose message names the file, the mailbox
    index and the key, e.g. `/etc/tm.toml: mailboxes[1].port: expected int, got '993'`.
    Mailbox names must be unique. Unknown top-level tables are kept in `raw` for other layers.
    """
    file = Path(path)
    try:
        with file.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    base = file.resolve().parent
    storage = doc.get("storage", {})
    if not isinstance(storage, dict):
        raise ConfigError(f"{file}: storage: expected a table, got {type(storage).__name__}", field="storage")
    sqlite: str | None = storage.get("sqlite", storage.get("path"))
    if sqlite is not None and not isinstance(sqlite, str):
        raise ConfigError(f"{file}: storage.sqlite: expected a path string, got {sqlite!r}", field="sqlite")
    if sqlite is not None and sqlite != ":memory:":
        sqlite = str(base / sqlite)
    entries = doc.get("mailboxes", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: mailboxes: expected an array of tables ([[mailboxes]])", field="mailboxes")
    mailboxes: list[MailboxConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{file}: mailboxes[{index}]"
        mailbox = mailbox_from_dict(entry, base_dir=base, where=where)
        if mailbox.name in seen:
            raise ConfigError(f"{where}.name: duplicate mailbox name {mailbox.name!r}", field="name")
        seen.add(mailbox.name)
        mailboxes.append(mailbox)
    return SourcesConfig(
        path=str(file), sqlite=sqlite, storage=storage, mailboxes=tuple(mailboxes), raw=mask_secrets(doc)
    )
