"""Choosing tickets by what an operator knows (mailbox, department, requester, status, age), newest first.

Works on any `Backend` through `list_tickets` paging, so every backend gets it; time is linear in the number
of tickets, memory bounded by the limit.
"""

from __future__ import annotations

import collections
import datetime as _dt
from collections.abc import Iterator

import attrs

from ticketmail.backends.base import Backend, Ticket

_PAGE = 500


@attrs.frozen
class TicketQuery:
    """Which tickets to list; every criterion given must match.

    `requester` matches a case-insensitive part of the requester's address; `since` compares with the
    ticket's last update (naive means UTC); `limit` keeps the newest (or, with `newest_first=False`, the
    oldest) matches.
    """

    mailbox: str | None = None
    department: str | None = None
    requester: str | None = None
    status: str | None = None
    since: _dt.datetime | None = None
    limit: int | None = None
    newest_first: bool = True

    def matches(self, ticket: Ticket) -> bool:
        """Whether `ticket` meets every criterion."""
        since = self.since
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=_dt.timezone.utc)
        return all(
            (
                self.mailbox is None or ticket.mailbox == self.mailbox,
                self.department is None or (ticket.department or "").lower() == self.department.lower(),
                self.requester is None or self.requester.lower() in ticket.requester.email.lower(),
                self.status is None or ticket.status == self.status,
                since is None or ticket.updated >= since,
            )
        )


def _all(backend: Backend) -> Iterator[Ticket]:
    offset = 0
    while True:
        page = backend.list_tickets(limit=_PAGE, offset=offset)
        yield from page
        if len(page) < _PAGE:
            return
        offset += len(page)


def select_tickets(backend: Backend, query: TicketQuery) -> list[Ticket]:
    """The tickets of `backend` that match `query`, in the order and number it asks for."""
    if not query.newest_first:
        chosen: list[Ticket] = []
        for ticket in _all(backend):
            if query.matches(ticket):
                chosen.append(ticket)
                if query.limit is not None and len(chosen) >= query.limit:
                    break
        return chosen
    kept: collections.deque[Ticket] = collections.deque(maxlen=query.limit)
    for ticket in _all(backend):
        if query.matches(ticket):
            kept.append(ticket)
    return list(reversed(kept))
