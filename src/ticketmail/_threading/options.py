"""Threading options: the subject tag, the routes' bounds and the policies for awkward matches."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ticketmail._validators import at_least, one_of
from ticketmail.errors import ConfigError

__all__ = [
    "ClosedTicketPolicy",
    "RequesterHeader",
    "ThreadingOptions",
    "UnknownSenderPolicy",
    "UntrustedMatchPolicy",
    "find_subject_tags",
    "load_threading",
    "subject_tag",
]

RequesterHeader = Literal["from", "reply_to"]
UnknownSenderPolicy = Literal["participant", "new_ticket", "reject"]
UntrustedMatchPolicy = Literal["new_ticket", "append", "quarantine", "reject"]
ClosedTicketPolicy = Literal["reopen", "new_linked"]

_PREFIX = "threading"
_ZERO_TURNS_OFF = at_least(0, _PREFIX)
"""The bounds of the lookups: `0` is allowed and turns the route off (see `ThreadingOptions`)."""


def _check_tag_format(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value.count("{number}") != 1 or not value.replace("{number}", "").strip():
        raise ConfigError(
            f"threading.subject_tag must contain '{{number}}' exactly once, with text around it, got {value!r}",
            field="threading.subject_tag",
        )


def _check_separator(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if len(value) != 1 or value in '@ \t"':
        raise ConfigError(
            f"threading.plus_separator must be one character (not '@', a blank or a quote), got {value!r}",
            field="threading.plus_separator",
        )


@attrs.frozen
class ThreadingOptions:
    """How replies find their ticket, and what happens when the match is awkward.

    Attributes:
        subject_tag: The tag put in subjects of mail about a ticket; `{number}` marks the number.
        number_pattern: A regular expression a ticket number matches (used to find tags and plus tokens);
            the default accepts 4-32 letters, digits, `-` and `_`. `RandomTicketNumbers.regex` gives
            the exact pattern of a configured generator.
        plus_addressing: Whether the `support+NUMBER@` route is used.
        plus_separator: The subaddress separator (`+`; some servers use `-`).
        requester: Which header names the sender: `from` (default) or `reply_to`.
        unknown_sender: A reply from an address not on the ticket: `participant`, `new_ticket` or
            `reject`.
        closed_ticket: A reply to a closed ticket: `reopen` or `new_linked`.
        untrusted_match: A reply matched only by the subject tag or a plus address (guessable routes) from a
            sender who is neither the requester nor a participant: `new_ticket` (default) opens a new
            ticket for the sender, `quarantine` keeps the raw message in the quarantine for an operator
            (`UntrustedReplyError`, outcome `failed`, not acknowledged) without changing a ticket,
            `reject` refuses it, `append` treats it like any match (`unknown_sender` then decides; the
            old behaviour). The reason is recorded either way.
        max_references: At most this many ids of `In-Reply-To`/`References` are looked up (the
            `In-Reply-To` ids, then the newest `References`); `0` turns the `references` and `token`
            routes off.
        max_subject_tags: At most this many distinct subject tags are looked up (the first ones); `0` turns
            the `subject` route off.
        max_plus_tokens: At most this many distinct plus-address tokens are looked up (the first ones); `0`
            turns the `plus_address` route off.
        subject_scan_chars: Only this many leading characters of the subject are searched for tags; `0`
            searches none (the `subject` route is off).

    The four bounds are integers `>= 0`: zero is meaningful (the route is off), unlike the counts of
    `ticketmail.numbers.RandomTicketNumbers`, where zero would make no number at all.
        recipients_as_participants: Add the people in `To`/`Cc` of mail written by a person (not the
            desk's own addresses, see `MailboxContext.addresses` and the rules' `own_addresses`) as
            participants, as osTicket does with collaborators. Off by default: with the desk's addresses
            unknown, the desk itself could become a participant and receive its own notifications.
    """

    subject_tag: str = attrs.field(default="[#{number}]", validator=_check_tag_format)
    number_pattern: str = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{2,30})[A-Za-z0-9]"
    plus_addressing: bool = True
    plus_separator: str = attrs.field(default="+", validator=_check_separator)
    requester: RequesterHeader = attrs.field(default="from", validator=one_of(("from", "reply_to"), _PREFIX))
    unknown_sender: UnknownSenderPolicy = attrs.field(
        default="participant", validator=one_of(("participant", "new_ticket", "reject"), _PREFIX)
    )
    closed_ticket: ClosedTicketPolicy = attrs.field(
        default="reopen", validator=one_of(("reopen", "new_linked"), _PREFIX)
    )
    untrusted_match: UntrustedMatchPolicy = attrs.field(
        default="new_ticket", validator=one_of(("new_ticket", "append", "quarantine", "reject"), _PREFIX)
    )
    max_references: int = attrs.field(default=32, validator=_ZERO_TURNS_OFF)
    max_subject_tags: int = attrs.field(default=3, validator=_ZERO_TURNS_OFF)
    max_plus_tokens: int = attrs.field(default=3, validator=_ZERO_TURNS_OFF)
    subject_scan_chars: int = attrs.field(default=4096, validator=_ZERO_TURNS_OFF)
    recipients_as_participants: bool = False
    _tag_re: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        try:
            re.compile(self.number_pattern)
        except re.error as exc:
            raise ConfigError(
                f"threading.number_pattern is not a valid regular expression: {exc}", field="threading.number_pattern"
            ) from exc
        before, _, after = self.subject_tag.partition("{number}")
        object.__setattr__(
            self,
            "_tag_re",
            re.compile(_loose(before) + r"\s*(" + self.number_pattern + r")\s*" + _loose(after), re.IGNORECASE),
        )

    @property
    def tag_regex(self) -> re.Pattern[str]:
        """The compiled pattern that finds tags in a subject (group 1 is the number)."""
        return self._tag_re


_OPTION_TYPES: dict[str, type] = {
    "subject_tag": str,
    "number_pattern": str,
    "plus_addressing": bool,
    "plus_separator": str,
    "requester": str,
    "unknown_sender": str,
    "closed_ticket": str,
    "untrusted_match": str,
    "max_references": int,
    "max_subject_tags": int,
    "max_plus_tokens": int,
    "subject_scan_chars": int,
    "recipients_as_participants": bool,
}


def load_threading(data: Mapping[str, Any], *, source: str = "<dict>") -> ThreadingOptions:
    """Threading options from plain data (e.g. the `[threading]` table of a TOML file).

    Every key is optional; an unknown key, a wrong type or a bad value raises
    `ConfigError` naming `source` and the key:

    ```toml
    [threading]
    subject_tag = "[Ticket #{number}]"
    requester = "reply_to"
    unknown_sender = "new_ticket"
    closed_ticket = "new_linked"
    ```
    """
    for key, value in data.items():
        expected = _OPTION_TYPES.get(key)
        if expected is None:
            raise ConfigError(
                f"{source}: threading: unknown key {key!r}; expected one of {', '.join(sorted(_OPTION_TYPES))}",
                field=f"threading.{key}",
            )
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{source}: threading.{key} must be {expected.__name__}, got {type(value).__name__} {value!r}",
                field=f"threading.{key}",
            )
    try:
        return ThreadingOptions(**dict(data))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", field=exc.field) from exc


def _loose(literal: str) -> str:
    """A regex for `literal` with optional blanks between its characters (`[#` also matches `[ #`)."""
    parts = [re.escape(ch) for ch in literal if not ch.isspace()]
    return r"\s*".join(parts)


def subject_tag(number: str, options: ThreadingOptions | None = None) -> str:
    """The tag to put in the subject of mail about ticket `number` (`[#ABC123]` by default)."""
    return (options or ThreadingOptions()).subject_tag.replace("{number}", number)


def find_subject_tags(
    subject: str, options: ThreadingOptions | None = None, *, limit: int | None = None
) -> tuple[str, ...]:
    """Ticket numbers tagged in `subject`, in order of appearance, without repeats.

    Only the first `options.subject_scan_chars` characters are searched; with `limit`, at most that many
    numbers are returned (the search stops there).
    """
    opts = options or ThreadingOptions()
    found: dict[str, None] = {}
    if limit is not None and limit <= 0:
        return ()
    for match in opts.tag_regex.finditer(subject, 0, opts.subject_scan_chars):
        found.setdefault(match.group(1))
        if limit is not None and len(found) >= limit:
            break
    return tuple(found)


ThreadingOptions.__module__ = "ticketmail.threading"  # its public home (reprs and pickles say so)
