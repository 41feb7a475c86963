"""OAuth2 for mailboxes: the SASL XOAUTH2 string and the token-provider contract.

The IMAP and POP3 adapters ask the mailbox configuration for a current access token at every login
(`MailboxConfig.access_token`). It comes from one of two places:

* the **built-in lifecycle** (`ticketmail.oauth`): `provider = "microsoft" | "google" | "generic"`
  with `client_id` and friends; ticketmail gets, caches, refreshes and persists the tokens itself
  (`ticketmail oauth login` obtains the first refresh token of a delegated mailbox); see
  `docs/guides/oauth2.md`;
* a **token provider**: a zero-argument callable returning a current access token
  (`ticketmail.sources.config.TokenProvider`; also `token_env` / `token_file`), for applications that
  obtain tokens their own way.

The XOAUTH2 initial client response (Google's and Microsoft's documented SASL mechanism, the pre-standard
form of OAUTHBEARER, RFC 7628) is::

    "user=" {User} "^Aauth=Bearer " {Access Token} "^A^A"

where `^A` is the byte 0x01. On failure the server sends a base64 JSON error as a continuation and expects
an empty response before it answers `NO`; `xoauth2_responder` does exactly that.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from ticketmail.sources.config import Secret, TokenProvider

__all__ = ["TokenProvider", "static_token", "xoauth2_base64", "xoauth2_responder", "xoauth2_string"]


def xoauth2_string(user: str, token: str | Secret) -> bytes:
    """The raw (not base64) XOAUTH2 initial client response for `user` and `token`."""
    value = token.reveal() if isinstance(token, Secret) else token
    return f"user={user}\x01auth=Bearer {value}\x01\x01".encode()


def xoauth2_responder(user: str, token: str | Secret) -> Callable[[bytes], bytes]:
    """An `imaplib.IMAP4.authenticate` callback: the XOAUTH2 string first, then empty responses.

    The empty second response acknowledges the server's JSON error challenge, so a rejected token ends
    in a clean `NO` instead of a protocol loop.
    """
    calls = 0

    def respond(challenge: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return xoauth2_string(user, token) if calls == 1 else b""

    return respond


def xoauth2_base64(user: str, token: str | Secret) -> str:
    """The XOAUTH2 initial response, base64 encoded (as POP3 `AUTH XOAUTH2 <b64>` sends it)."""
    return base64.b64encode(xoauth2_string(user, token)).decode("ascii")


def static_token(token: str) -> TokenProvider:
    """A provider that always returns `token` (tests, or tokens refreshed by an outside process)."""

    def provider() -> str:
        return token

    return provider
