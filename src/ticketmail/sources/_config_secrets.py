"""Secrets in mailbox configuration: a masked wrapper, and masking of a whole parsed document."""

from __future__ import annotations

import copy
import hmac
from collections.abc import Mapping
from typing import Any

__all__ = ["Secret", "is_secret_key", "mask_secrets"]

_SECRET_WORDS = ("password", "secret", "token")
_NOT_SECRET_SUFFIXES = ("_env", "_file", "_provider", "_url", "_endpoint")


class Secret:
    """A secret string that never shows itself in `repr`, `str`, f-strings or `attrs.asdict`.

    Deliberately not an attrs class, so `attrs.asdict(config)` keeps the wrapper (masked) instead of
    recursing into it. Use `reveal()` at the one place that needs the value (the login command).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"password: expected a string, got {type(value).__name__}")
        self._value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def reveal(self) -> str:
        """The secret value. Never log it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __bool__(self) -> bool:
        return bool(self._value)


def is_secret_key(key: object) -> bool:
    """Whether a mailbox key holds a secret itself (`password`, `client_secret`), not where one is kept.

    `password_env`, `token_file` and the like name a variable or a file, which is not secret.
    """
    name = str(key).lower()
    return any(word in name for word in _SECRET_WORDS) and not name.endswith(_NOT_SECRET_SUFFIXES)


def _mask_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return value
    return f"{scheme}://{userinfo.split(':', 1)[0]}:********@{host}"


def _mask_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: Secret(str(item))
            if is_secret_key(key) and item is not None and not isinstance(item, (Secret, dict, list))
            else _mask_tree(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask_tree(item) for item in value]
    return value


def mask_secrets(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a parsed configuration document with every secret value wrapped in `Secret`.

    Covers every key that names a secret in any table (`password`, `client_secret`, `*token`, not
    `password_env`/`token_file`, which only say where one is kept) and a `[storage] url` with a
    password; what is left is safe to log or keep around.
    """
    out: dict[str, Any] = _mask_tree(copy.deepcopy(dict(doc)))
    storage = out.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("url"), str):
        url = storage["url"]
        if _mask_url(url) != url:
            storage["url"] = Secret(url)
    return out
