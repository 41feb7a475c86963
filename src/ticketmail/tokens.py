"""Signed Message-IDs for the mail the application sends about a ticket.

Why: a reply carries the Message-ID it answers in `In-Reply-To` and `References` (RFC 5322 section
3.6.4), and mail clients keep those headers even when the person rewrites the subject. If the id we put on
a notification *names* the ticket and entry and is *signed*, threading can trust it without a database
lookup, nobody can forge one to append to someone else's ticket, and a message whose own Message-ID is one
of our tokens is our own notification come back (a loop).

Shape (all of it `dot-atom-text`, so it is a valid RFC 5322 `id-left`, and URL-safe):

```text
<tm1.KEYID.TICKET.ENTRY.NONCE.MAC@domain>
```

* `tm1`: format version, so a later format can be told apart.
* `KEYID`: which secret signed it; verification accepts any configured key, so a secret is rotated by
  adding the new key first (it signs) and keeping the old one until mail sent with it stops coming back.
* `TICKET`: the ticket number as is when it is made of `[A-Za-z0-9_-]`, else `~` + base64url.
* `ENTRY`: the entry id in base 36.
* `NONCE`: 48 random bits, because RFC 5322 wants every Message-ID unique and an application may send
  several mails (alert, auto-reply, CC) for one entry.
* `MAC`: HMAC-SHA256 over all of the above, truncated to 120 bits, base64url (20 characters).
  Compared with `hmac.compare_digest()` (constant time).

The domain is not signed: it is the sender's to choose and may change with the sending host.
Secrets never appear in `repr`, logs or error messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence

import attrs

from ticketmail.backends.base import Entry, Ticket, normalize_message_id
from ticketmail.errors import ConfigError, InvalidValueError, NotFoundError

__all__ = [
    "MIN_SECRET_BYTES",
    "SigningKey",
    "TokenInfo",
    "entry_of",
    "find_token",
    "make_message_id",
    "signing_keys",
    "verify_message_id",
]

MIN_SECRET_BYTES = 16
"""The shortest secret accepted (128 bits); use `secrets.token_bytes()` (32) to make one."""

_VERSION = "tm1"
_MAC_BYTES = 15
_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")
_B36 = re.compile(r"[0-9a-z]{1,14}")
_DOMAIN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _check_key_id(instance: SigningKey, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or _KEY_ID.fullmatch(value) is None:
        raise ConfigError(
            f"token key id must be 1-16 characters of A-Z a-z 0-9 _ -, got {value!r}", field="tokens.keys.id"
        )


def _check_secret(instance: SigningKey, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) < MIN_SECRET_BYTES:
        size = len(value) if isinstance(value, bytes) else type(value).__name__
        raise ConfigError(
            f"token key {instance.id!r}: secret must be at least {MIN_SECRET_BYTES} bytes, got {size}",
            field="tokens.keys.secret",
        )


@attrs.frozen
class SigningKey:
    """One HMAC secret with the id that names it inside tokens. The secret is never shown."""

    id: str = attrs.field(validator=_check_key_id)
    secret: bytes = attrs.field(validator=_check_secret, repr=False)

    def __repr__(self) -> str:
        return f"SigningKey(id={self.id!r}, secret=<{len(self.secret)} bytes>)"

    @classmethod
    def from_secret(cls, secret: bytes) -> SigningKey:
        """A key whose id is derived from the secret (24 bits of a hash: names it, reveals nothing)."""
        digest = hashlib.sha256(b"ticketmail token key id\0" + secret).digest()
        return cls(base64.urlsafe_b64encode(digest[:3]).decode("ascii"), secret)


Keys = SigningKey | bytes | Sequence[SigningKey | bytes]
"""What the functions accept as keys: one key or secret, or a sequence of them (the first one signs)."""


def signing_keys(keys: Keys) -> tuple[SigningKey, ...]:
    """Normalize `keys` to a tuple of `SigningKey` (raw secrets get derived ids).

    Raises `ConfigError` for no keys or two keys with one id.
    """
    items: Sequence[SigningKey | bytes] = [keys] if isinstance(keys, (SigningKey, bytes)) else keys
    result = tuple(k if isinstance(k, SigningKey) else SigningKey.from_secret(k) for k in items)
    if not result:
        raise ConfigError("at least one token signing key is needed", field="tokens.keys")
    ids = [k.id for k in result]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"token key ids must be unique, got {ids!r}", field="tokens.keys")
    return result


@attrs.frozen
class TokenInfo:
    """What a verified token says: the ticket, the entry, the key that signed it and its nonce."""

    ticket: str
    entry: int
    key_id: str
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _base36(value: int) -> str:
    digits = []
    while True:
        value, rest = divmod(value, 36)
        digits.append(_DIGITS[rest])
        if value == 0:
            return "".join(reversed(digits))


def _encode_ticket(number: str) -> str:
    return number if _SAFE.fullmatch(number) and not number.startswith("~") else "~" + _b64(number.encode("utf-8"))


def _mac(key: SigningKey, key_id: str, ticket_field: str, entry_field: str, nonce: str) -> str:
    message = "\n".join(("ticketmail/message-id", _VERSION, key_id, ticket_field, entry_field, nonce)).encode("ascii")
    return _b64(hmac.new(key.secret, message, hashlib.sha256).digest()[:_MAC_BYTES])


def make_message_id(
    ticket: str | Ticket, entry: int | Entry, *, keys: Keys, domain: str, nonce: str | None = None
) -> str:
    """A signed Message-ID (with angle brackets) for a mail about `entry` of `ticket`.

    `keys[0]` signs. `domain` is the right-hand side (your sending host). `nonce` is random unless
    given (tests); it must be 1-32 characters of `[A-Za-z0-9_-]`. Record the result with
    `uow.record_message_id(number, mid, "outbound")`.
    """
    number = ticket.number if isinstance(ticket, Ticket) else ticket
    entry_id = entry.id if isinstance(entry, Entry) else entry
    if not isinstance(number, str) or not number:
        raise InvalidValueError(f"ticket must be a non-empty ticket number, got {number!r}", field="ticket")
    if isinstance(entry_id, bool) or not isinstance(entry_id, int) or entry_id < 0:
        raise InvalidValueError(f"entry must be a non-negative entry id, got {entry_id!r}", field="entry")
    if not isinstance(domain, str) or _DOMAIN.fullmatch(domain) is None:
        raise InvalidValueError(f"domain must be a host name like 'mail.example.org', got {domain!r}", field="domain")
    if nonce is None:
        nonce = secrets.token_urlsafe(6)
    elif _SAFE.fullmatch(nonce) is None or len(nonce) > 32:
        raise InvalidValueError(f"nonce must be 1-32 characters of A-Z a-z 0-9 _ -, got {nonce!r}", field="nonce")
    key = signing_keys(keys)[0]
    ticket_field = _encode_ticket(number)
    entry_field = _base36(entry_id)
    mac = _mac(key, key.id, ticket_field, entry_field, nonce)
    return f"<{_VERSION}.{key.id}.{ticket_field}.{entry_field}.{nonce}.{mac}@{domain}>"


def entry_of(thread: Iterable[Entry], ticket: str, entry: int) -> Entry:
    """The entry `entry` (a backend entry id) of `ticket`'s `thread`, for a mail about it.

    Raises:
        InvalidValueError: `entry` is not a non-negative integer.
        NotFoundError: the thread has no such entry (it does not exist, or belongs to another ticket), so
            no Message-ID is signed for it.
    """
    if isinstance(entry, bool) or not isinstance(entry, int) or entry < 0:
        raise InvalidValueError(f"entry must be a non-negative entry id, got {entry!r}", field="entry")
    for item in thread:
        if item.id == entry:
            return item
    raise NotFoundError(f"ticket {ticket!r} has no entry {entry}", field="entry")


def verify_message_id(message_id: str, keys: Keys) -> TokenInfo | None:
    """What a Message-ID of ours says, or `None` when it is not one (or not validly signed).

    Accepts the id with or without angle brackets. Never raises for any input string; a malformed,
    foreign, tampered or unknown-key id gives `None`. `keys` may be passed by keyword.
    """
    candidate: object = message_id
    if not isinstance(candidate, str):
        return None
    left, at, _domain = normalize_message_id(candidate).rpartition("@")
    if not at:
        return None
    parts = left.split(".")
    if len(parts) != 6 or parts[0] != _VERSION:
        return None
    _, key_id, ticket_field, entry_field, nonce, mac = parts
    key = next((k for k in signing_keys(keys) if k.id == key_id), None)
    if key is None or _B36.fullmatch(entry_field) is None or _SAFE.fullmatch(nonce) is None:
        return None
    expected = _mac(key, key_id, ticket_field, entry_field, nonce) if ticket_field.isascii() else ""
    if not hmac.compare_digest(expected.encode("ascii"), mac.encode("utf-8", "replace")):
        return None
    if ticket_field.startswith("~"):
        try:
            number = _unb64(ticket_field[1:]).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
    else:
        number = ticket_field
    return TokenInfo(ticket=number, entry=int(entry_field, 36), key_id=key_id, nonce=nonce)


def find_token(message_ids: Iterable[str], keys: Keys) -> TokenInfo | None:
    """The first id in `message_ids` that is a valid token of ours (pass them newest first)."""
    normalized = signing_keys(keys)
    for message_id in message_ids:
        info = verify_message_id(message_id, normalized)
        if info is not None:
            return info
    return None
