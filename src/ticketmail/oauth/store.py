"""The token store: one JSON file per mailbox holding its refresh token and the cached access token.

Why a file of its own and these rules:

* **0600, atomic.** The file is written to a temporary file in the same directory (created 0600),
  `fsync`-ed, renamed over the old one and the directory is `fsync`-ed: a crash leaves the old file or
  the new one, never half of either.
* **Persisted before use.** Providers that rotate refresh tokens (Microsoft does, so do most generic
  servers) invalidate the old one when they hand out the new one. `TokenStore` is written with the new
  refresh token *before* the access token that came with it is used, so a crash right after a refresh never
  leaves the mailbox with only a dead token on disk.
* **One refresher at a time.** `TokenStore.locked` takes an exclusive `flock` on `<file>.lock`
  (across processes and threads), so two workers whose access token expired together do not both spend the
  same refresh token (the second would get `invalid_grant` from a rotating server). The second waits,
  re-reads the file, finds the fresh token and uses it.

The file never leaves the state directory and its content never appears in logs, reprs or errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from ticketmail.errors import OAuthError

__all__ = ["StoredTokens", "TokenStore"]

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _mask(value: str | None) -> str:
    return "None" if value is None else "'********'"


@attrs.frozen
class StoredTokens:
    """What the store holds for one mailbox (the values are secrets: the repr masks them).

    Attributes:
        refresh_token: The current refresh token (`None` for client credentials).
        access_token: The cached access token.
        expires_at: Unix time the access token expires (`0`: unknown, treat as expired).
        obtained_at: Unix time it was obtained (its lifetime decides how early it is refreshed).
        scope: The scopes granted, as the token endpoint reported them.
        client_id: The client the tokens were issued to (a store of another app is not used).
        token_url: The token endpoint they came from.
    """

    refresh_token: str | None = attrs.field(default=None, repr=_mask)
    access_token: str | None = attrs.field(default=None, repr=_mask)
    expires_at: float = 0.0
    obtained_at: float = 0.0
    scope: str | None = None
    client_id: str | None = None
    token_url: str | None = None

    def refresh_at(self) -> float:
        """Unix time from which the cached access token counts as expired (a margin before `expires_at`)."""
        from ticketmail.oauth.tokens import refresh_margin

        if not self.access_token or not self.expires_at:
            return 0.0
        return self.expires_at - refresh_margin(self.expires_at - (self.obtained_at or self.expires_at - 3600))

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to disk."""
        return {
            "version": 1,
            "refresh_token": self.refresh_token,
            "access_token": self.access_token,
            "expires_at": self.expires_at,
            "obtained_at": self.obtained_at,
            "scope": self.scope,
            "client_id": self.client_id,
            "token_url": self.token_url,
            "updated_at": time.time(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredTokens:
        """Parse the JSON document (unknown keys ignored, wrong types dropped)."""

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        def number(key: str) -> float:
            value = data.get(key)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

        return cls(
            refresh_token=text("refresh_token"),
            access_token=text("access_token"),
            expires_at=number("expires_at"),
            obtained_at=number("obtained_at"),
            scope=text("scope"),
            client_id=text("client_id"),
            token_url=text("token_url"),
        )


class TokenStore:
    """The token file of one mailbox (see the module docstring for the guarantees).

    Args:
        path: The JSON file (its directory is created 0700 when missing).
        mailbox: The mailbox name, for error messages.
        lock_timeout: Seconds `locked` waits for another refresher before giving up.
    """

    def __init__(self, path: str | os.PathLike[str], *, mailbox: str | None = None, lock_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.mailbox = mailbox
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    @property
    def lock_path(self) -> Path:
        """The lock file next to the store."""
        return self.path.with_name(self.path.name + ".lock")

    def _error(self, what: str, exc: BaseException) -> OAuthError:
        detail = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
        return OAuthError(
            f"cannot {what} the OAuth2 token store {self.path}: {detail}; check the state directory's "
            "permissions and free space",
            reason="store",
            mailbox=self.mailbox,
        )

    def load(self) -> StoredTokens | None:
        """The stored tokens, or `None` when there is no file yet.

        Raises:
            OAuthError: `store`: the file exists but cannot be read or is not a token file.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("read", exc) from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise self._error("parse", exc) from exc
        if not isinstance(data, dict):
            raise self._error("parse", ValueError("not a JSON object"))
        return StoredTokens.from_json(data)

    def save(self, tokens: StoredTokens) -> None:
        """Write `tokens` atomically (temporary file 0600, fsync, rename, fsync of the directory).

        Raises:
            OAuthError: `store`: the directory is not writable (nothing was changed then).
        """
        body = json.dumps(tokens.to_json(), indent=1).encode()
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise self._error("write", exc) from exc
        try:
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(body)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._error("write", exc) from exc
        with contextlib.suppress(OSError):  # durability of the rename; not all file systems allow it
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def delete(self) -> None:
        """Remove the stored tokens (`oauth logout`)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's exclusive lock: threads of this process and other processes wait.

        Raises:
            OAuthError: `store`: the lock was not obtained within `lock_timeout` seconds, or the lock
                file cannot be created.
        """
        import fcntl  # POSIX only; imported here so the module loads everywhere

        key = str(self.path.resolve())
        with _THREAD_LOCKS_GUARD:
            thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
        if not thread_lock.acquire(timeout=self.lock_timeout):
            raise self._error("lock", TimeoutError("another refresh is still running"))
        try:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise self._error("lock", exc) from exc
            try:
                deadline = time.monotonic() + self.lock_timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise self._error("lock", TimeoutError("another process holds the lock")) from None
                        time.sleep(0.02)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            thread_lock.release()
