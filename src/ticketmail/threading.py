"""Reply threading: which existing ticket, if any, an inbound message belongs to.

Pure: given a parsed `InboundEmail` and read-only lookups (the pipeline passes its
unit of work), `resolve_thread()` answers with a `ThreadDecision`. It never writes; the pipeline
applies the decision inside the same transaction that made the lookups, so the answer cannot go stale.

Routes, tried in this order (the first one that names an existing ticket wins):

1. `token`: a signed Message-ID of ours (see `ticketmail.tokens`) in `In-Reply-To` or
   `References`. RFC 5322 section 3.6.4 says a reply's `In-Reply-To` holds the parent's `Message-ID`
   and `References` the parent's references plus the parent, so a reply to a notification we sent carries
   our token even when the subject was edited. The HMAC makes the token unforgeable, so this is the most
   trustworthy route.
2. `references`: the same headers naming any message id recorded on a ticket's thread (inbound or
   outbound), `In-Reply-To` first, then `References` newest first, at most `max_references` ids (a
   hostile message may carry thousands; each one is a lookup).
3. `subject`: the ticket tag in the subject (default format `[#{number}]`). The tag may sit anywhere,
   so `Re:`/`AW:`/`Fwd:`/`SV:`/`RE[2]:` prefixes never matter, and blanks inside the tag are
   tolerated (`[ #ABC123 ]`).
4. `plus_address`: a recipient (`To`, `Cc` or an envelope recipient) of the form
   `support+ABC123@example.com` (RFC 5233 subaddressing). When the mailbox context lists the desk's
   addresses, only subaddresses of those count.

Guessing is bounded: only the first `subject_scan_chars` characters of the subject are searched, and at
most `max_subject_tags` distinct tags and `max_plus_tokens` plus tokens are looked up, whatever the
message carries (`thread_candidates()`). The pipeline checks those numbers against the backend's
read-only lookups *before* its write transaction (`prefilter_candidates()`), so a subject full of
guessed tags costs the write lock nothing.

A ticket merged into another redirects to the survivor through the one merge-chain walker
(`ticketmail.backends.base.merge_chain()`); a broken chain (cycle, dangling link, longer than
`MAX_MERGE_CHAIN` links) raises
`MergeChainError` instead of stopping on a ticket that is not the survivor.

Then policies, each recorded as a reason:

* Sender identity: the requester is `From` by default, the first `Reply-To` by option.
* A match by a guessable route only (`subject` or `plus_address`: a tag or a number anyone can copy or
  guess) from a sender who is neither the requester nor a participant (`untrusted_match`): `new_ticket`
  (default: the sender gets a ticket of their own and never joins the matched one), `quarantine` (the
  raw message is kept in the quarantine for an operator, no ticket changes: `UntrustedReplyError`),
  `reject`, or `append` (treat it like any other
  match, so `unknown_sender` decides: the behaviour before this option existed). A reply that carries
  one of our signed Message-IDs or a message id of the thread matches by `token`/`references` first and
  is never affected. Automatic mail is exempt (it never adds a participant anyway).
* Sender not on the matched ticket (neither requester nor participant): `participant` (append and add the
  sender as a participant), `new_ticket` (open a new ticket instead) or `reject`.
* Matched ticket closed: `reopen` it, or `new_linked` (open a new ticket linked to the closed one).
* Automatic mail (auto-replies, out-of-office, bounces) never opens a ticket, never reopens a closed ticket
  and never adds a participant: it is appended to an open thread or ignored with a reason.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, Protocol

import attrs

from ticketmail.backends.base import Ticket, merge_chain
from ticketmail.decision import Reason
from ticketmail.errors import ConfigError, PolicyRejectedError
from ticketmail.model import Address, InboundEmail

__all__ = [
    "ThreadAction",
    "ThreadCandidates",
    "ThreadDecision",
    "ThreadLookups",
    "ThreadRoute",
    "ThreadingOptions",
    "UntrustedReplyError",
    "find_subject_tags",
    "load_threading",
    "prefilter_candidates",
    "requester_of",
    "resolve_thread",
    "subject_tag",
    "thread_candidates",
]

ThreadRoute = Literal["token", "references", "subject", "plus_address"]
ThreadAction = Literal["new", "append", "reopen", "new_linked", "ignore", "reject", "quarantine"]
RequesterHeader = Literal["from", "reply_to"]
UnknownSenderPolicy = Literal["participant", "new_ticket", "reject"]
UntrustedMatchPolicy = Literal["new_ticket", "append", "quarantine", "reject"]
ClosedTicketPolicy = Literal["reopen", "new_linked"]


class UntrustedReplyError(PolicyRejectedError):
    """A reply matched only by a guessable route from a stranger, kept for review (`untrusted_match`).

    Raised by the pipeline for a `quarantine` decision: the unit of work is rolled back and the raw message
    goes to the quarantine with this code, like any failed message (not acknowledged, so a mailbox keeps its
    copy). An operator retries it (with `untrusted_match = "append"` to let it join) or discards it.
    """

    code = "untrusted_reply"


def _check_choice(allowed: tuple[str, ...]) -> Callable[[object, attrs.Attribute[str], str], None]:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in allowed:
            raise ConfigError(
                f"threading.{attribute.name} must be one of {', '.join(allowed)}, got {value!r}",
                field=f"threading.{attribute.name}",
            )

    return check


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


def _check_positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ConfigError(
            f"threading.{attribute.name} must be zero or more, got {value!r}", field=f"threading.{attribute.name}"
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
            `In-Reply-To` ids, then the newest `References`).
        max_subject_tags: At most this many distinct subject tags are looked up (the first ones).
        max_plus_tokens: At most this many distinct plus-address tokens are looked up (the first ones).
        subject_scan_chars: Only this many leading characters of the subject are searched for tags.
        recipients_as_participants: Add the people in `To`/`Cc` of mail written by a person (not the
            desk's own addresses, see `MailboxContext.addresses` and the rules' `own_addresses`) as
            participants, as osTicket does with collaborators. Off by default: with the desk's addresses
            unknown, the desk itself could become a participant and receive its own notifications.
    """

    subject_tag: str = attrs.field(default="[#{number}]", validator=_check_tag_format)
    number_pattern: str = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{2,30})[A-Za-z0-9]"
    plus_addressing: bool = True
    plus_separator: str = attrs.field(default="+", validator=_check_separator)
    requester: RequesterHeader = attrs.field(default="from", validator=_check_choice(("from", "reply_to")))
    unknown_sender: UnknownSenderPolicy = attrs.field(
        default="participant", validator=_check_choice(("participant", "new_ticket", "reject"))
    )
    closed_ticket: ClosedTicketPolicy = attrs.field(default="reopen", validator=_check_choice(("reopen", "new_linked")))
    untrusted_match: UntrustedMatchPolicy = attrs.field(
        default="new_ticket", validator=_check_choice(("new_ticket", "append", "quarantine", "reject"))
    )
    max_references: int = attrs.field(default=32, validator=_check_positive)
    max_subject_tags: int = attrs.field(default=3, validator=_check_positive)
    max_plus_tokens: int = attrs.field(default=3, validator=_check_positive)
    subject_scan_chars: int = attrs.field(default=4096, validator=_check_positive)
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
    `ConfigError` naming `source` and the key::

        [threading]
        subject_tag = "[Ticket #{number}]"
        requester = "reply_to"
        unknown_sender = "new_ticket"
        closed_ticket = "new_linked"
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


