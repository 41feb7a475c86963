"""Delivery straight from the mail server: an LMTP (RFC 2033) and SMTP receiver that answers at delivery time.

The mail server (Postfix, Exim) connects, sends one message for one or more desk addresses, and is told for
each address, after the message's unit of work committed, whether it was taken (`250`), refused for good
(`550`/`552`/`554`: the mail server bounces it while the sender is still known) or must be retried
(`451`: the mail server keeps it). See `docs/receive.md`.

Needs the `lmtp` extra (`pip install 'ticketmail[lmtp]'`, which brings aiosmtpd).
"""

from __future__ import annotations

from ticketmail.receive.config import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ListenAddress,
    ReceiveSettings,
    load_receive_settings,
    parse_listen_address,
    receive_settings_from_table,
)
from ticketmail.receive.router import RecipientRouter, Route
from ticketmail.receive.server import Delivery, Receiver, Reply, reply_for, sender_verified, tls_context

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Delivery",
    "ListenAddress",
    "ReceiveSettings",
    "Receiver",
    "RecipientRouter",
    "Reply",
    "Route",
    "load_receive_settings",
    "parse_listen_address",
    "receive_settings_from_table",
    "reply_for",
    "sender_verified",
    "tls_context",
]
