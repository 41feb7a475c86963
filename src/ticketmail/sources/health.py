"""Mailbox health: what an operator needs to see before users complain that "mail stopped".

The seed products answer "connection failed" and nothing else. Here every poll of a mailbox updates one
`MailboxHealth` record: whether the mailbox is reachable, when it last synced successfully, how many
messages are still waiting, the last error *with the stage that failed* (`dns`, `connect`, `tls`,
`auth`, `folder`, `fetch`, `ack`, `backend`, `lock`), and how many runs in a row failed.

State file
    The records live in a small JSON file (by default `health.json` in the state directory next to the
    database, see `ticketmail.sources.poller`) so that `ticketmail status` in another process can read
    them. Writers serialise on an `flock` of `health.json.lock` and replace the file atomically
    (write a temporary file, `fsync`, `rename`), so a reader never sees half a file and a crashed
    writer never corrupts it. The format is a JSON object `{"version": 1, "mailboxes": {name: record}}`;
    timestamps are ISO 8601 with offset. No secret ever goes into it: errors are stored by `code`,
    `stage` and their (secret-free) message.

Events
    Plain callables receive a `HealthEvent` when a mailbox becomes unreachable (its first failed
    connection after being reachable or never tried) and when it recovers (its first success after being
    unreachable). A storage failure (`BackendError`) is an error of the run, not of the mailbox: it is
    recorded and counted, but does not mark the mailbox unreachable. A listener that raises is logged and
    ignored: alerting must never break polling.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from ticketmail.errors import BackendError, SourceError, TicketmailError
from ticketmail.sources._retry import is_retryable

__all__ = ["ErrorInfo", "HealthEvent", "HealthListener", "HealthStore", "MailboxHealth", "read_health"]

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def _iso(value: _dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: object) -> _dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _dt.datetime.fromisoformat(value)
    except ValueError:
        return None


@attrs.frozen
class ErrorInfo:
    """The last error of a mailbox: stable `code`, the failing `stage` and a human `message`.

    `retryable` is false for an error no retry can fix (a revoked OAuth2 refresh token, a wrong client
    secret): a worker stops polling that mailbox until it is restarted, and the message says so.
    """

    code: str
    stage: str
    message: str
    retryable: bool = True

    @classmethod
    def from_error(cls, error: TicketmailError) -> ErrorInfo:
        """Summarise a ticketmail error (its message is secret-free by contract)."""
        if isinstance(error, SourceError):
            stage = error.stage
        elif isinstance(error, BackendError):
            stage = "backend"
        else:
            stage = "process"
        return cls(code=error.code, stage=stage, message=error.message, retryable=is_retryable(error))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping; `"retryable": false` is added only for an error no retry can fix."""
        data: dict[str, Any] = {"code": self.code, "stage": self.stage, "message": self.message}
        if not self.retryable:
            data["retryable"] = False
        return data


