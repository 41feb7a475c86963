"""Mailbox configuration: one frozen attrs value per mailbox, loadable from TOML or a dict.

Why a dedicated module: the poller, the CLI, `check` and every adapter read the same settings, and the
operator's mistakes must surface once, at load time, as a `ConfigError` that names
the file, the `[[mailboxes]]` index and the key (``tickets.toml: mailboxes[2].port: expected an integer
1-65535, got 'x'``), never as a socket error at 3 a.m.

Secrets (passwords, OAuth2 tokens) are held in `Secret`, whose `repr`/`str` are masked, so a
config object can be logged, printed or put into an exception message without leaking them.

The TOML file shape (every key is documented in `docs/sources.md`)::

    [storage]
    sqlite = "tickets.sqlite3"

    [[mailboxes]]
    name = "support"
    protocol = "imap"          # imap | pop3 | maildir | mbox
    host = "127.0.0.1"
    port = 10993               # default by protocol and security: 143/993 (IMAP), 110/995 (POP3)
    security = "ssl"           # ssl | starttls | none
    ca_file = "cert.pem"       # optional; relative paths are relative to the TOML file
    username = "alice"
    password = "secret"        # or password_env = "VAR" / password_file = "path"
    folder = "INBOX"
    after = "delete"           # delete | seen | move:Processed
"""

from __future__ import annotations

import copy
import difflib
import hmac
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ticketmail.errors import ConfigError, OAuthError, SourceError
from ticketmail.model import MailboxContext

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "DEFAULT_PORTS",
    "DELIVERED_PROTOCOLS",
    "MailboxConfig",
    "Secret",
    "SourcesConfig",
    "TokenProvider",
    "load_config",
    "mailbox_from_dict",
    "mask_secrets",
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


class Secret:
    """A secret string that never shows itself in `repr`, `str`, f-strings or `attrs.asdict`.

    Deliberately not an attrs class, so `attrs.asdict(config)` keeps the wrapper (masked) instead of
    recursing into it. Use `reveal()` at the one place that needs the value (the login command).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"password: expected a string, got {type(value).__name__}")
        self._value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def reveal(self) -> str:
        """The secret value. Never log it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __bool__(self) -> bool:
        return bool(self._value)


# --- converters and validators (messages name the field, the expectation and the actual value) ---------


def _to_secret(value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name}: expected one of {', '.join(choices)}, got {value!r}")

    return check


def _positive_or_none(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"{attribute.name}: expected a positive number or nothing, got {value!r}")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{attribute.name}: expected a positive number, got {value!r}")


