"""Recipient routing: which configured mailbox (desk) an envelope recipient belongs to.

`RCPT TO` addresses are compared with every mailbox's `address` and `addresses` after normalization
(domain IDNA-decoded and lower-cased, local part lower-cased: desks do not tell `Support@` from
`support@`). A subaddress `support+TOKEN@example.com` (RFC 5233) belongs to `support@example.com`; the
token stays in the `Delivered-To` header the receiver adds, where the threading's plus-address route reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from ticketmail.errors import ConfigError
from ticketmail.model import MailboxContext
from ticketmail.rules._text import normalize_address
from ticketmail.sources.config import MailboxConfig

__all__ = ["RecipientRouter", "Route"]


@attrs.frozen
class Route:
    """Where one recipient's copy goes.

    Attributes:
        recipient: The recipient as normalized (lower case, Unicode domain), subaddress kept.
        context: The mailbox context (name, desk addresses, department, category, priority).
    """

    recipient: str
    context: MailboxContext

    @property
    def mailbox(self) -> str:
        """The mailbox name."""
        return self.context.name


def _printable(address: str) -> bool:
    return bool(address) and all(c.isprintable() and not c.isspace() for c in address)


class RecipientRouter:
    """Maps envelope recipients to mailbox contexts.

    Args:
        mailboxes: Mailbox configurations (their `ticketmail.sources.config.MailboxConfig.context`
            is used) or contexts; a mailbox without an address receives nothing.
        plus_separator: Subaddress separator; empty: subaddresses are unknown recipients.

    Raises:
        ConfigError: Two mailboxes claim the same address.
    """

    def __init__(self, mailboxes: Iterable[MailboxConfig | MailboxContext], *, plus_separator: str = "+") -> None:
        self._separator = plus_separator
        self._index: dict[str, MailboxContext] = {}
        for item in mailboxes:
            context = item.context() if isinstance(item, MailboxConfig) else item
            for address in context.addresses:
                key = normalize_address(address)
                other = self._index.get(key)
                if other is not None and other.name != context.name:
                    raise ConfigError(
                        f"address {address!r} belongs to two mailboxes ({other.name!r} and {context.name!r})",
                        field="address",
                    )
                self._index[key] = context

    @property
    def addresses(self) -> Mapping[str, str]:
        """Every routed address (normalized) and its mailbox name."""
        return {address: context.name for address, context in self._index.items()}

    def route(self, recipient: str) -> Route | None:
        """The route for `recipient`, or `None` when no mailbox has that address."""
        if not isinstance(recipient, str) or not _printable(recipient) or "@" not in recipient:
            return None
        try:
            normal = normalize_address(recipient)
        except (UnicodeError, ValueError):
            return None
        context = self._index.get(normal)
        if context is None and self._separator:
            local, _, domain = normal.rpartition("@")
            base, sep, token = local.partition(self._separator)
            if sep and base and token:
                context = self._index.get(f"{base}@{domain}")
        return None if context is None else Route(normal, context)