@attrs.frozen
class MailboxHealth:
    """The health of one mailbox as of its last poll.

    Attributes:
        name: The mailbox name.
        reachable: `True` after a successful connection, `False` after a failed one, `None` if never
            polled.
        last_attempt: When the last poll started.
        last_success: When a poll last completed without error.
        waiting: Messages still waiting after the last successful poll (`None` when the source cannot tell).
        last_error: The last error, if the last poll failed (cleared by a success).
        consecutive_failures: Failed polls in a row (0 after a success).
        last_processed: Messages processed (acknowledged) by the last poll.
        last_failed: Messages the last poll left in place because processing failed.
        last_oversized: Messages the last poll left on the server for exceeding `max_message_size`.
    """

    name: str
    reachable: bool | None = None
    last_attempt: _dt.datetime | None = None
    last_success: _dt.datetime | None = None
    waiting: int | None = None
    last_error: ErrorInfo | None = None
    consecutive_failures: int = 0
    last_processed: int = 0
    last_failed: int = 0
    last_oversized: int = 0

    @property
    def state(self) -> str:
        """`ok`, `failing` (reachable, but runs fail), `unreachable` or `unknown`."""
        if self.reachable is None:
            return "unknown"
        if not self.reachable:
            return "unreachable"
        return "failing" if self.consecutive_failures else "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (the state file's record format)."""
        return {
            "name": self.name,
            "state": self.state,
            "reachable": self.reachable,
            "last_attempt": _iso(self.last_attempt),
            "last_success": _iso(self.last_success),
            "waiting": self.waiting,
            "last_error": self.last_error.to_dict() if self.last_error else None,
            "consecutive_failures": self.consecutive_failures,
            "last_processed": self.last_processed,
            "last_failed": self.last_failed,
            "last_oversized": self.last_oversized,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MailboxHealth:
        """Rebuild a record written by `to_dict()`; unknown or mistyped values fall back to defaults."""
        err = data.get("last_error")
        error = None
        if isinstance(err, Mapping):
            error = ErrorInfo(
                code=str(err.get("code", "")),
                stage=str(err.get("stage", "")),
                message=str(err.get("message", "")),
                retryable=err.get("retryable") is not False,
            )
        reachable = data.get("reachable")
        waiting = data.get("waiting")

        def _int(key: str) -> int:
            value = data.get(key, 0)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        return cls(
            name=str(data.get("name", "")),
            reachable=reachable if isinstance(reachable, bool) else None,
            last_attempt=_parse_time(data.get("last_attempt")),
            last_success=_parse_time(data.get("last_success")),
            waiting=waiting if isinstance(waiting, int) and not isinstance(waiting, bool) else None,
            last_error=error,
            consecutive_failures=_int("consecutive_failures"),
            last_processed=_int("last_processed"),
            last_failed=_int("last_failed"),
            last_oversized=_int("last_oversized"),
        )


@attrs.frozen
class HealthEvent:
    """A change of reachability: `kind` is `unreachable` or `recovered`."""

    kind: Literal["unreachable", "recovered"]
    mailbox: str
    at: _dt.datetime
    health: MailboxHealth


HealthListener = Callable[[HealthEvent], None]


def read_health(path: str | os.PathLike[str]) -> dict[str, MailboxHealth]:
    """Read a health state file (what `ticketmail status` does); a missing file means no data yet.

    Raises:
        TicketmailError: the file exists but is not a health state file.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise TicketmailError(f"cannot read health state {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TicketmailError(f"health state {path} is not UTF-8 text") from exc
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TicketmailError(f"health state {path} is not valid JSON: {exc}") from exc
    boxes = data.get("mailboxes") if isinstance(data, dict) else None
    if not isinstance(boxes, dict):
        raise TicketmailError(f"health state {path} has no 'mailboxes' object")
    return {str(k): MailboxHealth.from_dict({**v, "name": k}) for k, v in boxes.items() if isinstance(v, dict)}


class HealthStore:
    """Health records of many mailboxes, optionally persisted to a JSON state file.

    Args:
        path: The state file (`None` keeps records in memory only).
        listeners: Callables notified of `HealthEvent` changes.

    Thread-safe; several processes may share one file (updates are read-modify-write under `flock`).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, listeners: Sequence[HealthListener] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self._listeners = tuple(listeners)
        self._memory: dict[str, MailboxHealth] = {}
        self._mutex = threading.Lock()

    def get(self, name: str) -> MailboxHealth:
        """The record of `name` (a fresh `unknown` one if never polled)."""
        return self.all().get(name) or MailboxHealth(name=name)

    def all(self) -> dict[str, MailboxHealth]:
        """Every known record, by mailbox name (from the state file when there is one and it is readable)."""
        if self.path is not None:
            try:
                return {**self._memory, **read_health(self.path)}
            except TicketmailError:
                log.warning("health state %s is unreadable; showing this process's records", self.path)
        with self._mutex:
            return dict(self._memory)

    def record_attempt(self, name: str, *, at: _dt.datetime) -> MailboxHealth:
        """Note that a poll of `name` started."""
        return self._update(name, lambda h: attrs.evolve(h, last_attempt=at))[1]

    def record_success(
        self,
        name: str,
        *,
        at: _dt.datetime,
        waiting: int | None = None,
        processed: int = 0,
        failed: int = 0,
        oversized: int = 0,
    ) -> MailboxHealth:
        """Record a completed poll; fires `recovered` if the mailbox was unreachable."""

        def change(h: MailboxHealth) -> MailboxHealth:
            return attrs.evolve(
                h,
                reachable=True,
                last_success=at,
                waiting=waiting,
                last_error=None,
                consecutive_failures=0,
                last_processed=processed,
                last_failed=failed,
                last_oversized=oversized,
            )

        before, after = self._update(name, change)
        if before.reachable is False:
            self._emit(HealthEvent(kind="recovered", mailbox=name, at=at, health=after))
        return after

    def record_failure(
        self, name: str, *, at: _dt.datetime, error: TicketmailError, processed: int = 0, failed: int = 0
    ) -> MailboxHealth:
        """Record a failed poll; a source error marks the mailbox unreachable (and fires `unreachable`)."""
        info = ErrorInfo.from_error(error)
        # The mailbox answered if the failure came after connecting: storage, an acknowledgement or a lock.
        mailbox_down = isinstance(error, SourceError) and info.stage not in ("ack", "lock")

        def change(h: MailboxHealth) -> MailboxHealth:
            return attrs.evolve(
                h,
                reachable=False if mailbox_down else (True if h.reachable is None else h.reachable),
                last_error=info,
                consecutive_failures=h.consecutive_failures + 1,
                last_processed=processed,
                last_failed=failed,
            )

        before, after = self._update(name, change)
        if mailbox_down and before.reachable is not False:
            self._emit(HealthEvent(kind="unreachable", mailbox=name, at=at, health=after))
        elif before.reachable is False and after.reachable:
            self._emit(HealthEvent(kind="recovered", mailbox=name, at=at, health=after))
        return after

    def record_stopped(self, name: str, *, at: _dt.datetime, error: TicketmailError) -> MailboxHealth:
        """Record that a worker stopped polling `name` after `error`, which no retry can fix."""
        base = ErrorInfo.from_error(error)
        info = attrs.evolve(
            base,
            retryable=False,
            message=f"{base.message} (not retried: polling of this mailbox stopped until the worker restarts)",
        )

        def change(h: MailboxHealth) -> MailboxHealth:
            return attrs.evolve(h, last_error=info)

        return self._update(name, change)[1]

    # -- internals -------------------------------------------------------------------------------------

    def _emit(self, event: HealthEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # alerting must never break polling
                log.exception("health listener %r failed on %s event for %s", listener, event.kind, event.mailbox)

    def _update(
        self, name: str, change: Callable[[MailboxHealth], MailboxHealth]
    ) -> tuple[MailboxHealth, MailboxHealth]:
        with self._mutex:
            if self.path is not None:
                try:
                    return self._update_file(self.path, name, change)
                except OSError as exc:
                    # Health is for humans; failing to record it must never stop mail from being fetched.
                    log.warning("cannot write health state %s (%s); keeping it in memory", self.path, exc.strerror)
            before = self._memory.get(name) or MailboxHealth(name=name)
            after = change(before)
            self._memory[name] = after
            return before, after

    def _update_file(
        self, path: Path, name: str, change: Callable[[MailboxHealth], MailboxHealth]
    ) -> tuple[MailboxHealth, MailboxHealth]:
        with self._file_lock(path):
            try:
                records = read_health(path)
            except TicketmailError:
                log.warning("health state %s was unreadable; starting it afresh", path)
                records = {}
            before = records.get(name) or self._memory.get(name) or MailboxHealth(name=name)
            after = change(before)
            records[name] = after
            self._write(path, records)
            self._memory[name] = after
            return before, after

    @contextlib.contextmanager
    def _file_lock(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            import fcntl  # POSIX only: imported where used, so the package imports anywhere

            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, path: Path, records: Mapping[str, MailboxHealth]) -> None:
        payload = {"version": _FORMAT_VERSION, "mailboxes": {k: v.to_dict() for k, v in sorted(records.items())}}
        fd, tmp = tempfile.mkstemp(prefix=".health-", dir=path.parent)
        try:
            os.fchmod(fd, 0o644)  # `ticketmail status` may run as another user; no secrets inside
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def __repr__(self) -> str:
        return f"HealthStore(path={str(self.path) if self.path else None!r}, listeners={len(self._listeners)})"
