"""Provider defaults: endpoints, scopes and client authentication for Microsoft, Google and generic servers.

A `OAuthSettings` is everything the token lifecycle needs of a mailbox, resolved once from its
`MailboxConfig`:

========================  =================================================================================
provider                  endpoints (`tenant` defaults to `organizations`)
========================  =================================================================================
`microsoft`             `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/{token,authorize,devicecode}`
`google`                `https://oauth2.googleapis.com/token`, `https://accounts.google.com/o/oauth2/v2/auth`,
                          `https://oauth2.googleapis.com/device/code`
`generic`               `token_url` (required), `authorization_url`, `device_authorization_url`
========================  =================================================================================

Default scopes, when the mailbox sets none:

* Microsoft, delegated (refresh token): `https://outlook.office.com/IMAP.AccessAsUser.All` (IMAP),
  `https://outlook.office.com/POP.AccessAsUser.All` (POP3) or `https://graph.microsoft.com/Mail.ReadWrite`
  (Graph), each with `offline_access` so that a refresh token is issued;
* Microsoft, app-only (client credentials): `https://outlook.office365.com/.default` (IMAP/POP3) or
  `https://graph.microsoft.com/.default` (Graph);
* Google: `https://mail.google.com/` (the only scope Gmail's IMAP/POP3 accept).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

from ticketmail.errors import ConfigError, OAuthError
from ticketmail.sources.config import Secret

if TYPE_CHECKING:
    from ticketmail.sources.config import MailboxConfig

__all__ = ["MICROSOFT_LOGIN", "OAuthSettings", "default_scopes", "settings_for"]

MICROSOFT_LOGIN = "https://login.microsoftonline.com"
"""The Microsoft Entra ID authority of the public cloud (override with `token_url`/`authorization_url`)."""

_GOOGLE = {
    "token": "https://oauth2.googleapis.com/token",
    "authorize": "https://accounts.google.com/o/oauth2/v2/auth",
    "device": "https://oauth2.googleapis.com/device/code",
}
_MS_DELEGATED = {
    "imap": "https://outlook.office.com/IMAP.AccessAsUser.All",
    "pop3": "https://outlook.office.com/POP.AccessAsUser.All",
    "graph": "https://graph.microsoft.com/Mail.ReadWrite",
}
_MS_APP = {
    "imap": "https://outlook.office365.com/.default",
    "pop3": "https://outlook.office365.com/.default",
    "graph": "https://graph.microsoft.com/.default",
}

Grant = Literal["refresh_token", "client_credentials", "service_account"]
ClientAuth = Literal["client_secret_basic", "client_secret_post", "none"]


def default_scopes(provider: str, protocol: str, *, app_only: bool) -> tuple[str, ...]:
    """The scopes used when a mailbox configures none (see the module docstring)."""
    if provider == "microsoft":
        if app_only:
            return (_MS_APP.get(protocol, _MS_APP["imap"]),)
        return (_MS_DELEGATED.get(protocol, _MS_DELEGATED["imap"]), "offline_access")
    if provider == "google":
        return ("https://mail.google.com/",)
    return ()


@attrs.frozen
class OAuthSettings:
    """The resolved OAuth2 settings of one mailbox (no secret values: the secret is read when needed).

    Attributes:
        mailbox: The mailbox name.
        provider: `microsoft`, `google` or `generic`.
        protocol: The mailbox protocol (for default scopes).
        client_id: The application (client) id.
        token_url: The token endpoint.
        authorization_url: The authorization endpoint (authorization-code login), if known.
        device_authorization_url: The device-authorization endpoint (device-code login), if known.
        scopes: Scopes requested (explicit, or the default for the grant).
        grant: The configured grant: `auto` or a fixed one.
        client_auth: How the client authenticates at the token endpoint.
        has_secret: Whether a client secret is configured.
        service_account_file: Google service-account key file, if any.
        subject: The mailbox user (the service account acts for it; the login hint).
        token_store: The token file (`None`: in memory only, enough for client credentials).
        timeout: Seconds for each HTTP request.
        ca_file: PEM bundle for the token endpoint's certificate (the mailbox's `ca_file`).
    """

    mailbox: str
    provider: str
    protocol: str
    client_id: str | None
    token_url: str
    authorization_url: str | None
    device_authorization_url: str | None
    scopes: tuple[str, ...]
    grant: str
    client_auth: ClientAuth
    has_secret: bool
    service_account_file: str | None
    subject: str | None
    token_store: Path | None
    timeout: float = 30.0
    ca_file: str | None = None
    _secret_source: tuple[str, str] | None = attrs.field(default=None, repr=False, alias="secret_source")
    _secret_value: Secret | None = attrs.field(default=None, repr=False, alias="secret_value")

    def client_secret(self) -> Secret | None:
        """The client secret, read now (environment variable or file), or `None` for a public client.

        Raises:
            ConfigError: The variable is unset or the file unreadable (named, the value never shown).
        """
        if self._secret_value is not None:
            return self._secret_value
        if self._secret_source is None:
            return None
        kind, where = self._secret_source
        if kind == "env":
            value = os.environ.get(where)
            if not value:
                raise ConfigError(
                    f"mailbox {self.mailbox!r}: environment variable {where} (client_secret_env) is not set or empty",
                    field="client_secret_env",
                )
            return Secret(value)
        try:
            text = Path(where).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"mailbox {self.mailbox!r}: cannot read client_secret_file {where}: {type(exc).__name__}",
                field="client_secret_file",
            ) from exc
        if not text:
            raise ConfigError(
                f"mailbox {self.mailbox!r}: client_secret_file {where} is empty", field="client_secret_file"
            )
        return Secret(text)

    def scopes_for(self, grant: Grant) -> tuple[str, ...]:
        """The scopes to request with `grant`: the configured ones, else the provider default."""
        if self.scopes:
            return self.scopes
        return default_scopes(self.provider, self.protocol, app_only=grant == "client_credentials")

    def login_scopes(self) -> tuple[str, ...]:
        """Scopes for an interactive (delegated) login: app-only `.default` scopes are not delegated."""
        chosen = self.scopes_for("refresh_token")
        if self.provider == "microsoft" and chosen and all(s.endswith("/.default") for s in chosen):
            chosen = default_scopes("microsoft", self.protocol, app_only=False)
        if self.provider == "microsoft" and "offline_access" not in chosen:
            chosen = (*chosen, "offline_access")
        return chosen


def _microsoft_url(config: MailboxConfig, leaf: str) -> str:
    tenant = config.tenant or "organizations"
    return f"{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0/{leaf}"


def _endpoints(config: MailboxConfig, provider: str) -> tuple[str, str | None, str | None, ClientAuth]:
    """`(token_url, authorization_url, device_authorization_url, client_auth)` for the provider."""
    if provider == "microsoft":
        token_url = config.token_url or _microsoft_url(config, "token")
        authorization_url = config.authorization_url or _microsoft_url(config, "authorize")
        device_url = config.device_authorization_url
        if device_url is None:
            device_url = (
                authorization_url.rsplit("/", 1)[0] + "/devicecode"
                if authorization_url.endswith("/authorize")
                else _microsoft_url(config, "devicecode")
            )
        return token_url, authorization_url, device_url, "client_secret_post"
    if provider == "google":
        token_url = config.token_url or _GOOGLE["token"]
        authorization_url = config.authorization_url or _GOOGLE["authorize"]
        return token_url, authorization_url, config.device_authorization_url or _GOOGLE["device"], "client_secret_post"
    if not config.token_url:
        raise ConfigError(f"mailbox {config.name!r}: token_url is required for provider 'generic'", field="token_url")
    # RFC 6749 section 2.3.1: every server must support client_secret_basic
    return config.token_url, config.authorization_url, config.device_authorization_url, "client_secret_basic"


def settings_for(config: MailboxConfig, *, state_dir: str | os.PathLike[str] | None = None) -> OAuthSettings:
    """Resolve the OAuth2 settings of `config` (which has `provider` set).

    Args:
        config: The mailbox.
        state_dir: The state directory; the token file defaults to `<state_dir>/oauth/<name>.json`.

    Raises:
        ConfigError: `provider` is not set.
    """
    provider = config.provider
    if provider is None:
        raise ConfigError(f"mailbox {config.name!r}: no OAuth2 provider configured", field="provider")
    token_url, authorization_url, device_url, client_auth = _endpoints(config, provider)
    secret_source: tuple[str, str] | None = None
    if config.client_secret_env:
        secret_source = ("env", config.client_secret_env)
    elif config.client_secret_file:
        secret_source = ("file", config.client_secret_file)
    has_secret = secret_source is not None or config.client_secret is not None
    if not has_secret:
        client_auth = "none"
    store: Path | None = None
    if config.token_store:
        store = Path(config.token_store)
    elif state_dir is not None:
        store = Path(state_dir) / "oauth" / f"{_safe(config.name)}.json"
    subject = config.username or config.mailbox or config.address
    return OAuthSettings(
        mailbox=config.name,
        provider=provider,
        protocol=config.protocol,
        client_id=config.client_id,
        token_url=token_url,
        authorization_url=authorization_url,
        device_authorization_url=device_url,
        scopes=tuple(config.scopes),
        grant=config.grant,
        client_auth=client_auth,
        has_secret=has_secret,
        service_account_file=config.service_account_file,
        subject=subject,
        token_store=store,
        timeout=config.timeout,
        ca_file=config.ca_file,
        secret_source=secret_source,
        secret_value=config.client_secret,
    )


def _safe(name: str) -> str:
    """A file-name-safe form of a mailbox name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def missing_extra(exc: ImportError, mailbox: str | None = None) -> OAuthError:
    """The error for a missing `ticketmail[oauth]` extra (Authlib, httpx)."""
    name = exc.name or "authlib/httpx"
    return OAuthError(
        f"the OAuth2 token lifecycle needs the 'oauth' extra ({name} is not installed): "
        "pip install 'ticketmail[oauth]'",
        reason="missing_extra",
        mailbox=mailbox,
    )
