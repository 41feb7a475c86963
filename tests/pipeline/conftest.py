"""Shared helpers for the pipeline tests: raw mail builder, a fixed clock, backends."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import format_datetime

import pytest

from ticketmail.backends.memory import InMemoryBackend

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)


class Clock:
    """A clock that moves one second per call."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> dt.datetime:
        return START + dt.timedelta(seconds=next(self._ticks))


def make_mail(
    *,
    subject: str = "Printer broken",
    sender: str = "Alice <alice@example.org>",
    to: str = "support@desk.example",
    message_id: str | None = "m1@example.org",
    in_reply_to: str | None = None,
    references: str | None = None,
    body: str = "The printer prints blank pages.\n",
    headers: dict[str, str] | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(START)
    if message_id:
        msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0])
    return bytes(msg)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def memory() -> Iterator[InMemoryBackend]:
    backend = InMemoryBackend()
    yield backend
    backend.close()