class ThreadLookups(Protocol):
    """What threading reads. A backend's unit of work satisfies it."""

    def ticket_by_number(self, number: str) -> Ticket | None:
        """The ticket with this number, or `None`."""

    def ticket_by_message_id(self, message_id: str) -> Ticket | None:
        """The ticket whose thread holds this message id, or `None`."""


@attrs.frozen
class ThreadCandidates:
    """What a message offers threading, already capped (see `thread_candidates()`).

    Attributes:
        message_ids: `In-Reply-To` then `References` newest first, without repeats, at most
            `max_references`.
        subject_numbers: Ticket numbers tagged in the subject (at most `max_subject_tags`).
        plus_tokens: Ticket numbers in plus addresses of the recipients (at most `max_plus_tokens`).
        checked: True when the numbers were checked against the store already
            (`prefilter_candidates()`): each one is then spelled as the existing ticket is.
    """

    message_ids: tuple[str, ...] = ()
    subject_numbers: tuple[str, ...] = ()
    plus_tokens: tuple[str, ...] = ()
    checked: bool = False


def thread_candidates(
    message: InboundEmail, options: ThreadingOptions | None = None, own_addresses: Iterable[str] = ()
) -> ThreadCandidates:
    """The ids, tags and plus tokens threading looks up for `message`, capped per the options.

    Linear in the message and bounded in output, whatever the message carries: 45,000 tags in a subject
    cost one scan of its first `subject_scan_chars` characters and yield `max_subject_tags` numbers.
    """
    opts = options or ThreadingOptions()
    tokens = _plus_tokens(message, opts, own_addresses) if opts.plus_addressing else ()
    return ThreadCandidates(
        _candidate_ids(message, opts.max_references),
        find_subject_tags(message.subject, opts, limit=opts.max_subject_tags),
        tokens,
    )


