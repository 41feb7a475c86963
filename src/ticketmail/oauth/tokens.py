"""The token lifecycle: get, cache, refresh and persist OAuth2 access tokens for one mailbox.

`TokenManager` is what a mailbox with `provider` set uses as its token provider. Each call of
`TokenManager.access_token`:

1. returns the access token cached in memory while it is more than a minute (or half its lifetime, for
   short-lived tokens) from expiry;
2. otherwise takes the store's lock (`locked`: threads and other
   processes wait), re-reads the store (another worker may have refreshed meanwhile: then its token is used
   and nothing is spent), and only then asks the token endpoint, with the grant the mailbox uses:

   * `refresh_token` (delegated access; the refresh token comes from `ticketmail oauth login`),
   * `client_credentials` (app-only: Microsoft `IMAP.AccessAsApp` / `POP.AccessAsApp` / Graph
     application permissions),
   * `service_account` (Google domain-wide delegation: a JWT signed with the service account's key,
     RFC 7523, acting for the mailbox user);
3. writes the answer to the store *before* returning it, including a rotated refresh token, so a crash
   after the refresh never strands the mailbox with a dead token (see `ticketmail.oauth.store`).

Failures become `OAuthError` with a `reason` (`unreachable`,
`invalid_client`, `invalid_grant`, `consent`, `no_token`, `store`, `server`) and a sentence
saying what to do. No token, secret or assertion ever appears in a message, a log line or a repr.

Authlib does the protocol work (its httpx `OAuth2Client` and `AssertionClient`); both are imported when
the first token is needed, so a core install without the `oauth` extra never loads them.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ticketmail.errors import ConfigError, OAuthError
from ticketmail.oauth.settings import Grant, OAuthSettings, missing_extra
from ticketmail.oauth.store import StoredTokens, TokenStore
from ticketmail.sources.config import Secret

if TYPE_CHECKING:
    import httpx

__all__ = ["TokenManager", "describe_token_error", "refresh_margin"]

log = logging.getLogger(__name__)

_AADSTS = re.compile(r"AADSTS\d+")
_CONSENT_CODES = ("AADSTS65001", "AADSTS65004", "AADSTS50105", "AADSTS7000112", "AADSTS500011", "AADSTS70011")
_CLIENT_CODES = ("AADSTS7000215", "AADSTS7000222", "AADSTS700016", "AADSTS7000218")
_GRANT_CODES = ("AADSTS70008", "AADSTS700082", "AADSTS50173", "AADSTS700084", "AADSTS54005", "AADSTS70000")


def refresh_margin(lifetime: float) -> float:
    """Seconds before expiry at which a token counts as expired: 60, or half the lifetime when shorter."""
    if lifetime <= 0:
        return 0.0
    return min(60.0, lifetime / 2)


def describe_token_error(
    error: str | None, description: str | None, *, mailbox: str, status: int | None = None
) -> OAuthError:
    """Turn a token endpoint's `error` answer into an `OAuthError` with a remedy.

    Only the error code and, for Microsoft, the `AADSTS` number are quoted from the answer.
    """
    error = (error or "").strip() or "unknown_error"
    text = description or ""
    codes = _AADSTS.findall(text)
    ref = f" ({', '.join(dict.fromkeys(codes))})" if codes else ""
    login = f"run `ticketmail oauth login --mailbox {mailbox}` again"
    if any(c in _CONSENT_CODES for c in codes) or error in (
        "invalid_scope",
        "consent_required",
        "interaction_required",
        "access_denied",
    ):
        return OAuthError(
            f"mailbox {mailbox!r}: the token endpoint refused the requested permissions ({error}{ref}): the "
            "app registration lacks a permission or an administrator has not granted consent; add the "
            "permission, grant admin consent, then retry (delegated access: " + login + ")",
            reason="consent",
            mailbox=mailbox,
        )
    if error in ("invalid_client", "unauthorized_client") or any(c in _CLIENT_CODES for c in codes):
        return OAuthError(
            f"mailbox {mailbox!r}: the token endpoint refused the client ({error}{ref}): the client id is "
            "unknown, or the client secret is wrong or expired; check client_id and create a new secret "
            "(client_secret_env / client_secret_file)",
            reason="invalid_client",
            mailbox=mailbox,
        )
    if error == "invalid_grant" or any(c in _GRANT_CODES for c in codes):
        return OAuthError(
            f"mailbox {mailbox!r}: the refresh token was refused ({error}{ref}): it was revoked, expired or "
            f"already used; {login}",
            reason="invalid_grant",
            mailbox=mailbox,
        )
    where = f" (HTTP {status})" if status else ""
    if error in ("temporarily_unavailable", "server_error"):
        return OAuthError(
            f"mailbox {mailbox!r}: the token endpoint is temporarily failing ({error}{where}); retry later",
            reason="unreachable",
            mailbox=mailbox,
        )
    return OAuthError(
        f"mailbox {mailbox!r}: the token endpoint answered {error}{ref}{where}; check the OAuth2 settings",
        reason="server",
        mailbox=mailbox,
    )


class TokenManager:
    """Access tokens for one mailbox (see the module docstring).

    Args:
        settings: The mailbox's resolved `OAuthSettings`.
        clock: Unix time (tests move it forward).

    The instance is thread-safe and meant to live as long as the process: its memory cache saves a
    file read and a lock per login.
    """

    def __init__(self, settings: OAuthSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = (
            TokenStore(settings.token_store, mailbox=settings.mailbox) if settings.token_store is not None else None
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._rejected: str | None = None
        self._auth_method: str | None = None
        self.requests = 0
        """Token endpoint requests made (tests and diagnostics)."""

    def __repr__(self) -> str:
        return f"TokenManager(mailbox={self.settings.mailbox!r}, provider={self.settings.provider!r})"

    # -- public -----------------------------------------------------------------------------------------

    def access_token(self) -> Secret:
        """A current access token (cached, refreshed or newly obtained).

        Raises:
            OAuthError: The token endpoint refused or is unreachable; the store is unusable; nothing is
                stored to refresh from (`no_token`: log in first).
            ConfigError: The client secret's variable or file is missing.
        """
        with self._lock:
            now = self._clock()
            if self._token is not None and now < self._refresh_at and self._token != self._rejected:
                return Secret(self._token)
            if self.store is None:
                return Secret(self._obtain(None))
            with self.store.locked():
                stored = self.store.load()
                stored = stored if self._belongs(stored) else None
                if (
                    stored is not None
                    and stored.access_token
                    and stored.access_token != self._rejected
                    and now < stored.refresh_at()
                ):
                    self._token = stored.access_token
                    self._refresh_at = stored.refresh_at()
                    return Secret(stored.access_token)
                return Secret(self._obtain(stored))

    def renew(self) -> Secret:
        """A new access token from the token endpoint now, whatever is cached (`check` proves the grant).

        Raises:
            OAuthError: As `access_token`.
        """
        with self._lock:
            if self.store is None:
                return Secret(self._obtain(None))
            with self.store.locked():
                stored = self.store.load()
                return Secret(self._obtain(stored if self._belongs(stored) else None))

    def invalidate(self, token: Secret | str | None = None) -> None:
        """Forget the cached access token (the server refused it): the next call gets a new one."""
        with self._lock:
            value = token.reveal() if isinstance(token, Secret) else token
            self._rejected = value or self._token
            self._token = None
            self._refresh_at = 0.0

    def grant(self, stored: StoredTokens | None = None) -> Grant:
        """The grant the next token request uses (`auto` resolved against what is stored)."""
        s = self.settings
        if s.grant != "auto":
            return s.grant  # type: ignore[return-value]
        if s.service_account_file:
            return "service_account"
        if stored is not None and stored.refresh_token:
            return "refresh_token"
        if s.has_secret and s.provider != "google":
            return "client_credentials"
        return "refresh_token"

    def has_refresh_token(self) -> bool:
        """Whether a refresh token for this client is stored."""
        if self.store is None:
            return False
        stored = self.store.load()
        return bool(stored is not None and self._belongs(stored) and stored.refresh_token)

    def save_login(self, token: Mapping[str, Any]) -> None:
        """Store the answer of an interactive login (authorization code or device code).

        Raises:
            OAuthError: `store`: no token store is configured, or it cannot be written.
        """
        if self.store is None:
            raise OAuthError(
                f"mailbox {self.settings.mailbox!r}: nowhere to keep the refresh token; set token_store or a "
                "state directory",
                reason="store",
                mailbox=self.settings.mailbox,
            )
        refresh = token.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            raise OAuthError(
                f"mailbox {self.settings.mailbox!r}: the login returned no refresh token; request the "
                "offline_access scope (Microsoft) or access_type=offline (Google)",
                reason="server",
                mailbox=self.settings.mailbox,
            )
        with self._lock, self.store.locked():
            self._persist(token, previous=None)

    # -- internals --------------------------------------------------------------------------------------

    def _belongs(self, stored: StoredTokens | None) -> bool:
        """A store written for another client id (the app registration changed) is not used."""
        if stored is None:
            return False
        return (
            stored.client_id is None or self.settings.client_id is None or stored.client_id == self.settings.client_id
        )

    def _remember(self, token: str, expires_at: float) -> None:
        now = self._clock()
        lifetime = expires_at - now
        self._token = token
        self._refresh_at = expires_at - refresh_margin(lifetime) if expires_at else now
        if token != self._rejected:
            self._rejected = None

    def _obtain(self, stored: StoredTokens | None) -> str:
        grant = self.grant(stored)
        s = self.settings
        if grant == "refresh_token":
            if stored is None or not stored.refresh_token:
                raise OAuthError(
                    f"mailbox {s.mailbox!r}: no OAuth2 refresh token is stored yet; run "
                    f"`ticketmail oauth login --mailbox {s.mailbox}` once"
                    + (" (or set a client secret for app-only access)" if s.provider == "microsoft" else ""),
                    reason="no_token",
                    mailbox=s.mailbox,
                )
            answer = self._request(grant, stored.refresh_token)
        else:
            answer = self._request(grant, None)
        return self._persist(answer, previous=stored)

    def _persist(self, answer: Mapping[str, Any], previous: StoredTokens | None) -> str:
        s = self.settings
        access = answer.get("access_token")
        if not isinstance(access, str) or not access:
            raise OAuthError(
                f"mailbox {s.mailbox!r}: the token endpoint answered without an access token",
                reason="server",
                mailbox=s.mailbox,
            )
        now = self._clock()
        expires_at = _expires_at(answer, now)
        refresh = answer.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            refresh = previous.refresh_token if previous is not None else None  # not rotated: keep the old one
        scope = answer.get("scope")
        tokens = StoredTokens(
            refresh_token=refresh,
            access_token=access,
            expires_at=expires_at,
            obtained_at=now,
            scope=" ".join(scope) if isinstance(scope, list) else scope if isinstance(scope, str) else None,
            client_id=s.client_id,
            token_url=s.token_url,
        )
        if self.store is not None:
            self.store.save(tokens)  # BEFORE the (possibly rotated) tokens are used anywhere
        self._remember(access, expires_at)
        return access

    def _request(self, grant: Grant, refresh_token: str | None) -> dict[str, Any]:
        s = self.settings
        try:
            import authlib.deprecate  # type: ignore[import-untyped]  # sets an "always" filter: import it first
            import httpx
            from authlib.integrations.base_client.errors import (  # type: ignore[import-untyped]
                OAuthError as AuthlibOAuthError,
            )

            with warnings.catch_warnings():  # Authlib >= 1.7 nudges towards httpx2; httpx is what we declare
                warnings.simplefilter("ignore")
                import authlib.integrations.httpx_client  # type: ignore[import-untyped]  # noqa: F401
        except ImportError as exc:
            raise missing_extra(exc, s.mailbox) from exc
        self.requests += 1
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=s.ca_file) if s.ca_file else True
        try:
            if grant == "service_account":
                token = self._service_account(verify)
            else:
                token = self._client_grant(grant, refresh_token, verify, AuthlibOAuthError)
        except AuthlibOAuthError as exc:
            raise describe_token_error(exc.error, exc.description, mailbox=s.mailbox) from None
        except httpx.HTTPStatusError as exc:
            raise _status_error(exc.response, s.mailbox) from None
        except httpx.TransportError as exc:
            raise OAuthError(
                f"mailbox {s.mailbox!r}: cannot reach the token endpoint {_host(s.token_url)} "
                f"({type(exc).__name__}); check the network, proxy and token_url",
                reason="unreachable",
                mailbox=s.mailbox,
            ) from None
        except (ConfigError, OAuthError):
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise OAuthError(
                f"mailbox {s.mailbox!r}: the token endpoint {_host(s.token_url)} sent an unusable answer "
                f"({type(exc).__name__})",
                reason="server",
                mailbox=s.mailbox,
            ) from None
        return dict(token)

    def _client_grant(
        self, grant: Grant, refresh_token: str | None, verify: ssl.SSLContext | bool, oauth_error: Any
    ) -> Any:
        """A refresh-token or client-credentials request with the client's authentication method.

        A generic server that refuses HTTP Basic client authentication (`invalid_client`) is asked once
        more with the secret in the form (`client_secret_post`); the method that worked is kept.
        """
        from authlib.integrations.httpx_client import OAuth2Client

        s = self.settings
        secret = s.client_secret()
        methods = [self._auth_method or s.client_auth]
        if methods[0] == "client_secret_basic" and s.provider == "generic":
            methods.append("client_secret_post")
        for index, method in enumerate(methods):
            with OAuth2Client(
                client_id=s.client_id,
                client_secret=secret.reveal() if secret is not None else None,
                token_endpoint_auth_method=method,
                timeout=s.timeout,
                verify=verify,
                trust_env=True,
            ) as client:
                scopes = s.scopes_for(grant)
                try:
                    if grant == "refresh_token":
                        extra = {"scope": " ".join(scopes)} if scopes and s.provider != "google" else {}
                        token = client.refresh_token(s.token_url, refresh_token=refresh_token, **extra)
                    else:
                        extra = {"scope": " ".join(scopes)} if scopes else {}
                        token = client.fetch_token(s.token_url, grant_type="client_credentials", **extra)
                except oauth_error as exc:
                    if exc.error == "invalid_client" and index + 1 < len(methods):
                        continue
                    raise
                self._auth_method = method
                return token
        raise AssertionError("unreachable")  # pragma: no cover

    def _service_account(self, verify: ssl.SSLContext | bool) -> Mapping[str, Any]:
        from authlib.integrations.httpx_client import AssertionClient

        s = self.settings
        path = s.service_account_file or ""
        try:
            with open(path, encoding="utf-8") as fh:
                info = json.load(fh)
            issuer = info["client_email"]
            key: Any = info["private_key"]
            try:  # Authlib >= 1.6 signs with joserfc and wants a key object; older ones take the PEM
                from joserfc.jwk import RSAKey

                key = RSAKey.import_key(key)
            except ImportError:
                pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"mailbox {s.mailbox!r}: cannot read the service-account key {path} ({type(exc).__name__}); "
                "download a JSON key for the service account",
                field="service_account_file",
            ) from exc
        if not s.subject:
            raise ConfigError(
                f"mailbox {s.mailbox!r}: domain-wide delegation needs the mailbox user (username or address)",
                field="username",
            )
        header = {"alg": "RS256"}
        if isinstance(info.get("private_key_id"), str):
            header["kid"] = info["private_key_id"]
        token_url = s.token_url
        with AssertionClient(
            token_endpoint=token_url,
            issuer=issuer,
            subject=s.subject,
            audience=info.get("token_uri")
            if s.provider == "google" and token_url == info.get("token_uri")
            else token_url,
            claims={"scope": " ".join(s.scopes_for("service_account"))},
            key=key,
            header=header,
            timeout=s.timeout,
            verify=verify,
        ) as client:
            result: Mapping[str, Any] = client.refresh_token()
            return result


def _expires_at(answer: Mapping[str, Any], now: float) -> float:
    expires_in = answer.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
        return now + float(expires_in)
    expires_at = answer.get("expires_at")
    if isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool) and expires_at > now:
        return float(expires_at)
    return now + 300.0  # unknown lifetime: assume a short one and refresh early


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or url


def _status_error(response: httpx.Response, mailbox: str) -> OAuthError:
    status = response.status_code
    try:
        data = response.json()
    except Exception:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str) and status < 500:
        return describe_token_error(
            data["error"], str(data.get("error_description") or ""), mailbox=mailbox, status=status
        )
    if status >= 500:
        return OAuthError(
            f"mailbox {mailbox!r}: the token endpoint is failing (HTTP {status}); retry later",
            reason="unreachable",
            mailbox=mailbox,
        )
    return OAuthError(
        f"mailbox {mailbox!r}: the token endpoint answered HTTP {status}; check token_url",
        reason="server",
        mailbox=mailbox,
    )
