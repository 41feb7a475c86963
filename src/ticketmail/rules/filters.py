"""Allow/Ignore filters over sender address, sender domain, keywords and any header.

Semantics (documented in docs/rules.md, pinned by hypothesis tests):

* A filter *matches* a message when ANY of its entries matches (OR within and across its lists):
  the sender address equals an address entry, the sender domain is a domain entry or a subdomain of
  it, a keyword occurs in the subject or the body, or a header test holds for ANY value of its header
  (`HeaderTest`: the name is case-insensitive; without a value the header only has to be present;
  `X-Spam-Flag: YES` catches mail a spam filter upstream marked). A filter with no entries matches
  nothing.
* `ignore` filters drop matching messages. `allow` filters let only matching messages through;
  when several allow filters apply, matching any one of them is enough. Ignore wins over allow.
* A filter with `mailboxes` applies only there; without, everywhere. No applicable filter: all pass.

Domain entries match subdomains (`example.com` matches `mail.example.com`) because organisations
send from many hosts of their domain; list the exact subdomain to be narrower. Keywords match whole
words, case-insensitively (`sale` matches "Sale!" but not "wholesale"), in the subject and the first
`BODY_CHARS` characters of the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import attrs

from ticketmail._validators import one_of
from ticketmail.model import MessageView
from ticketmail.rules._text import normalize_address, normalize_domain
from ticketmail.rules.routing import Condition, RegexTimeout

__all__ = [
    "BODY_CHARS",
    "HEADER_NAME",
    "Filter",
    "FilterMatch",
    "FilterType",
    "HeaderTest",
    "find_word",
    "header_values",
]

HEADER_NAME = re.compile(r"[!-9;-~]{1,200}")
"""A header field name (RFC 5322 section 3.6.8: printable ASCII but the colon, no spaces)."""

FilterType = Literal["allow", "ignore"]

_TYPES: tuple[FilterType, ...] = ("allow", "ignore")

BODY_CHARS = 65536
"""Filters and `body` conditions look at this many characters of the body."""


def _addresses(values: Iterable[str]) -> frozenset[str]:
    return frozenset(normalize_address(v) for v in values if v.strip())


def _domains(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(normalize_domain(v.strip().lstrip("@")) for v in values if v.strip()))


def _keywords(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(" ".join(v.casefold().split()) for v in values if v.strip()))


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class HeaderTest:
    """One header entry of a filter: header `name` (any case) and a test on its values.

    `op` is a condition operator (`equals`, `contains`, `starts_with`, `ends_with`, `regex` and
    their `not_` forms; see `ticketmail.rules.routing`), applied like a `header:<Name>` rule
    condition: values trimmed, compared case-insensitively unless `case_sensitive`, true when ANY value
    matches (`not_*`: when NO value does). `value=None` only asks that the header be present. A header
    the message does not carry never matches, whatever the operator.

    Raises:
        ValueError: for an invalid name, operator or pattern (the rules loader reports it with its place).
    """

    name: str
    value: str | None = None
    op: str = "equals"
    case_sensitive: bool = False
    condition: Condition | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not HEADER_NAME.fullmatch(self.name):
            raise ValueError(f"invalid header name {self.name!r} (printable ASCII without ':' or spaces)")
        condition = None
        if self.value is not None:
            condition = Condition(f"header:{self.name}", self.op, self.value, self.case_sensitive)
        object.__setattr__(self, "condition", condition)

    def match(self, values: tuple[str, ...]) -> str | None:
        """The value that made the test true (`""` for a bare presence test), or `None`."""
        if not values:
            return None
        if self.condition is None:
            return values[0]
        try:
            ok, hit = self.condition.test(values)
        except RegexTimeout:
            return None
        if not ok:
            return None
        return hit if hit is not None else values[0]


def _header_tests(values: Iterable[HeaderTest | str]) -> tuple[HeaderTest, ...]:
    out: list[HeaderTest] = []
    for item in values:
        if isinstance(item, HeaderTest):
            out.append(item)
        else:  # "Name" (present) or "Name: value" (equals)
            name, colon, value = str(item).partition(":")
            out.append(HeaderTest(name.strip(), value.strip() if colon else None))
    return tuple(out)


def header_values(view: MessageView, name: str) -> tuple[str, ...]:
    """Every value of header `name` (any case) in `view`, in message order."""
    wanted = name.lower()
    return tuple(value for key, value in view.headers if key.lower() == wanted)


def find_word(haystack: str, needle: str) -> bool:
    """Whether `needle` occurs in `haystack` with no letter or digit right before or after it.

    Both must already be case-folded. Linear in `len(haystack)` per distinct occurrence.
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
    """Which entry of a filter matched: `field` is `address`, `domain`, `keyword` or `header`."""

    field: str
    value: str


@attrs.frozen
class Filter:
    """One allow or ignore filter. Entries are normalized at construction.

    Attributes:
        name: Shown in decision reasons.
        type: `allow` or `ignore`.
        addresses: Sender addresses (normalized: lower case, IDNA-decoded domain).
        domains: Sender domains, without `@` (a leading `@` is tolerated and removed).
        keywords: Words or phrases looked for in the subject and body.
        headers: `HeaderTest` entries (or `"Name"`/`"Name: value"` strings).
        mailboxes: Mailbox names the filter applies to; empty means every mailbox.
    """

    name: str
    type: FilterType = attrs.field(validator=one_of(_TYPES, "Filter"))
    addresses: frozenset[str] = attrs.field(default=frozenset(), converter=_addresses)
    domains: tuple[str, ...] = attrs.field(default=(), converter=_domains)
    keywords: tuple[str, ...] = attrs.field(default=(), converter=_keywords)
    mailboxes: tuple[str, ...] = attrs.field(default=(), converter=_names)
    headers: tuple[HeaderTest, ...] = attrs.field(default=(), converter=_header_tests)

    @property
    def empty(self) -> bool:
        """True when the filter has no entries at all (it then matches nothing)."""
        return not (self.addresses or self.domains or self.keywords or self.headers)

    def applies_to(self, mailbox: str) -> bool:
        """Whether the filter is active for `mailbox`."""
        return not self.mailboxes or mailbox in self.mailboxes

    def match(self, view: MessageView, *, subject: str | None = None, body: str | None = None) -> FilterMatch | None:
        """The first entry matching `view`, or `None`.

        `subject` and `body` may be passed already case-folded (and the body cut) to share that work
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
        for test in self.headers:
            hit = test.match(header_values(view, test.name))
            if hit is not None:
                return FilterMatch("header", f"{test.name}: {hit}"[:200])
        return None