def prefilter_candidates(candidates: ThreadCandidates, exists: Callable[[str], bool]) -> ThreadCandidates:
    """Keep the numbers naming an existing ticket (as spelled, or upper-cased), spelled as found.

    `exists` should be a read-only lookup (the pipeline passes the backend's `get_ticket`, which takes no
    write lock), so this runs before the write transaction. A ticket created between this check and the
    transaction is missed, which is harmless: nobody can have a tag of a ticket that did not exist yet.
    Message ids are not filtered (a reply may name a message recorded earlier in the same batch).
    """
    if candidates.checked:
        return candidates

    def keep(numbers: tuple[str, ...]) -> tuple[str, ...]:
        found: dict[str, None] = {}
        for number in numbers:
            for variant in _number_variants(number):
                if exists(variant):
                    found.setdefault(variant)
                    break
        return tuple(found)

    return ThreadCandidates(
        candidates.message_ids, keep(candidates.subject_numbers), keep(candidates.plus_tokens), checked=True
    )


@attrs.frozen
class ThreadDecision:
    """Where a message goes.

    Attributes:
        action: `new` ticket, `append` to `ticket`, `reopen` `ticket` then append, `new_linked`
            (a new ticket linked to the closed `ticket`), `ignore`, `reject`, or `quarantine` (keep
            the raw message for staff and change no ticket; see `untrusted_match`).
        ticket: The matched ticket after merge redirects (for `new` with no match: `None`).
        route: The route that matched, or `None`.
        requester: The sender identity (`From` or `Reply-To` per the options); `None` when neither.
        add_participant: Whether the sender should be added to the ticket's participants.
        reasons: What was found and which policy applied, in order.
    """

    action: ThreadAction
    ticket: Ticket | None = None
    route: ThreadRoute | None = None
    requester: Address | None = None
    add_participant: bool = False
    reasons: tuple[Reason, ...] = ()


def _candidate_ids(message: InboundEmail, limit: int) -> tuple[str, ...]:
    """In-Reply-To first, then References newest first; deduplicated; at most `limit`."""
    seen: dict[str, None] = {}
    if limit <= 0:
        return ()
    for mid in itertools.chain(message.in_reply_to, reversed(message.references)):
        if mid and mid not in seen:
            seen[mid] = None
            if len(seen) >= limit:
                break
    return tuple(seen)


_MERGE_REASONS = 16
"""Merge hops recorded one by one; a longer chain gets one summary reason for the rest."""


def _follow_merges(ticket: Ticket, lookups: ThreadLookups, reasons: list[Reason]) -> tuple[Ticket, ...]:
    """The merge chain from `ticket` to its survivor (the one walker), with a reason per hop."""
    chain = merge_chain(ticket, lookups.ticket_by_number)
    for before, after in itertools.islice(itertools.pairwise(chain), _MERGE_REASONS):
        reasons.append(
            Reason("thread.merged", f"ticket {before.number} was merged into {after.number}", value=after.number)
        )
    if len(chain) - 1 > _MERGE_REASONS:
        survivor = chain[-1].number
        reasons.append(
            Reason(
                "thread.merged",
                f"{len(chain) - 1 - _MERGE_REASONS} more merge links lead to ticket {survivor}",
                value=survivor,
            )
        )
    return chain


def _number_variants(number: str) -> Iterator[str]:
    yield number
    if number.upper() != number:
        yield number.upper()


def _by_number(lookups: ThreadLookups, number: str) -> Ticket | None:
    for variant in _number_variants(number):
        ticket = lookups.ticket_by_number(variant)
        if ticket is not None:
            return ticket
    return None


