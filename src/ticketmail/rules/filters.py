"""Allow/Ignore filters over sender address, sender domain and keywords.

Semantics (documented in docs/rules.md, pinned by hypothesis tests):

* A filter *matches* a message when ANY of its entries matches (OR within and across its lists):
  the sender address equals an address entry, the sender domain is a domain entry or a subdomain of
  it, or a keyword occurs in the subject or the body. A filter with no entries matches nothing.
* ``ignore`` filters drop matching messages. ``allow`` filters let only matching messages through;
  when several allow filters apply, matching any one of them is enough. Ignore wins over allow.
* A filter with ``mailboxes`` applies only there; without, everywhere. No applicable filter: all pass.

Domain entries match subdomains (``example.com`` matches ``mail.example.com``) because organisations
send from many hosts of their domain; list the exact subdomain to be narrower. Keywords match whole
words, case-insensitively (``sale`` matches "Sale!" but not "wholesale"), in the subject and the first
:data:`BODY_CHARS` characters of the body.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

from ticketmail.model import MessageView
from ticketmail.rules._text import normalize_address, normalize_domain

__all__ = ["BODY_CHARS", "Filter", "FilterMatch", "FilterType", "find_word"]

FilterType = Literal["allow", "ignore"]

BODY_CHARS = 65536
"""Filters and ``body`` conditions look at this many characters of the body."""


def _addresses(values: Iterable[str]) -> frozenset[str]:
    return frozenset(normalize_address(v) for v in values if v.strip())


def _domains(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(normalize_domain(v.strip().lstrip("@")) for v in values if v.strip()))


def _keywords(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(" ".join(v.casefold().split()) for v in values if v.strip()))


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _check_filter_type(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("allow", "ignore"):
        raise ValueError(f"Filter.type must be 'allow' or 'ignore', got {value!r}")


def find_word(haystack: str, needle: str) -> bool:
    """Whether ``needle`` occurs in ``haystack`` with no letter or digit right before or after it.

    Both must already be case-folded. Linear in ``len(haystack)`` per distinct occurrence.
    """
    if not needle:
        return False
    start = haystack.find(needle)
    while start != -1:
        end = start + len(needle)
        before_ok = start == 0 or not haystack[start - 1].isalnum() or not needle[0].isalnum()
        after_ok = end == len(haystack) or not haystack[end].isalnum() or not needle[-1].isalnum()
        if before_ok and after_ok:
            return True
        start = haystack.find(needle, start + 1)
    return False


@attrs.frozen
class FilterMatch:
    """Which entry of a filter matched: ``field`` is ``address``, ``domain`` or ``keyword``."""

    field: str
    value: str


@attrs.frozen
class Filter:
    """One allow or ignore filter. Entries are normalized at construction.

    Attributes:
        name: Shown in decision reasons.
        type: ``allow`` or ``ignore``.
        addresses: Sender addresses (normalized: lower case, IDNA-decoded domain).
        domains: Sender domains, without ``@`` (a leading ``@`` is tolerated and removed).
        keywords: Words or phrases looked for in the subject and body.
        mailboxes: Mailbox names the filter applies to; empty means every mailbox.
    """

    name: str
    type: FilterType = attrs.field(validator=_check_filter_type)
    addresses: frozenset[str] = attrs.field(default=frozenset(), converter=_addresses)
    domains: tuple[str, ...] = attrs.field(default=(), converter=_domains)
    keywords: tuple[str, ...] = attrs.field(default=(), converter=_keywords)
    mailboxes: tuple[str, ...] = attrs.field(default=(), converter=_names)

    @property
    def empty(self) -> bool:
        """True when the filter has no entries at all (it then matches nothing)."""
        return not (self.addresses or self.domains or self.keywords)

    def applies_to(self, mailbox: str) -> bool:
        """Whether the filter is active for ``mailbox``."""
        return not self.mailboxes or mailbox in self.mailboxes

    def match(self, view: MessageView, *, subject: str | None = None, body: str | None = None) -> FilterMatch | None:
        """The first entry matching ``view``, or ``None``.

        ``subject`` and ``body`` may be passed already case-folded (and the body cut) to share that work
        between filters.
        """
        if view.sender is not None and (self.addresses or self.domains):
            address = normalize_address(view.sender.email)
            if address in self.addresses:
                return FilterMatch("address", address)
            domain = address.rpartition("@")[2]
            for entry in self.domains:
                if domain == entry or domain.endswith("." + entry):
                    return FilterMatch("domain", entry)
        if self.keywords:
            folded_subject = subject if subject is not None else view.subject.casefold()
            folded_body = body if body is not None else view.body[:BODY_CHARS].casefold()
            for keyword in self.keywords:
                if find_word(folded_subject, keyword) or find_word(folded_body, keyword):
                    return FilterMatch("keyword", keyword)
        return None
