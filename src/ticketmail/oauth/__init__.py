"""Built-in OAuth2 for mailboxes: the token lifecycle, the first login, and diagnostics.

A mailbox opts in with `auth = "oauth2"` (implied for `protocol = "graph"`) and a `provider`::

    [[mailboxes]]
    name = "support"
    protocol = "imap"
    host = "outlook.office365.com"
    username = "support@contoso.com"
    auth = "oauth2"
    provider = "microsoft"
    tenant = "contoso.onmicrosoft.com"
    client_id = "00000000-0000-0000-0000-000000000000"
    client_secret_env = "TM_CLIENT_SECRET"      # app-only (client credentials); omit for delegated + login

* `ticketmail.oauth.tokens`: `TokenManager` (cache, refresh, rotation, locking);
* `ticketmail.oauth.store`: the 0600 token file in the state directory;
* `ticketmail.oauth.login`: device-code and authorization-code + PKCE logins (`ticketmail oauth login`);
* `ticketmail.oauth.settings`: provider endpoints and default scopes.

Everything that talks HTTP needs the `oauth` extra (Authlib, httpx): `pip install 'ticketmail[oauth]'`;
it is imported only when a token is first needed. The SASL `XOAUTH2` helpers stay in
`ticketmail.sources.oauth`.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import attrs

from ticketmail.oauth.settings import OAuthSettings, default_scopes, settings_for
from ticketmail.oauth.store import StoredTokens, TokenStore
from ticketmail.oauth.tokens import TokenManager, describe_token_error

if TYPE_CHECKING:
    from ticketmail.sources.config import MailboxConfig

__all__ = [
    "OAuthSettings",
    "StoredTokens",
    "TokenManager",
    "TokenStore",
    "bind_state_dir",
    "default_scopes",
    "describe_token_error",
    "settings_for",
    "tokens_for",
    "uses_builtin_oauth",
]

_MANAGERS: dict[tuple[Any, ...], TokenManager] = {}
_MANAGERS_GUARD = threading.Lock()


def uses_builtin_oauth(config: MailboxConfig) -> bool:
    """Whether `config` gets its tokens from the built-in lifecycle (`provider` set, no `token_provider`)."""
    return config.provider is not None and config.token_provider is None


def tokens_for(config: MailboxConfig, state_dir: str | os.PathLike[str] | None = None) -> TokenManager:
    """The process-wide `TokenManager` of a mailbox (one per mailbox, client and token file).

    Sharing it means every session of the mailbox in this process reuses the cached access token.
    """
    settings = settings_for(config, state_dir=state_dir)
    key = (settings.mailbox, settings.client_id, settings.token_url, str(settings.token_store), settings.scopes)
    with _MANAGERS_GUARD:
        manager = _MANAGERS.get(key)
        if manager is None or manager.settings != settings:
            manager = _MANAGERS[key] = TokenManager(settings)
        return manager


def bind_state_dir(config: MailboxConfig, state_dir: str | os.PathLike[str] | None) -> MailboxConfig:
    """`config` with its token provider bound to the token file under `state_dir` (when it uses one).

    The poller and `ticketmail check` call this with their state directory, so a refresh token stored
    by `ticketmail oauth login` is found at `<state_dir>/oauth/<name>.json`. Other configurations are
    returned unchanged.
    """
    if not uses_builtin_oauth(config) or state_dir is None:
        return config
    return attrs.evolve(config, token_provider=_BoundProvider(tokens_for(config, state_dir)))


class _BoundProvider:
    """A `token_provider` backed by a `TokenManager` (kept, so sources can invalidate a refused token)."""

    __slots__ = ("manager",)

    def __init__(self, manager: TokenManager) -> None:
        self.manager = manager

    def __call__(self) -> str:
        return self.manager.access_token().reveal()


def manager_of(config: MailboxConfig) -> TokenManager | None:
    """The `TokenManager` behind `config`'s tokens, if the built-in lifecycle provides them."""
    provider = config.token_provider
    if isinstance(provider, _BoundProvider):
        return provider.manager
    if uses_builtin_oauth(config):
        return tokens_for(config)
    return None