def _plus_tokens(message: InboundEmail, options: ThreadingOptions, own: Iterable[str]) -> tuple[str, ...]:
    limit = options.max_plus_tokens
    if limit <= 0:
        return ()
    own_addresses = {addr.lower() for addr in own}
    full = re.compile(options.number_pattern)
    tokens: dict[str, None] = {}
    recipients = itertools.chain((a.email for a in message.to), (a.email for a in message.cc), message.delivered_to)
    for email in recipients:
        local, at, domain = email.rpartition("@")
        if not at or options.plus_separator not in local:
            continue
        base, _, token = local.partition(options.plus_separator)
        if own_addresses and f"{base}@{domain}".lower() not in own_addresses:
            continue
        if token not in tokens and len(token) <= 64 and full.fullmatch(token):
            tokens[token] = None
            if len(tokens) >= limit:
                break
    return tuple(tokens)


def _lookup_number(lookups: ThreadLookups, number: str, checked: bool) -> Ticket | None:
    return lookups.ticket_by_number(number) if checked else _by_number(lookups, number)


def _match(
    candidates: ThreadCandidates,
    lookups: ThreadLookups,
    options: ThreadingOptions,
    verify_token: Callable[[str], str | None] | None,
) -> tuple[Ticket, ThreadRoute, Reason] | None:
    ids = candidates.message_ids
    if verify_token is not None:
        for mid in ids:
            number = verify_token(mid)
            if number is None:
                continue
            ticket = lookups.ticket_by_number(number)
            if ticket is not None:
                return ticket, "token", Reason("thread.token", "replies to a message we sent (signed id)", value=mid)
    for mid in ids:
        ticket = lookups.ticket_by_message_id(mid)
        if ticket is not None:
            return ticket, "references", Reason("thread.references", "refers to a message of the thread", value=mid)
    for number in candidates.subject_numbers:
        ticket = _lookup_number(lookups, number, candidates.checked)
        if ticket is not None:
            return ticket, "subject", Reason("thread.subject", "the subject carries the ticket tag", value=number)
    if options.plus_addressing:
        for token in candidates.plus_tokens:
            ticket = _lookup_number(lookups, token, candidates.checked)
            if ticket is not None:
                return (
                    ticket,
                    "plus_address",
                    Reason("thread.plus_address", "a recipient address carries the ticket number", value=token),
                )
    return None


def requester_of(message: InboundEmail, options: ThreadingOptions | None = None) -> tuple[Address | None, Reason]:
    """The sender identity per `options.requester`, and a reason saying which header gave it."""
    opts = options or ThreadingOptions()
    if opts.requester == "reply_to" and message.reply_to:
        addr = message.reply_to[0]
        return addr, Reason("identity.reply_to", "the requester is taken from Reply-To", value=addr.email)
    if message.from_ is not None:
        return message.from_, Reason("identity.from", "the requester is taken from From", value=message.from_.email)
    return None, Reason("identity.missing", "the message names no sender")


def _cannot_open(
    ticket: Ticket, route: ThreadRoute, requester: Address | None, reasons: list[Reason]
) -> ThreadDecision:
    reasons.append(Reason("thread.no_ticket", "a new ticket would be needed, but the rules allow none"))
    return ThreadDecision("ignore", ticket, route, requester, reasons=tuple(reasons))


def _untrusted(
    ticket: Ticket,
    route: ThreadRoute,
    requester: Address,
    policy: UntrustedMatchPolicy,
    may_open_ticket: bool,
    reasons: list[Reason],
) -> ThreadDecision:
    """A guessable match from a sender not on the ticket: never join it (see `untrusted_match`)."""
    how = "the subject tag" if route == "subject" else "a plus address"
    what = f"matched ticket {ticket.number} only by {how}, and {requester.email} is not on it"
    if policy == "reject":
        reasons.append(Reason("thread.untrusted_reject", f"{what}: refused", value=ticket.number))
        return ThreadDecision("reject", None, route, requester, reasons=tuple(reasons))
    if policy == "quarantine":
        reasons.append(
            Reason("thread.untrusted_quarantine", f"{what}: kept in quarantine for review", value=ticket.number)
        )
        return ThreadDecision("quarantine", None, route, requester, reasons=tuple(reasons))
    reasons.append(Reason("thread.untrusted_new", f"{what}: opening a new ticket instead", value=ticket.number))
    if not may_open_ticket:
        reasons.append(Reason("thread.no_ticket", "a new ticket would be needed, but the rules allow none"))
        return ThreadDecision("ignore", None, route, requester, reasons=tuple(reasons))
    return ThreadDecision("new", None, route, requester, reasons=tuple(reasons))


def _on_ticket(ticket: Ticket, email: str) -> bool:
    wanted = email.lower()
    return ticket.requester.email.lower() == wanted or any(p.lower() == wanted for p in ticket.participants)