def _port(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
        raise ValueError(f"{attribute.name}: expected an integer 1-65535, got {value!r}")


def _after(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not (
        value in ("delete", "seen") or (value.startswith("move:") and value[5:].strip())
    ):
        raise ValueError(f"after: expected delete, seen or move:FOLDER, got {value!r}")


def _nonempty_str(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name}: expected a non-empty string, got {value!r}")


def _str_tuple(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


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
    protocol: Protocol_ = attrs.field(default="imap", validator=_one_of(_PROTOCOLS))
    address: str | None = None
    addresses: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    host: str | None = None
    port: int | None = attrs.field(default=None, validator=_port)
    security: Security = attrs.field(default="ssl", validator=_one_of(_SECURITIES))
    ca_file: str | None = None
    verify: bool = True
    username: str | None = None
    auth: Literal["password", "oauth2"] = attrs.field(default="password", validator=_one_of(_AUTH))
    password: Secret | None = attrs.field(default=None, converter=_to_secret)
    password_env: str | None = None
    password_file: str | None = None
    token_provider: TokenProvider | None = attrs.field(default=None, eq=False, repr=False)
    path: str | None = None
    folder: str = attrs.field(default="INBOX", validator=_nonempty_str)
    after: str = attrs.field(default="seen", validator=_after)
    fetch: Literal["auto", "unseen", "all"] = attrs.field(default="auto", validator=_one_of(_FETCH))
    max_per_run: int = attrs.field(default=200, validator=_positive)
    batch_size: int = attrs.field(default=50, validator=_positive)
    max_message_size: int | None = attrs.field(default=25 * 1024 * 1024, validator=_positive_or_none)
    oversize: Literal["skip", "headers"] = attrs.field(default="skip", validator=_one_of(_OVERSIZE))
    poll_interval: float = attrs.field(default=300.0, validator=_positive)
    idle: bool = False
    enabled: bool = True
    max_retries: int = attrs.field(default=5, validator=_positive)
    quarantine_folder: str = attrs.field(default="Quarantine", validator=_nonempty_str)
    timeout: float = attrs.field(default=30.0, validator=_positive)
    department: str | None = None
    category: str | None = None
    priority: int | None = None
    provider: Literal["microsoft", "google", "generic"] | None = attrs.field(
        default=None, validator=attrs.validators.optional(_one_of(_OAUTH_PROVIDERS))
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
        default="auto", validator=_one_of(_OAUTH_GRANTS)
    )
    service_account_file: str | None = None
    token_store: str | None = None
    mailbox: str | None = None
    graph_url: str | None = None

    def __attrs_post_init__(self) -> None:
        remote = self.protocol in ("imap", "pop3")
        if remote and not self.host:
            raise ValueError(f"host: required for protocol {self.protocol!r}")
        if self.protocol == "graph":
            _check_graph(self)
        elif self.protocol in ("maildir", "mbox") and not self.path:
            raise ValueError(f"path: required for protocol {self.protocol!r}")
        if self.protocol == "lmtp" and not (self.address or self.addresses):
            raise ValueError("address: required for protocol 'lmtp' (the desk address mail is delivered to)")
        if self.protocol == "pop3" and self.after.startswith("move:"):
            raise ValueError(f"after: POP3 has no folders; expected delete or seen (keep), got {self.after!r}")
        if self.protocol == "pop3" and self.folder.upper() != "INBOX":
            raise ValueError(f"folder: POP3 only serves the INBOX, got {self.folder!r} (use IMAP for other folders)")
        if remote and not self.verify and self.ca_file:
            raise ValueError("verify: ca_file is set but verify is false; choose one")
        sources = [n for n in ("password", "password_env", "password_file") if getattr(self, n)]
        if len(sources) > 1:
            raise ValueError(f"password: give only one of password, password_env, password_file (got {sources})")
        if self.auth == "oauth2":
            if self.token_provider is None and self.provider is None:
                raise ValueError("token_provider: required when auth is 'oauth2' (or set provider)")
            if sources:
                raise ValueError("auth: 'oauth2' takes a token_provider, not a password")
        elif remote and not sources:
            raise ValueError("password: required (password, password_env or password_file) for auth 'password'")
        if self.provider is not None:
            _check_oauth(self)
        if remote and not (self.username or self.address):
            raise ValueError("username: required (or set address)")

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


def _check_graph(config: MailboxConfig) -> None:
    """Validation of `protocol = "graph"` (token only: Graph takes no password)."""
    if not (config.mailbox or config.address):
        raise ValueError("mailbox: required for protocol 'graph' (the user or shared mailbox address)")
    if config.token_provider is None and config.provider is None:
        raise ValueError("provider: required for protocol 'graph' (microsoft or generic), or a token_provider")
    if config.password or config.password_env or config.password_file:
        raise ValueError("password: protocol 'graph' signs in with OAuth2 only; remove the password")
    if config.graph_url is not None and not config.graph_url.startswith(("https://", "http://")):
        raise ValueError(f"graph_url: expected an http(s) URL, got {config.graph_url!r}")


def _check_oauth(config: MailboxConfig) -> None:
    """Validation of the built-in OAuth2 lifecycle settings (`provider` is set)."""
    if config.auth != "oauth2" and config.protocol != "graph":
        raise ValueError("provider: set auth = 'oauth2' to use the built-in OAuth2 token lifecycle")
    secrets = [n for n in ("client_secret", "client_secret_env", "client_secret_file") if getattr(config, n)]
    if len(secrets) > 1:
        raise ValueError(f"client_secret: give only one of client_secret, client_secret_env or _file {secrets}")
    if config.grant == "service_account" or config.service_account_file:
        if config.provider != "google" and not config.token_url:
            raise ValueError("service_account_file: domain-wide delegation is a Google feature (provider = 'google')")
        if not config.service_account_file:
            raise ValueError("service_account_file: required for grant 'service_account'")
    elif not config.client_id:
        raise ValueError(f"client_id: required for provider {config.provider!r}")
    if config.grant == "client_credentials" and not secrets:
        raise ValueError("client_secret_env: grant 'client_credentials' needs a client secret")
    if config.provider == "generic" and not config.token_url:
        raise ValueError("token_url: required for provider 'generic'")
    for key in ("token_url", "authorization_url", "device_authorization_url"):
        value = getattr(config, key)
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"{key}: expected an http(s) URL, got {value!r}")


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


# --- loaders ------------------------------------------------------------------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "protocol": (str,),
    "address": (str,),
    "addresses": (list, str),
    "host": (str,),
    "port": (int,),
    "security": (str,),
    "ca_file": (str,),
    "verify": (bool,),
    "username": (str,),
    "auth": (str,),
    "password": (str, Secret),
    "password_env": (str,),
    "password_file": (str,),
    "token_provider": (str,),
    "token_env": (str,),
    "token_file": (str,),
    "path": (str,),
    "folder": (str,),
    "after": (str,),
    "fetch": (str,),
    "max_per_run": (int,),
    "batch_size": (int,),
    "max_message_size": (int,),
    "oversize": (str,),
    "poll_interval": (int, float),
    "idle": (bool,),
    "enabled": (bool,),
    "max_retries": (int,),
    "quarantine_folder": (str,),
    "timeout": (int, float),
    "department": (str,),
    "category": (str,),
    "priority": (int,),
    "provider": (str,),
    "client_id": (str,),
    "client_secret": (str, Secret),
    "client_secret_env": (str,),
    "client_secret_file": (str,),
    "tenant": (str,),
    "scopes": (list, str),
    "token_url": (str,),
    "authorization_url": (str,),
    "device_authorization_url": (str,),
    "grant": (str,),
    "service_account_file": (str,),
    "token_store": (str,),
    "mailbox": (str,),
    "graph_url": (str,),
}
_PATH_KEYS: tuple[str, ...] = ("ca_file", "password_file", "token_file", "path")
_PATH_KEYS += ("client_secret_file", "service_account_file", "token_store")
_SECRET_WORDS = ("password", "secret", "token")
_NOT_SECRET_SUFFIXES = ("_env", "_file", "_provider", "_url", "_endpoint")


def _is_secret_key(key: object) -> bool:
    """Whether a mailbox key holds a secret itself (`password`, `client_secret`), not where one is kept.

    `password_env`, `token_file` and the like name a variable or a file, which is not secret.
    """
    name = str(key).lower()
    return any(word in name for word in _SECRET_WORDS) and not name.endswith(_NOT_SECRET_SUFFIXES)


def _mask_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return value
    return f"{scheme}://{userinfo.split(':', 1)[0]}:********@{host}"


def _mask_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: Secret(str(item))
            if _is_secret_key(key) and item is not None and not isinstance(item, (Secret, dict, list))
            else _mask_tree(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask_tree(item) for item in value]
    return value


def mask_secrets(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a parsed configuration document with every secret value wrapped in `Secret`.

    Covers every key that names a secret in any table (`password`, `client_secret`, `*token`, not
    `password_env`/`token_file`, which only say where one is kept) and a `[storage] url` with a
    password; what is left is safe to log or keep around.
    """
    out: dict[str, Any] = _mask_tree(copy.deepcopy(dict(doc)))
    storage = out.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("url"), str):
        url = storage["url"]
        if _mask_url(url) != url:
            storage["url"] = Secret(url)
    return out


def _import_provider(spec: str) -> TokenProvider:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"token_provider: expected 'package.module:callable', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"token_provider: cannot import {spec!r} ({type(exc).__name__}: {exc})") from exc
    if not callable(obj):
        raise ValueError(f"token_provider: {spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _env_token(var: str) -> TokenProvider:
    def provider() -> str:
        return os.environ.get(var, "")

    return provider


def _file_token(path: str) -> TokenProvider:
    def provider() -> str:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    return provider


def mailbox_from_dict(
    data: Mapping[str, Any], *, base_dir: str | Path | None = None, where: str = "mailbox"
) -> MailboxConfig:
    """Build a `MailboxConfig` from a plain mapping (one `[[mailboxes]]` table).

    Besides the attribute names, accepts `token_provider = "pkg.mod:callable"` (imported),
    `token_env = "VAR"` and `token_file = "path"` for OAuth2. Relative paths (`ca_file`,
    `password_file`, `token_file`, `path`) are resolved against `base_dir` when given.
    A `token_provider` given as a callable is used as is.

    Raises:
        ConfigError: Unknown key, wrong type or invalid value; the message starts with `where` and the key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _TYPES:
            close = difflib.get_close_matches(str(key), sorted(_TYPES), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}.{key}: unknown key{hint} (known: {', '.join(sorted(_TYPES))})", field=key)
        if value is None:  # from Python dicts: None means "not set" (TOML has no null)
            continue
        if key == "token_provider" and callable(value):
            kwargs[key] = value
            continue
        expected = _TYPES[key]
        ok = False if isinstance(value, bool) and bool not in expected else isinstance(value, expected)
        if not ok:
            names = " or ".join(t.__name__ for t in expected)
            # Never echo a secret, even a wrong one (an unquoted numeric password is still the password).
            shown = f"a value of type {type(value).__name__} (quote it)" if _is_secret_key(key) else repr(value)
            raise ConfigError(f"{where}.{key}: expected {names}, got {shown}", field=key)
        if key in _PATH_KEYS and base_dir is not None:
            value = str(Path(base_dir, value))
        kwargs[key] = value
    try:
        token_specs = [k for k in ("token_provider", "token_env", "token_file") if k in kwargs]
        if len(token_specs) > 1:
            raise ValueError(f"token_provider: give only one of token_provider, token_env, token_file ({token_specs})")
        if isinstance(kwargs.get("token_provider"), str):
            kwargs["token_provider"] = _import_provider(kwargs["token_provider"])
        if "token_env" in kwargs:
            kwargs["token_provider"] = _env_token(kwargs.pop("token_env"))
        if "token_file" in kwargs:
            kwargs["token_provider"] = _file_token(kwargs.pop("token_file"))
        if isinstance(kwargs.get("scopes"), str):
            kwargs["scopes"] = kwargs["scopes"].split()
        if "scopes" in kwargs and not all(isinstance(v, str) for v in kwargs["scopes"]):
            raise ValueError(f"scopes: expected strings, got {kwargs['scopes']!r}")
        if "addresses" in kwargs and isinstance(kwargs["addresses"], list):
            bad = [a for a in kwargs["addresses"] if not isinstance(a, str)]
            if bad:
                raise ValueError(f"addresses: expected strings, got {bad!r}")
        if "name" not in kwargs:
            raise ValueError("name: required")
        mailbox = MailboxConfig(**kwargs)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        bad_key = text.split(":", 1)[0] if ":" in text else None
        raise ConfigError(f"{where}.{text}", field=bad_key) from exc
    return mailbox


def load_config(path: str | Path) -> SourcesConfig:
    """Load a TOML configuration file: `[storage]` and `[[mailboxes]]`.

    Every error is a `ConfigError` whose message names the file, the mailbox
    index and the key, e.g. `/etc/tm.toml: mailboxes[1].port: expected int, got '993'`.
    Mailbox names must be unique. Unknown top-level tables are kept in `raw` for other layers.
    """
    file = Path(path)
    try:
        with file.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    base = file.resolve().parent
    storage = doc.get("storage", {})
    if not isinstance(storage, dict):
        raise ConfigError(f"{file}: storage: expected a table, got {type(storage).__name__}", field="storage")
    sqlite: str | None = storage.get("sqlite", storage.get("path"))
    if sqlite is not None and not isinstance(sqlite, str):
        raise ConfigError(f"{file}: storage.sqlite: expected a path string, got {sqlite!r}", field="sqlite")
    if sqlite is not None and sqlite != ":memory:":
        sqlite = str(base / sqlite)
    entries = doc.get("mailboxes", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: mailboxes: expected an array of tables ([[mailboxes]])", field="mailboxes")
    mailboxes: list[MailboxConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{file}: mailboxes[{index}]"
        mailbox = mailbox_from_dict(entry, base_dir=base, where=where)
        if mailbox.name in seen:
            raise ConfigError(f"{where}.name: duplicate mailbox name {mailbox.name!r}", field="name")
        seen.add(mailbox.name)
        mailboxes.append(mailbox)
    return SourcesConfig(
        path=str(file), sqlite=sqlite, storage=storage, mailboxes=tuple(mailboxes), raw=mask_secrets(doc)
    )
