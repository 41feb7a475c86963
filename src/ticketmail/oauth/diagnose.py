"""The ``oauth`` stage of ``ticketmail check``: get a token before the mailbox server is even contacted.

Why a stage of its own: "authentication failed" at the IMAP server hides six different problems with six
different fixes. Getting the token first separates them:

* ``unreachable``: the token endpoint does not answer (network, proxy, ``token_url``);
* ``invalid_client``: the client id is unknown or the secret wrong or expired (make a new secret);
* ``invalid_grant``: the refresh token was revoked or expired (run ``ticketmail oauth login`` again);
* ``consent``: a permission is missing or an administrator has not consented;
* ``no_token``: nothing stored yet (run ``ticketmail oauth login`` once);
* ``store``: the token file in the state directory is unusable.

When the token is fine, the check goes on; a server that still refuses it is the ``auth`` stage (the
mailbox's XOAUTH2 or Graph answer: wrong user, IMAP/POP disabled for the mailbox, app not allowed on it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ticketmail.oauth import bind_state_dir, manager_of, uses_builtin_oauth

if TYPE_CHECKING:
    from ticketmail.sources.config import MailboxConfig

__all__ = ["check_oauth"]


def check_oauth(config: MailboxConfig, state_dir: str | os.PathLike[str] | None = None) -> MailboxConfig:
    """Get a new access token for ``config`` now; return the configuration bound to ``state_dir``.

    Raises:
        OAuthError: The token could not be obtained (``stage`` is ``oauth``; ``reason`` says why).
        ConfigError: The client secret's variable or file is missing.
    """
    if not uses_builtin_oauth(config):
        return config
    bound = bind_state_dir(config, state_dir)
    manager = manager_of(bound)
    if manager is not None:
        manager.invalidate()  # ask the endpoint now: proves the secret and the refresh token, not a cache
        manager.access_token()
    return bound
