"""What a message offers threading, capped before any lookup: message ids, subject tags, plus tokens.

Linear in the message and bounded in output, whatever the message carries; the numbers can be checked against
the store before the write transaction (`prefilter_candidates()`), so guessed tags cost the write lock nothing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator

import attrs

from ticketmail._threading.options import ThreadingOptions, find_subject_tags
from ticketmail.model import InboundEmail

__all__ = ["ThreadCandidates", "number_variants", "prefilter_candidates", "thread_candidates"]


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
            for variant in number_variants(number):
                if exists(variant):
                    found.setdefault(variant)
                    break
        return tuple(found)

    return ThreadCandidates(
        candidates.message_ids, keep(candidates.subject_numbers), keep(candidates.plus_tokens), checked=True
    )


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


def number_variants(number: str) -> Iterator[str]:
    yield number
    if number.upper() != number:
        yield number.upper()


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


ThreadCandidates.__module__ = "ticketmail.threading"  # its public home (reprs and pickles say so)
