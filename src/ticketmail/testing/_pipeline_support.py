"""The pieces of the pipeline suite that tests use on their own: a fault-injecting backend, test mail, a clock.

Import them from `ticketmail.testing.pipeline_suite`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from ticketmail.backends.base import Backend, UnitOfWork

__all__ = ["DOMAIN", "START", "WRITE_METHODS", "FaultyBackend", "InjectedFault", "StepClock", "build_mail"]

DOMAIN = "desk.example"
"""The desk's domain in test mail (`support@desk.example`)."""

START = _dt.datetime(2026, 3, 2, 9, 0, tzinfo=_dt.timezone.utc)
"""The first time a `StepClock` gives and the default `Date` of `build_mail()`."""

WRITE_METHODS = frozenset(
    {
        "record_processed",
        "create_ticket",
        "append_entry",
        "set_status",
        "add_participant",
        "record_message_id",
        "record_audit",
        "quarantine",
    }
)
"""The unit-of-work methods that write; `FaultyBackend` counts calls to these."""


class InjectedFault(RuntimeError):
    """The unexpected exception `FaultyBackend` raises (not a ticketmail error on purpose)."""


class _FaultyUnit:
    def __init__(self, inner: UnitOfWork, owner: FaultyBackend) -> None:
        self._inner = inner
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in WRITE_METHODS:
            return target
        owner = self._owner

        def write(*args: Any, **kwargs: Any) -> Any:
            owner.before_write(name)
            return target(*args, **kwargs)

        return write


class FaultyBackend:
    """Wraps a backend; when armed, the Nth write (counted across units of work) raises.

    `arm(n, error)` makes the `n`-th write from now raise `error`, once. `writes` counts every write
    seen. Everything else is delegated to the wrapped backend.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.writes = 0
        self._countdown: int | None = None
        self._error: BaseException | None = None
        self.fired: str | None = None

    def arm(self, n: int, error: BaseException) -> None:
        """Raise `error` at the `n`-th write from now (1 = the next write)."""
        self._countdown = n
        self._error = error
        self.fired = None

    def disarm(self) -> None:
        """Cancel a pending fault."""
        self._countdown = None
        self._error = None

    def before_write(self, name: str) -> None:
        """Count a write and raise when the armed fault is due."""
        self.writes += 1
        if self._countdown is None:
            return
        self._countdown -= 1
        if self._countdown == 0:
            error = self._error
            self.disarm()
            self.fired = name
            if error is not None:
                raise error

    @contextmanager
    def _unit(self) -> Iterator[UnitOfWork]:
        with self.inner.unit_of_work() as uow:
            yield _FaultyUnit(uow, self)

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """The wrapped backend's unit of work, with writes counted."""
        return self._unit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def build_mail(
    *,
    subject: str = "Printer broken",
    sender: str = "Alice <alice@example.org>",
    to: str = f"support@{DOMAIN}",
    message_id: str | None = "m1@example.org",
    in_reply_to: str | None = None,
    references: str | Sequence[str] | None = None,
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
    attachment: tuple[str, bytes] | None = None,
    date: _dt.datetime = START,
) -> bytes:
    """The raw bytes of a simple test message (stdlib `email`, CRLF-free, UTF-8).

    `message_id` is given without angle brackets (`None`: no Message-ID header). `references` is a
    header value or a sequence of ids (written oldest first, in brackets). `headers` are added as given
    (`{"Auto-Submitted": "auto-replied"}`); `attachment` is `(filename, bytes)`.
    """
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    if message_id:
        msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references if isinstance(references, str) else " ".join(f"<{r}>" for r in references)
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body if body is not None else f"Body of {message_id}\n")
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0])
    return bytes(msg)


class StepClock:
    """A deterministic clock for tests: `start`, then `step` later at every call."""

    def __init__(self, start: _dt.datetime = START, step: _dt.timedelta = _dt.timedelta(seconds=1)) -> None:
        self._next = start
        self._step = step

    def __call__(self) -> _dt.datetime:
        """The current (fake) time; advances by one step."""
        now = self._next
        self._next = now + self._step
        return now
