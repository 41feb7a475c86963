"""Loop protection: headers for the desk's own automatic mail, and addresses that must never get one.

RFC 3834 section 2 asks every responder to mark its responses (`Auto-Submitted: auto-replied`) and
to never respond to automatic mail or to addresses such as `MAILER-DAEMON` and `owner-*` list
addresses (section 2 "Where to send responses" and appendix). `outgoing_headers()` gives an
application exactly the headers that make *other* systems (and ticketmail itself) recognise its mail as
automatic; `never_autorespond()` is the address check.

Our own echo header, `LOOP_HEADER` (`X-Ticketmail-Loop`), carries an application-chosen token.
Mail that comes back with it (a forward of our own notification into a desk mailbox) is a loop; its
token also survives providers that rewrite Message-IDs, which makes it a duplicate key.
"""

from __future__ import annotations

import re
from typing import Literal

from ticketmail.errors import InvalidValueError

__all__ = ["LOOP_HEADER", "OutgoingKind", "never_autorespond", "outgoing_headers"]

LOOP_HEADER = "X-Ticketmail-Loop"
"""The header ticketmail-based desks put on their own automatic mail (value: the loop token)."""

OutgoingKind = Literal["auto-replied", "auto-generated"]

_TOKEN = re.compile(r"[\x21-\x7e]{1,200}")

# Local parts (compared lower case, with any "+tag" removed) of addresses that are machines or lists.
_NEVER_LOCAL = re.compile(
    r"""(?x)
    ^(?:
        mailer[-_.]?daemon | mail[-_.]?daemon | mdaemon | postmaster | hostmaster | abuse | root | nobody
      | no[-_.]?reply | do[-_.]?not[-_.]?reply | dont[-_.]?reply | noreply[-_.].{1,40}
      | bounces? | bounce[-_.+].{1,60} | .{1,60}[-_.]bounces?
      | listserv | majordomo | mailman | owner-.{1,60} | .{1,60}-owner | .{1,60}-request
      | notifications? | auto[-_.]?reply | autoresponder
    )$
    """
)


def outgoing_headers(kind: OutgoingKind, *, loop_token: str | None = None) -> dict[str, str]:
    """The headers to put on the desk's own auto-responses (`auto-replied`) and notifications (`auto-generated`).

    * `Auto-Submitted`: `kind` (RFC 3834 section 5).
    * `X-Auto-Response-Suppress: All`: Exchange and Outlook then send no OOF, read or delivery receipts.
    * `Precedence`: `auto_reply` for responses, `bulk` for notifications (de facto; honoured by
      vacation programs and list servers).
    * `X-Ticketmail-Loop`: `loop_token`, when given (printable ASCII, no spaces, at most 200 chars).

    Raises:
        InvalidValueError: for an unknown `kind` or an unusable `loop_token`.
    """
    if kind not in ("auto-replied", "auto-generated"):
        raise InvalidValueError(
            f"outgoing_headers kind must be 'auto-replied' or 'auto-generated', got {kind!r}", field="kind"
        )
    headers = {
        "Auto-Submitted": kind,
        "X-Auto-Response-Suppress": "All",
        "Precedence": "auto_reply" if kind == "auto-replied" else "bulk",
    }
    if loop_token is not None:
        if not _TOKEN.fullmatch(loop_token):
            raise InvalidValueError(
                "loop_token must be 1 to 200 printable ASCII characters without spaces", field="loop_token"
            )
        headers[LOOP_HEADER] = loop_token
    return headers


def never_autorespond(address: str) -> bool:
    """Whether `address` must never receive an automatic response.

    True for mail-system and list addresses (`MAILER-DAEMON`, `postmaster`, `owner-*`, `*-request`,
    `*-bounces`, `listserv`, `majordomo`), `noreply`/`no-reply`/`donotreply` senders and
    `notifications`, compared case-insensitively with a `+tag` removed. An empty address (the null
    sender) is also never answered.
    """
    address = address.strip().strip("<>").strip()
    if not address or "@" not in address:
        return not address or _NEVER_LOCAL.fullmatch(address.lower()) is not None
    local = address.rpartition("@")[0].lower()[:120]
    local = local.split("+", 1)[0] or local
    return _NEVER_LOCAL.fullmatch(local) is not None
