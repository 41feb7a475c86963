"""Hooks: plain callables the application registers to hear what the pipeline did.

Why hooks run *after* the commit: a hook typically sends mail (an alert to staff, an auto-response to the
requester) or pokes another system. Running it inside the transaction would let a slow or failing hook
hold the database lock or undo a ticket that is already safe; worse, a hook that sent mail and then saw
the transaction roll back would have told someone about a ticket that does not exist. So the pipeline
commits first, then calls hooks in registration order. A hook that raises is logged (with the event kind
and ticket number, never the message body) and the next hook still runs; the commit stands.

No global registry: a `Hooks` value is passed to each `Pipeline`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import attrs

from ticketmail._pipeline.outcome import Outcome
from ticketmail.backends.base import Entry, Ticket

__all__ = ["HookEvent", "HookKind", "Hooks"]

HookKind = Literal["ticket_created", "entry_appended", "message_ignored", "message_rejected", "message_failed"]

_log = logging.getLogger("ticketmail.hooks")


@attrs.frozen
class HookEvent:
    """What a hook receives.

    Attributes:
        kind: Which event fired.
        outcome: The pipeline's outcome for the message (ticket number, reasons, alert/autorespond flags).
        ticket: The ticket as committed (for `ticket_created` and `entry_appended`).
        entry: The thread entry just stored (for `ticket_created`, the first message).
    """

    kind: HookKind
    outcome: Outcome
    ticket: Ticket | None = None
    entry: Entry | None = None


Hook = Callable[[HookEvent], object]


def _callables(value: Sequence[Hook] | Hook) -> tuple[Hook, ...]:
    if callable(value):
        return (value,)
    return tuple(value)


@attrs.frozen
class Hooks:
    """The callables to run after each committed (or failed) message, by event.

    Each attribute takes one callable or a sequence of them; each receives a `HookEvent`.

    Attributes:
        ticket_created: A message or request opened a ticket (also fired for a new linked ticket).
        entry_appended: A reply was appended to an existing ticket (possibly reopening it).
        message_ignored: A filter, an automatic-mail rule or a threading policy ignored the message.
        message_rejected: A rule or policy refused the message.
        message_failed: The message could not be processed and was quarantined.
    """

    ticket_created: tuple[Hook, ...] = attrs.field(default=(), converter=_callables)
    entry_appended: tuple[Hook, ...] = attrs.field(default=(), converter=_callables)
    message_ignored: tuple[Hook, ...] = attrs.field(default=(), converter=_callables)
    message_rejected: tuple[Hook, ...] = attrs.field(default=(), converter=_callables)
    message_failed: tuple[Hook, ...] = attrs.field(default=(), converter=_callables)

    def registered(self, kind: HookKind) -> tuple[Hook, ...]:
        """The callables registered for `kind`, in registration order."""
        return _BY_KIND[kind](self)

    def dispatch(self, event: HookEvent, *, logger: logging.Logger | None = None) -> int:
        """Call every hook registered for `event.kind`; return how many raised (each is logged)."""
        log = logger or _log
        failures = 0
        for hook in self.registered(event.kind):
            try:
                hook(event)
            except Exception:  # a hook must never undo or block the pipeline
                failures += 1
                log.exception(
                    "hook %s for %s failed (ticket %s); the message stays committed",
                    getattr(hook, "__qualname__", repr(hook)),  # a name for the log, not a capability
                    event.kind,
                    event.outcome.ticket,
                )
        return failures


_BY_KIND: dict[HookKind, Callable[[Hooks], tuple[Hook, ...]]] = {
    "ticket_created": lambda hooks: hooks.ticket_created,
    "entry_appended": lambda hooks: hooks.entry_appended,
    "message_ignored": lambda hooks: hooks.message_ignored,
    "message_rejected": lambda hooks: hooks.message_rejected,
    "message_failed": lambda hooks: hooks.message_failed,
}
