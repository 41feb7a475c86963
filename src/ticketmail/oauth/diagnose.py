"""The `oauth` stage of `ticketmail check`: get a token before the mailbox server is even contacted.

Why a stage of its own: "authentication failed" at the IMAP server hides six different problems with six
different fixes. Getting the token first separates them:

* `unreachable`: the token endpoint does not answer (network, proxy, `token_url`);
* `invalid_client`: the client id is unknown or the secret wrong or expired (make a new secret);
* `invalid_grant`: the refresh token was revoked or expired (run `ticketmail oauth login` again);
* `consent`: a permission is missing or an administrator has not consented;
* `no_token`: nothing stored yet (run `ticketmail oauth login` once);
* `store`: the token file in the state directory is unusable.

When the token is fine, the check goes on; a server that still refuses it is the `auth` stage (the
mailbox's XOAUTH2 or Graph answer: wrong user, IMAP/POP disabled for the mailbox, app not allowed on it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ticketmail.oauth import bind_state_dir, manager_of, uses_builtin_oauth

if TYPE_CHECKING:
    from ticketmail.sources.config import MailboxConfig

__all__ = ["check_oauth", "refusal_hint"]


def check_oauth(config: MailboxConfig, state_dir: str | os.PathLike[str] | None = None) -> MailboxConfig:
    """Get a new access token for `config` now; return the configuration bound to `state_dir`.

    Raises:
        OAuthError: The token could not be obtained (`stage` is `oauth`; `reason` says why).
        ConfigError: The client secret's variable or file is missing.
    """
    if not uses_builtin_oauth(config):
        return config
    bound = bind_state_dir(config, state_dir)
    manager = manager_of(bound)
    if manager is not None:
        manager.renew()  # ask the endpoint now: proves the secret and the refresh token, not a cache
    return bound


def refusal_hint(config: MailboxConfig) -> str:
    """What to look at when the mail server refuses a token the token endpoint issued (stage `auth`)."""
    if config.provider == "microsoft":
        if config.protocol == "graph":
            return (
                "; the token was issued but Graph refused it: check tenant and scopes "
                "(https://graph.microsoft.com/.default for app-only)"
            )
        kind = "IMAP" if config.protocol == "imap" else "POP"
        return (
            f"; the token was issued but Exchange refused it: check that {kind} is enabled for the mailbox "
            f"(Set-CASMailbox), that username is the mailbox address, and for app-only access that the app has "
            f"{kind}.AccessAsApp with admin consent and a service principal with FullAccess "
            "(New-ServicePrincipal, Add-MailboxPermission)"
        )
    if config.provider == "google":
        return (
            "; the token was issued but Gmail refused it: check that IMAP/POP is enabled, that username is the "
            "mailbox address, and that the scope is https://mail.google.com/ (domain-wide delegation: the "
            "client id is authorised for it in the Admin console)"
        )
    return "; the token was issued but the mail server refused it: check username and the scopes it requires"
