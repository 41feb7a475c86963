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
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

import attrs

from ticketmail._threading.candidates import (
    ThreadCandidates,
    number_variants,
    prefilter_candidates,
    thread_candidates,
)
from ticketmail._threading.options import (
    ClosedTicketPolicy,
    RequesterHeader,
    ThreadingOptions,
    UnknownSenderPolicy,
    UntrustedMatchPolicy,
    find_subject_tags,
    load_threading,
    subject_tag,
)
from ticketmail.backends.base import Ticket, merge_chain
from ticketmail.decision import Reason
from ticketmail.errors import PolicyRejectedError
from ticketmail.model import Address, InboundEmail

__all__ = [
    "ClosedTicketPolicy",
    "RequesterHeader",
    "ThreadAction",
    "ThreadCandidates",
    "ThreadDecision",
    "ThreadLookups",
    "ThreadRoute",
    "ThreadingOptions",
    "UnknownSenderPolicy",
    "UntrustedMatchPolicy",
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


class UntrustedReplyError(PolicyRejectedError):
    """A reply matched only by a guessable route from a stranger, kept for review (`untrusted_match`).

    Raised by the pipeline for a `quarantine` decision: the unit of work is rolled back and the raw message
    goes to the quarantine with this code, like any failed message (not acknowledged, so a mailbox keeps its
    copy). An operator retries it (with `untrusted_match = "append"` to let it join) or discards it.
    """

    code = "untrusted_reply"


class ThreadLookups(Protocol):
    """What threading reads. A backend's unit of work satisfies it."""

    def ticket_by_number(self, number: str) -> Ticket | None:
        """The ticket with this number, or `None`."""

    def ticket_by_message_id(self, message_id: str) -> Ticket | None:
        """The ticket whose thread holds this message id, or `None`."""


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


def _by_number(lookups: ThreadLookups, number: str) -> Ticket | None:
    for variant in number_variants(number):
        ticket = lookups.ticket_by_number(variant)
        if ticket is not None:
            return ticket
    return None


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
        return _unmatched(requester, may_open_ticket, reasons)
    matched, route, why = found
    reasons.append(why)
    chain = _follow_merges(matched, lookups, reasons)
    ticket = chain[-1]
    if requester is not None and _is_untrusted(route, chain, requester, opts, automatic):
        return _untrusted(ticket, route, requester, opts.untrusted_match, may_open_ticket, reasons)
    trusted = _Found(ticket, route, requester, opts, automatic, may_open_ticket, reasons)
    return _closed_ticket(trusted) or _sender_policy(trusted)


def _unmatched(requester: Address | None, may_open_ticket: bool, reasons: list[Reason]) -> ThreadDecision:
    if not may_open_ticket:
        reasons.append(Reason("thread.no_ticket", "threads onto no ticket and may not open one"))
        return ThreadDecision("ignore", requester=requester, reasons=tuple(reasons))
    reasons.append(Reason("thread.new", "no existing ticket matched: opening a new one"))
    return ThreadDecision("new", requester=requester, reasons=tuple(reasons))


def _is_untrusted(
    route: ThreadRoute, chain: tuple[Ticket, ...], requester: Address, opts: ThreadingOptions, automatic: bool
) -> bool:
    """A match by a guessable route only, from a person on no ticket of the merge chain."""
    return (
        route in ("subject", "plus_address")
        and not automatic
        and opts.untrusted_match != "append"
        and not any(_on_ticket(link, requester.email) for link in chain)
    )


@attrs.define
class _Found:
    """A trusted match (after merge redirects), and what the policies need to decide on it."""

    ticket: Ticket
    route: ThreadRoute
    requester: Address | None
    opts: ThreadingOptions
    automatic: bool
    may_open_ticket: bool
    reasons: list[Reason]

    def decide(self, action: ThreadAction, reason: Reason | None = None, *, ticket: bool = True) -> ThreadDecision:
        """`action` with `reason` recorded last; `ticket=False` names no ticket (a new one is opened)."""
        if reason is not None:
            self.reasons.append(reason)
        matched = self.ticket if ticket else None
        return ThreadDecision(action, matched, self.route, self.requester, reasons=tuple(self.reasons))


def _closed_ticket(found: _Found) -> ThreadDecision | None:
    """Automatic mail never changes a closed ticket; `new_linked` opens a linked one. `None`: go on."""
    ticket = found.ticket
    if ticket.status != "closed":
        return None
    if found.automatic:
        why = Reason("thread.closed_automatic", "automatic mail never changes a closed ticket", value=ticket.number)
        return found.decide("ignore", why)
    if found.opts.closed_ticket != "new_linked":
        return None
    found.reasons.append(
        Reason("thread.closed_new_linked", "the ticket is closed: opening a new linked one", ticket.number)
    )
    if not found.may_open_ticket:
        return _cannot_open(ticket, found.route, found.requester, found.reasons)
    return found.decide("new_linked")


def _sender_policy(found: _Found) -> ThreadDecision:
    """Append (or reopen and append); a sender not on the ticket per `unknown_sender`."""
    ticket, requester = found.ticket, found.requester
    action: ThreadAction = "reopen" if ticket.status == "closed" else "append"
    add_participant = False
    if found.automatic:
        found.reasons.append(Reason("thread.automatic", "automatic mail is appended without other changes"))
    elif requester is not None and not _on_ticket(ticket, requester.email):
        if found.opts.unknown_sender == "reject":
            why = Reason("thread.unknown_sender_reject", "the sender is not on the ticket", value=requester.email)
            return found.decide("reject", why)
        if found.opts.unknown_sender == "new_ticket":
            found.reasons.append(
                Reason(
                    "thread.unknown_sender_new", "the sender is not on the ticket: opening a new one", requester.email
                )
            )
            if not found.may_open_ticket:
                return _cannot_open(ticket, found.route, requester, found.reasons)
            return found.decide("new", ticket=False)
        found.reasons.append(
            Reason("thread.participant_added", "the sender joins the ticket as a participant", value=requester.email)
        )
        add_participant = True
    if action == "reopen":
        found.reasons.append(Reason("thread.reopen", "a reply reopens the closed ticket", value=ticket.number))
    return ThreadDecision(action, ticket, found.route, requester, add_participant, tuple(found.reasons))
