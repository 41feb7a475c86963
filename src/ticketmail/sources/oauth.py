"""OAuth2 for mailboxes: the SASL XOAUTH2 string and the token-provider contract.

Why a provider callable and not a token: access tokens from Microsoft 365 or Google live about an hour, so a
long-running poller must ask for a fresh one at every login. ticketmail does not implement OAuth flows; the
application plugs its own (MSAL, google-auth) as a zero-argument callable returning a current access token
(:data:`~ticketmail.sources.config.TokenProvider`), which the IMAP and POP3 adapters call at each login.

The XOAUTH2 initial client response (Google's and Microsoft's documented SASL mechanism, the pre-standard
form of OAUTHBEARER, RFC 7628) is::

    "user=" {User} "^Aauth=Bearer " {Access Token} "^A^A"

where ``^A`` is the byte 0x01. On failure the server sends a base64 JSON error as a continuation and expects
an empty response before it answers ``NO``; :func:`xoauth2_responder` does exactly that.

Examples of providers (see ``docs/sources.md``)::

    # Microsoft 365 (client credentials; the app needs IMAP.AccessAsApp / POP.AccessAsApp)
    import msal
    app = msal.ConfidentialClientApplication(CLIENT_ID, authority=f"https://login.microsoftonline.com/{TENANT}",
                                             client_credential=SECRET)
    def m365_token() -> str:
        result = app.acquire_token_for_client(scopes=["https://outlook.office365.com/.default"])
        return result["access_token"]

    # Google (a service account with domain-wide delegation, scope https://mail.google.com/)
    from google.oauth2 import service_account
    from google.auth.transport.requests import Request
    creds = service_account.Credentials.from_service_account_file(
        "sa.json", scopes=["https://mail.google.com/"]).with_subject("support@example.com")
    def google_token() -> str:
        if not creds.valid:
            creds.refresh(Request())
        return creds.token
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from ticketmail.sources.config import Secret, TokenProvider

__all__ = ["TokenProvider", "static_token", "xoauth2_base64", "xoauth2_responder", "xoauth2_string"]


def xoauth2_string(user: str, token: str | Secret) -> bytes:
    """The raw (not base64) XOAUTH2 initial client response for ``user`` and ``token``."""
    value = token.reveal() if isinstance(token, Secret) else token
    return f"user={user}\x01auth=Bearer {value}\x01\x01".encode()


def xoauth2_responder(user: str, token: str | Secret) -> Callable[[bytes], bytes]:
    """An ``imaplib.IMAP4.authenticate`` callback: the XOAUTH2 string first, then empty responses.

    The empty second response acknowledges the server's JSON error challenge, so a rejected token ends
    in a clean ``NO`` instead of a protocol loop.
    """
    calls = 0

    def respond(challenge: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return xoauth2_string(user, token) if calls == 1 else b""

    return respond


def xoauth2_base64(user: str, token: str | Secret) -> str:
    """The XOAUTH2 initial response, base64 encoded (as POP3 ``AUTH XOAUTH2 <b64>`` sends it)."""
    return base64.b64encode(xoauth2_string(user, token)).decode("ascii")


def static_token(token: str) -> TokenProvider:
    """A provider that always returns ``token`` (tests, or tokens refreshed by an outside process)."""

    def provider() -> str:
        return token

    return provider
