"""Small text helpers shared by the rules modules: address normalization and header-value tokens.

Why a module of its own: every comparison the rules make (filters, loop protection, duplicate keys,
routing) must normalize addresses the same way, or a filter and a duplicate key would disagree about
whether `Help@Example.COM` and `help@example.com` are one sender.

Normalization (used for *comparisons*, never written back to a message):

* surrounding whitespace and angle brackets are removed;
* the domain is IDNA-decoded (`xn--bcher-kva.example` becomes `bücher.example`) and lower-cased,
  matching `ticketmail.model.Address`, whose parser stores domains the same way;
* the local part is lower-cased too. RFC 5321 section 2.4 allows a receiving system to treat local
  parts as case sensitive, but no real mailbox does, and a filter that misses `John@` because it lists
  `john@` is a worse failure than a theoretical collision.
"""

from __future__ import annotations

import re

__all__ = ["header_token", "header_tokens", "normalize_address", "normalize_domain"]

_COMMENT = re.compile(r"\([^()]*\)")
# An address that normalization leaves unchanged: lower-case ASCII, one "@", a domain without empty labels.
_NORMAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*")


def _idna_label(label: str) -> str:
    """Decode one `xn--` label; a label that is not valid IDNA is kept as it is."""
    try:
        return label.encode("ascii").decode("idna")
    except (UnicodeError, ValueError):
        return label


def normalize_domain(domain: str) -> str:
    """Lower-case and IDNA-decode a domain (labels that do not decode are kept lower-cased)."""
    domain = domain.strip().strip(".").lower()
    if "xn--" not in domain:
        return domain
    labels = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            label = _idna_label(label)
        labels.append(label)
    return ".".join(labels)


def normalize_address(address: str) -> str:
    """Normalize an address for comparison: strip `<>`, lower-case, IDNA-decode the domain."""
    if _NORMAL.fullmatch(address) and "xn--" not in address:
        return address  # already normal (the common case: parsed addresses are mostly lower-case ASCII)
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()
    return f"{local.lower()}@{normalize_domain(domain)}"


def header_token(value: str) -> str:
    """The main token of a structured header value: comments and `;` parameters removed, lower case.

    `Auto-Submitted: Auto-Replied; owner-email="x@y" (vacation)` gives `auto-replied`
    (RFC 3834 section 5: the keyword may be followed by parameters and comments).
    """
    value = _COMMENT.sub(" ", value)
    return value.split(";", 1)[0].strip().lower()


def header_tokens(value: str) -> tuple[str, ...]:
    """A comma-separated header value as lower-case tokens (comments and `;` parameters removed).

    `X-Auto-Response-Suppress: DR, RN, OOF, AutoReply` gives `("dr", "rn", "oof", "autoreply")`.
    """
    value = _COMMENT.sub(" ", value)
    out = []
    for item in value.split(","):
        token = item.split(";", 1)[0].strip().lower()
        if token:
            out.append(token)
    return tuple(out)
