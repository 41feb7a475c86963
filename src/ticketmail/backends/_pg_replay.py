"""The PostgreSQL unit of work's machinery: the call log, replay after a retryable failure, and the commit.

A unit of work records every call it answered. After a serialization failure or a deadlock it rolls back,
begins again and replays the calls, checking that each gives the answer the caller already acted on (ids it
handed out are kept). If all agree the unit simply continues; if one differs the unit raises
`BackendConflictError`, a transient error: nothing is committed and the source keeps the message. The same
replay stands in for savepoints: after a statement error that the caller catches, the unit's earlier work
is restored before the next call.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import Any, ClassVar

import psycopg
from psycopg.pq import TransactionStatus

from ticketmail.backends._pg_fence import LeaseLostError, current_fence
from ticketmail.backends._pg_rows import FENCE_CHECK, FENCE_LOST
from ticketmail.backends.postgres_schema import (
    BackendConflictError,
    RetryableError,
    translate_all,
    translate_errors,
)
from ticketmail.errors import BackendError, TicketmailError

MAX_ATTEMPTS = 6
"""How many times one unit of work is tried before `BackendConflictError`."""


class _Call:
    """One answered call of a unit of work, kept so the unit can be replayed after a retryable failure."""

    __slots__ = ("args", "function", "kwargs", "outcome")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.outcome: tuple[str, Any] = ("ok", None)


class ReplayingUnit:
    """One `READ COMMITTED` transaction on a connection that replays itself after retryable failures.

    Subclasses implement the unit-of-work calls as `_name` methods and answer them through `_call()`;
    `KEEP_IDS` names the calls whose answers carry ids the replay must hand out again (method name to a
    function from the answer to the keyword arguments that pin them).
    """

    KEEP_IDS: ClassVar[dict[str, Callable[[Any], dict[str, Any]]]] = {}

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self.open = True
        self._log: list[_Call] = []
        self._broken = False  # a statement failed and aborted the transaction; replay before the next call
        self.replaying = False
        self.attempts = 1
        self.pipeline: psycopg.Pipeline | None = None

    def _forget(self) -> None:
        """Drop what the unit learnt in its transaction (called before a replay); subclasses extend it."""

    def _before_commit(self) -> None:
        """Send what the unit still holds back (called before every try of the commit); subclasses extend it."""

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.open:
            raise BackendError("this unit of work has ended; open a new one with backend.unit_of_work()")
        if self._broken:
            self._restart(None)
        call = _Call(function, args, kwargs)
        while True:
            try:
                result = function(*args, **kwargs)
            except RetryableError as exc:
                self._restart(exc)
                continue
            except TicketmailError as exc:
                if self._note_failure(exc):
                    raise  # the call's writes are undone before the next call (see _restart); not replayed
                call.outcome = ("raise", (type(exc), exc.message))
                self._log.append(call)
                raise
            except BaseException as exc:
                self._note_failure(exc)
                raise
            call.outcome = ("ok", result)
            self._log.append(call)
            return result

    def _note_failure(self, exc: BaseException) -> bool:
        """Whether the failed call may have written part of its work (then restore the unit before going on)."""
        cause = exc.__cause__
        if (
            isinstance(exc, psycopg.Error | UnicodeEncodeError)
            or isinstance(cause, psycopg.Error | UnicodeEncodeError)
            or self._conn.info.transaction_status == TransactionStatus.INERROR
        ):
            self._broken = True
        return self._broken

    def _restart(self, cause: RetryableError | None) -> None:
        """Roll back, begin again and replay every answered call; raise if any answer would change."""
        while True:
            if cause is not None:
                self.attempts += 1
                if self.attempts > MAX_ATTEMPTS:
                    raise BackendConflictError(
                        f"PostgreSQL kept aborting this unit of work ({cause}); gave up after {MAX_ATTEMPTS} tries"
                    ) from cause
                time.sleep(random.uniform(0.0, 0.01 * 2**self.attempts))
            if self.pipeline is not None:
                # After an error the server skips everything up to the next sync: sync first, then roll back.
                with contextlib.suppress(psycopg.Error):
                    self.pipeline.sync()
            with translate_all("restart a transaction"):
                self._conn.execute("ROLLBACK")
                self._conn.execute("BEGIN")
            self._broken = False
            try:
                self._replay()
            except RetryableError as exc:
                cause = exc
                continue
            return

    def _replay(self) -> None:
        self.replaying = True
        self._forget()
        try:
            for call in self._log:
                kwargs = dict(call.kwargs)
                kind, value = call.outcome
                keep = self.KEEP_IDS.get(getattr(call.function, "__name__", ""))
                if kind == "ok" and keep is not None:
                    kwargs.update(keep(value))
                try:
                    outcome: tuple[str, Any] = ("ok", call.function(*call.args, **kwargs))
                except TicketmailError as exc:
                    outcome = ("raise", (type(exc), exc.message))
                if outcome != call.outcome:
                    name = getattr(call.function, "__name__", "a call").lstrip("_")
                    raise BackendConflictError(
                        f"a concurrent transaction changed data this unit of work had already read ({name} answered"
                        f" {call.outcome[1]!r} before and {outcome[1]!r} now); nothing was committed, retry later"
                    )
        finally:
            self.replaying = False

    # -- commit --

    def commit(self) -> None:
        """Commit (after the lease check when the thread's commits are fenced); replay on retryable failures.

        The lease check, the `COMMIT` and the wait for both are one round trip: the check raises inside the
        server when the lease is gone, which aborts the transaction instead of committing it.
        """
        if self._broken:
            self._restart(None)
        fence = current_fence()
        while True:
            try:
                self._before_commit()
                with translate_errors("commit"):
                    try:
                        if fence is not None:
                            self._conn.execute(FENCE_CHECK, fence)
                        self._conn.execute("COMMIT")
                        if self.pipeline is not None:
                            self.pipeline.sync()
                    except psycopg.Error as exc:
                        if exc.sqlstate == FENCE_LOST and fence is not None:
                            raise _lease_lost(fence[0]) from exc
                        raise
                return
            except RetryableError as exc:
                self._restart(exc)


def _lease_lost(mailbox: str) -> LeaseLostError:
    return LeaseLostError(
        f"the lease on mailbox {mailbox!r} expired or was taken over by another worker; nothing was committed",
        field="mailbox",
    )
