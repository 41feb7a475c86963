"""`MailboxConfig` and `SourcesConfig`: the values; checks across fields live in `_config_checks`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ticketmail._validators import Validator, fail, one_of, optional, positive
from ticketmail.errors import ConfigError, OAuthError, SourceError
from ticketmail.model import MailboxContext
from ticketmail.sources._config_checks import check_mailbox
from ticketmail.sources._config_secrets import Secret

__all__ = [
    "DEFAULT_PORTS",
    "DELIVERED_PROTOCOLS",
    "MailboxConfig",
    "Protocol_",
    "Security",
    "SourcesConfig",
    "TokenProvider",
]

Protocol_ = Literal["imap", "pop3", "maildir", "mbox", "pipe", "lmtp", "graph"]
Security = Literal["none", "ssl", "starttls"]
TokenProvider = Callable[[], str]
"""Returns a current OAuth2 access token (called at every login; cache and refresh inside it)."""

DEFAULT_PORTS: Mapping[tuple[str, str], int] = {
    ("imap", "none"): 143,
    ("imap", "starttls"): 143,
    ("imap", "ssl"): 993,
    ("pop3", "none"): 110,
    ("pop3", "starttls"): 110,
    ("pop3", "ssl"): 995,
}
"""Well-known ports (RFC 9051 section 2.1 / RFC 8314 section 7 for IMAP, RFC 1939 / RFC 8314 for POP3)."""

_PROTOCOLS = ("imap", "pop3", "maildir", "mbox", "pipe", "lmtp", "graph")
DELIVERED_PROTOCOLS = ("pipe", "lmtp")
"""Protocols of mailboxes the mail server delivers to (`ticketmail pipe`, `ticketmail receive`): never polled."""
_SECURITIES = ("none", "ssl", "starttls")
_OVERSIZE = ("skip", "headers")
_FETCH = ("auto", "unseen", "all")
_AUTH = ("password", "oauth2")
_OAUTH_PROVIDERS = ("microsoft", "google", "generic")
_OAUTH_GRANTS = ("auto", "refresh_token", "client_credentials", "service_account")


# --- converters and validators (messages name the field, the expectation and the actual value) ---------


def _to_secret(value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


def _port(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
        raise fail("", attribute, "an integer 1-65535", value)


def _after(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not (
        value in ("delete", "seen") or (value.startswith("move:") and value[5:].strip())
    ):
        raise fail("", attribute, "delete, seen or move:FOLDER", value)


def _nonempty_str(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise fail("", attribute, "a non-empty string", value)


def _str_tuple(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


_POSITIVE: Validator = positive(integer=False)
_POSITIVE_INT: Validator = positive(integer=True)


@attrs.frozen
class MailboxConfig:
    r"""Everything needed to fetch one mailbox, and the defaults the rules layer applies to its mail.

    Construct directly from Python (apps keeping config in their own database) or through
    `mailbox_from_dict()` / `load_config()`. Every attribute is documented in `docs/sources.md`.

    Attributes:
        name: Unique mailbox name (provenance, locks, health, duplicate scope).
        protocol: `imap`, `pop3`, `maildir`, `mbox`; `pipe` for a mailbox the MTA delivers to
            `ticketmail pipe --mailbox NAME`, or `lmtp` (delivered by the mail server to
            `ticketmail receive`): nothing to fetch for those two, only `address`/`addresses` and the
            defaults apply.
        address: The desk's address at this mailbox (mail *from* it is a loop); `addresses` adds more.
        host: Server name or IP (remote protocols).
        port: Server port; `None` picks the default for protocol and security (see `effective_port`).
        security: `ssl` (implicit TLS, RFC 8314), `starttls` or `none` (plaintext; loopback/tests only).
        ca_file: PEM bundle to verify the server certificate against, instead of the system store.
        verify: Verify the server certificate and host name. Turning it off must be explicit.
        username: Login name (defaults to `address` when empty).
        auth: `password` or `oauth2` (SASL XOAUTH2 with `token_provider`).
        password: The password (a `Secret`); or use `password_env` / `password_file`.
        password_env: Name of an environment variable holding the password, read at login.
        password_file: Path of a file holding the password (trailing newline stripped), read at login.
        token_provider: OAuth2 access-token callable (`auth = "oauth2"`); see `ticketmail.sources.oauth`.
        path: Directory (Maildir) or file (mbox) for local protocols.
        folder: IMAP folder to fetch from.
        after: Post-commit action: `delete`, `seen` (keep, flag `\Seen`) or `move:FOLDER`.
        fetch: `unseen` (only unseen messages), `all` (everything not yet processed) or `auto`
            (`unseen` when `after = "seen"`, else `all`).
        max_per_run: Per-run message cap (a huge backlog cannot starve other mailboxes).
        batch_size: Messages the poller commits together in one unit of work (group commit); 1 commits each
            message on its own. Each message stays all-or-nothing and is acknowledged only after its group
            committed.
        max_message_size: Messages larger than this (bytes) are never downloaded whole; `None`: no limit.
        oversize: `skip` (leave on the server, report) or `headers` (ingest the headers with a note).
        poll_interval: Seconds between polls (long-running mode).
        idle: Use IMAP IDLE for real-time delivery (polling fallback when the server lacks IDLE).
        enabled: Disabled mailboxes are loaded but never polled.
        max_retries: Failed processing attempts before quarantine.
        quarantine_folder: IMAP folder a message moves to after `max_retries` failures.
        timeout: Network timeout in seconds for connect and every command.
        department: Default department for tickets from this mailbox.
        category: Default category.
        priority: Default priority id.
        provider: Built-in OAuth2 token lifecycle (`microsoft`, `google` or `generic`); see
            `docs/guides/oauth2.md`. Used when `auth = "oauth2"` (or `protocol = "graph"`) and no
            `token_provider` is given.
        client_id: The OAuth2 application (client) id.
        client_secret: The client secret (a `Secret`); or `client_secret_env` / `client_secret_file`.
        client_secret_env: Environment variable holding the client secret.
        client_secret_file: File holding the client secret.
        tenant: Microsoft Entra tenant id or domain (`organizations` when unset).
        scopes: OAuth2 scopes; the default depends on provider, protocol and grant.
        token_url: Token endpoint override (sovereign clouds, tests).
        authorization_url: Authorization endpoint override.
        device_authorization_url: Device-authorization endpoint override (RFC 8628).
        grant: `auto` (a stored refresh token, else client credentials or the service account),
            `refresh_token`, `client_credentials` or `service_account` (Google domain-wide delegation).
        service_account_file: Google service-account JSON key file (`grant = "service_account"`).
        token_store: File of the stored refresh token and cached access token (default
            `<state dir>/oauth/<name>.json`).
        mailbox: Microsoft Graph: the user or shared mailbox (`support@contoso.com`); defaults to `address`.
        graph_url: Microsoft Graph base URL (default `https://graph.microsoft.com/v1.0`).
    """

    name: str = attrs.field(validator=_nonempty_str)
    protocol: Protocol_ = attrs.field(default="imap", validator=one_of(_PROTOCOLS))
    address: str | None = None
    addresses: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    host: str | None = None
    port: int | None = attrs.field(default=None, validator=_port)
    security: Security = attrs.field(default="ssl", validator=one_of(_SECURITIES))
    ca_file: str | None = None
    verify: bool = True
    username: str | None = None
    auth: Literal["password", "oauth2"] = attrs.field(default="password", validator=one_of(_AUTH))
    password: Secret | None = attrs.field(default=None, converter=_to_secret)
    password_env: str | None = None
    password_file: str | None = None
    token_provider: TokenProvider | None = attrs.field(default=None, eq=False, repr=False)
    path: str | None = None
    folder: str = attrs.field(default="INBOX", validator=_nonempty_str)
    after: str = attrs.field(default="seen", validator=_after)
    fetch: Literal["auto", "unseen", "all"] = attrs.field(default="auto", validator=one_of(_FETCH))
    max_per_run: int = attrs.field(default=200, validator=_POSITIVE_INT)
    batch_size: int = attrs.field(default=50, validator=_POSITIVE_INT)
    max_message_size: int | None = attrs.field(default=25 * 1024 * 1024, validator=optional(_POSITIVE_INT))
    oversize: Literal["skip", "headers"] = attrs.field(default="skip", validator=one_of(_OVERSIZE))
    poll_interval: float = attrs.field(default=300.0, validator=_POSITIVE)
    idle: bool = False
    enabled: bool = True
    max_retries: int = attrs.field(default=5, validator=_POSITIVE_INT)
    quarantine_folder: str = attrs.field(default="Quarantine", validator=_nonempty_str)
    timeout: float = attrs.field(default=30.0, validator=_POSITIVE)
    department: str | None = None
    category: str | None = None
    priority: int | None = None
    provider: Literal["microsoft", "google", "generic"] | None = attrs.field(
        default=None, validator=optional(one_of(_OAUTH_PROVIDERS))
    )
    client_id: str | None = None
    client_secret: Secret | None = attrs.field(default=None, converter=_to_secret)
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    tenant: str | None = None
    scopes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    token_url: str | None = None
    authorization_url: str | None = None
    device_authorization_url: str | None = None
    grant: Literal["auto", "refresh_token", "client_credentials", "service_account"] = attrs.field(
        default="auto", validator=one_of(_OAUTH_GRANTS)
    )
    service_account_file: str | None = None
    token_store: str | None = None
    mailbox: str | None = None
    graph_url: str | None = None

    def __attrs_post_init__(self) -> None:
        check_mailbox(self)

    # --- derived values -------------------------------------------------------------------------------

    @property
    def effective_port(self) -> int:
        """`port`, or the well-known default for protocol and security."""
        if self.port is not None:
            return self.port
        return DEFAULT_PORTS.get((self.protocol, self.security), 0)

    @property
    def login(self) -> str:
        """The login name: `username`, or `address` when no username is set."""
        return self.username or self.address or ""

    @property
    def after_action(self) -> Literal["delete", "seen", "move"]:
        """`delete`, `seen` or `move` (see `move_folder`)."""
        if self.after.startswith("move:"):
            return "move"
        return "delete" if self.after == "delete" else "seen"

    @property
    def move_folder(self) -> str | None:
        """Target folder of `after = "move:FOLDER"`, else `None`."""
        return self.after[5:].strip() if self.after.startswith("move:") else None

    @property
    def fetch_mode(self) -> Literal["unseen", "all"]:
        """`fetch` with `auto` resolved."""
        if self.fetch == "auto":
            return "unseen" if self.after_action == "seen" else "all"
        return self.fetch

    def secret(self) -> Secret:
        """The password, read now from `password`, `password_env` or `password_file`.

        Raises:
            ConfigError: The variable is unset or the file unreadable (the message names it, never the value).
        """
        if self.password is not None:
            return self.password
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise ConfigError(
                    f"mailbox {self.name!r}: environment variable {self.password_env} is not set or empty",
                    field="password_env",
                )
            return Secret(value)
        if self.password_file:
            try:
                text = Path(self.password_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"mailbox {self.name!r}: cannot read password_file {self.password_file}: {type(exc).__name__}",
                    field="password_file",
                ) from exc
            value = text.rstrip("\r\n")
            if not value:
                raise ConfigError(f"mailbox {self.name!r}: password_file {self.password_file} is empty")
            return Secret(value)
        raise ConfigError(f"mailbox {self.name!r}: no password configured", field="password")

    def access_token(self) -> Secret:
        """A current OAuth2 access token from `token_provider`, wrapped as a `Secret`.

        With `provider` set and no `token_provider`, the built-in lifecycle (`ticketmail.oauth`) gets,
        caches and refreshes it.
        """
        if self.token_provider is None and self.provider is not None:
            from ticketmail.oauth import tokens_for

            return tokens_for(self).access_token()
        if self.token_provider is None:
            raise ConfigError(f"mailbox {self.name!r}: no token_provider configured", field="token_provider")
        try:
            token = self.token_provider()
        except (OAuthError, ConfigError):  # the built-in lifecycle already says what failed and what to do
            raise
        except Exception as exc:  # the app's provider (MSAL, google-auth): anything may go wrong in there
            raise SourceError(
                f"mailbox {self.name!r}: the OAuth2 token provider failed: {type(exc).__name__}; check the app "
                "registration, its secret and the granted scopes",
                stage="auth",
                mailbox=self.name,
            ) from exc
        if not isinstance(token, str) or not token:
            raise ConfigError(
                f"mailbox {self.name!r}: token_provider returned {type(token).__name__}, expected a non-empty str",
                field="token_provider",
            )
        return Secret(token)

    def token_refused(self) -> None:
        """Tell the built-in OAuth2 lifecycle that the server refused the last access token.

        The next `access_token()` then asks the token endpoint instead of reusing the cached one
        (a token revoked before its expiry). Does nothing for other token sources.
        """
        if self.provider is None:
            return
        from ticketmail.oauth import manager_of

        manager = manager_of(self)
        if manager is not None:
            manager.invalidate()

    def context(self) -> MailboxContext:
        """The `MailboxContext` the pipeline receives for this mailbox's mail."""
        addresses = tuple(dict.fromkeys(a for a in (self.address, *self.addresses) if a))
        return MailboxContext(
            name=self.name,
            addresses=addresses,
            department=self.department,
            category=self.category,
            priority=self.priority,
        )


@attrs.frozen
class SourcesConfig:
    """A loaded configuration file: storage settings and the mailboxes, in file order.

    Attributes:
        path: The file it came from (`None` for dicts).
        sqlite: `[storage] sqlite` path, resolved relative to the file.
        storage: The whole `[storage]` table (other keys for other backends).
        mailboxes: The `[[mailboxes]]` entries.
        raw: The whole parsed document, for other layers (rules, limits) to read their own tables; secret
            values are wrapped in `Secret` (see `mask_secrets()`).
    """

    path: str | None
    sqlite: str | None
    storage: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    mailboxes: tuple[MailboxConfig, ...] = ()
    raw: Mapping[str, Any] = attrs.field(factory=dict, hash=False, repr=False)

    def mailbox(self, name: str) -> MailboxConfig:
        """The mailbox called `name`; raises ConfigError when there is none."""
        for mb in self.mailboxes:
            if mb.name == name:
                return mb
        raise ConfigError(f"no mailbox named {name!r} (have: {', '.join(m.name for m in self.mailboxes)})")