def resolve_thread(
    message: InboundEmail,
    lookups: ThreadLookups,
    *,
    options: ThreadingOptions | None = None,
    verify_token: Callable[[str], str | None] | None = None,
    own_addresses: Iterable[str] = (),
    automatic: bool = False,
    may_open_ticket: bool = True,
    candidates: ThreadCandidates | None = None,
) -> ThreadDecision:
    """Decide where `message` goes.

    Args:
        message: The parsed message.
        lookups: Read access to tickets (a unit of work).
        options: Threading configuration.
        verify_token: Maps a Message-ID to the ticket number it was signed for, or `None` when it is not
            a valid token of ours (see `ticketmail.tokens.verify_message_id()`).
        own_addresses: The desk's addresses at the mailbox (restricts the plus-address route).
        automatic: The message is machine-generated (auto-reply, out-of-office, bounce): it may be appended
            to an open ticket but changes nothing else.
        may_open_ticket: Whether a new ticket may be opened (the rules say no for automatic mail and for a
            sender over the rate limit); when not, an unthreaded message is ignored.
        candidates: What to look up, computed (and pre-checked, see `prefilter_candidates()`) before the
            transaction; by default `thread_candidates()` of `message`.

    Raises:
        MergeChainError: the matched ticket's merge chain is broken (see
            `ticketmail.backends.base.merge_chain()`).
    """
    opts = options or ThreadingOptions()
    requester, identity = requester_of(message, opts)
    reasons: list[Reason] = [identity]
    if candidates is None:
        candidates = thread_candidates(message, opts, own_addresses)
    found = _match(candidates, lookups, opts, verify_token)
    if found is None:
        if not may_open_ticket:
            reasons.append(Reason("thread.no_ticket", "threads onto no ticket and may not open one"))
            return ThreadDecision("ignore", requester=requester, reasons=tuple(reasons))
        reasons.append(Reason("thread.new", "no existing ticket matched: opening a new one"))
        return ThreadDecision("new", requester=requester, reasons=tuple(reasons))

    matched, route, why = found
    reasons.append(why)
    chain = _follow_merges(matched, lookups, reasons)
    ticket = chain[-1]

    untrusted = (
        route in ("subject", "plus_address")
        and not automatic
        and requester is not None
        and opts.untrusted_match != "append"
        and not any(_on_ticket(link, requester.email) for link in chain)
    )
    if untrusted and requester is not None:
        return _untrusted(ticket, route, requester, opts.untrusted_match, may_open_ticket, reasons)

    if ticket.status == "closed":
        if automatic:
            reasons.append(
                Reason("thread.closed_automatic", "automatic mail never changes a closed ticket", value=ticket.number)
            )
            return ThreadDecision("ignore", ticket, route, requester, reasons=tuple(reasons))
        if opts.closed_ticket == "new_linked":
            reasons.append(
                Reason("thread.closed_new_linked", "the ticket is closed: opening a new linked one", ticket.number)
            )
            if not may_open_ticket:
                return _cannot_open(ticket, route, requester, reasons)
            return ThreadDecision("new_linked", ticket, route, requester, reasons=tuple(reasons))

    action: ThreadAction = "reopen" if ticket.status == "closed" else "append"
    add_participant = False
    if automatic:
        reasons.append(Reason("thread.automatic", "automatic mail is appended without other changes"))
    elif requester is not None and not _on_ticket(ticket, requester.email):
        if opts.unknown_sender == "reject":
            reasons.append(
                Reason("thread.unknown_sender_reject", "the sender is not on the ticket", value=requester.email)
            )
            return ThreadDecision("reject", ticket, route, requester, reasons=tuple(reasons))
        if opts.unknown_sender == "new_ticket":
            reasons.append(
                Reason(
                    "thread.unknown_sender_new", "the sender is not on the ticket: opening a new one", requester.email
                )
            )
            if not may_open_ticket:
                return _cannot_open(ticket, route, requester, reasons)
            return ThreadDecision("new", None, route, requester, reasons=tuple(reasons))
        reasons.append(
            Reason("thread.participant_added", "the sender joins the ticket as a participant", value=requester.email)
        )
        add_participant = True
    if action == "reopen":
        reasons.append(Reason("thread.reopen", "a reply reopens the closed ticket", value=ticket.number))
    return ThreadDecision(action, ticket, route, requester, add_participant, tuple(reasons))
