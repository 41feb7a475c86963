"""Checks of a `MailboxConfig` across fields, run in order when it is built (the first failure is reported).

Each check raises `ConfigError` whose message starts with the key at fault (`host: required for protocol
'imap'`); `mailbox_from_dict` puts the file and the `[[mailboxes]]` index in front of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ticketmail.errors import ConfigError

if TYPE_CHECKING:
    from ticketmail.sources._mailbox_config import MailboxConfig

__all__ = ["check_mailbox"]

_REMOTE = ("imap", "pop3")
_URL_KEYS = ("token_url", "authorization_url", "device_authorization_url")


def _bad(key: str, text: str) -> ConfigError:
    return ConfigError(f"{key}: {text}", field=key)


def _password_sources(config: MailboxConfig) -> list[str]:
    given = {"password": config.password, "password_env": config.password_env, "password_file": config.password_file}
    return [name for name, value in given.items() if value]


def _check_location(config: MailboxConfig) -> None:
    """What each protocol needs to find its mail: a host, a path, a Graph mailbox, an address."""
    if config.protocol in _REMOTE and not config.host:
        raise _bad("host", f"required for protocol {config.protocol!r}")
    if config.protocol == "graph":
        _check_graph(config)
    elif config.protocol in ("maildir", "mbox") and not config.path:
        raise _bad("path", f"required for protocol {config.protocol!r}")
    if config.protocol == "lmtp" and not (config.address or config.addresses):
        raise _bad("address", "required for protocol 'lmtp' (the desk address mail is delivered to)")


def _check_pop3(config: MailboxConfig) -> None:
    if config.protocol != "pop3":
        return
    if config.after.startswith("move:"):
        raise _bad("after", f"POP3 has no folders; expected delete or seen (keep), got {config.after!r}")
    if config.folder.upper() != "INBOX":
        raise _bad("folder", f"POP3 only serves the INBOX, got {config.folder!r} (use IMAP for other folders)")


def _check_verify(config: MailboxConfig) -> None:
    if config.protocol in _REMOTE and not config.verify and config.ca_file:
        raise _bad("verify", "ca_file is set but verify is false; choose one")


def _check_credentials(config: MailboxConfig) -> None:
    """One password source for `auth = "password"`, a token source (and no password) for `oauth2`."""
    sources = _password_sources(config)
    if len(sources) > 1:
        raise _bad("password", f"give only one of password, password_env, password_file (got {sources})")
    if config.auth == "oauth2":
        if config.token_provider is None and config.provider is None:
            raise _bad("token_provider", "required when auth is 'oauth2' (or set provider)")
        if sources:
            raise _bad("auth", "'oauth2' takes a token_provider, not a password")
    elif config.protocol in _REMOTE and not sources:
        raise _bad("password", "required (password, password_env or password_file) for auth 'password'")


def _check_provider(config: MailboxConfig) -> None:
    if config.provider is not None:
        _check_oauth(config)


def _check_username(config: MailboxConfig) -> None:
    if config.protocol in _REMOTE and not (config.username or config.address):
        raise _bad("username", "required (or set address)")


def _check_graph(config: MailboxConfig) -> None:
    """Validation of `protocol = "graph"` (token only: Graph takes no password)."""
    if not (config.mailbox or config.address):
        raise _bad("mailbox", "required for protocol 'graph' (the user or shared mailbox address)")
    if config.token_provider is None and config.provider is None:
        raise _bad("provider", "required for protocol 'graph' (microsoft or generic), or a token_provider")
    if _password_sources(config):
        raise _bad("password", "protocol 'graph' signs in with OAuth2 only; remove the password")
    if config.graph_url is not None and not config.graph_url.startswith(("https://", "http://")):
        raise _bad("graph_url", f"expected an http(s) URL, got {config.graph_url!r}")


def _check_oauth(config: MailboxConfig) -> None:
    """Validation of the built-in OAuth2 lifecycle settings (`provider` is set)."""
    if config.auth != "oauth2" and config.protocol != "graph":
        raise _bad("provider", "set auth = 'oauth2' to use the built-in OAuth2 token lifecycle")
    given = {
        "client_secret": config.client_secret,
        "client_secret_env": config.client_secret_env,
        "client_secret_file": config.client_secret_file,
    }
    secrets = [name for name, value in given.items() if value]
    if len(secrets) > 1:
        raise _bad("client_secret", f"give only one of client_secret, client_secret_env or _file {secrets}")
    _check_grant(config, has_secret=bool(secrets))
    if config.provider == "generic" and not config.token_url:
        raise _bad("token_url", "required for provider 'generic'")
    urls = {"token_url": config.token_url, "authorization_url": config.authorization_url}
    urls["device_authorization_url"] = config.device_authorization_url
    for key in _URL_KEYS:
        value = urls[key]
        if value is not None and not value.startswith(("https://", "http://")):
            raise _bad(key, f"expected an http(s) URL, got {value!r}")


def _check_grant(config: MailboxConfig, *, has_secret: bool) -> None:
    if config.grant == "service_account" or config.service_account_file:
        if config.provider != "google" and not config.token_url:
            raise _bad("service_account_file", "domain-wide delegation is a Google feature (provider = 'google')")
        if not config.service_account_file:
            raise _bad("service_account_file", "required for grant 'service_account'")
    elif not config.client_id:
        raise _bad("client_id", f"required for provider {config.provider!r}")
    if config.grant == "client_credentials" and not has_secret:
        raise _bad("client_secret_env", "grant 'client_credentials' needs a client secret")


_CHECKS: tuple[Callable[[MailboxConfig], None], ...] = (
    _check_location,
    _check_pop3,
    _check_verify,
    _check_credentials,
    _check_provider,
    _check_username,
)


def check_mailbox(config: MailboxConfig) -> None:
    """Run every cross-field check in order; raises `ConfigError` for the first that fails."""
    for check in _CHECKS:
        check(config)
