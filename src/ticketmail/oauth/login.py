"""Getting the first refresh token: the device-code flow and the authorization-code flow with PKCE.

Delegated access (a user's or a shared mailbox, read with the signed-in user's rights) needs one interactive
sign-in; afterwards the refresh token keeps the mailbox going on its own (`ticketmail.oauth.tokens`).
`ticketmail oauth login --mailbox NAME` runs one of:

* **device code** (RFC 8628; Microsoft's default): prints a URL and a short code, the operator opens the
  URL on any device, enters the code and consents; ticketmail polls the token endpoint meanwhile. Works on a
  headless server. Google does not allow Gmail scopes with this flow;
* **authorization code + PKCE** on a loopback redirect (RFC 8252 section 7.3, RFC 7636; Google's default):
  ticketmail listens on `127.0.0.1` (`localhost` for Microsoft) on a free port, prints the sign-in URL
  (and opens a browser unless `--no-browser`), and receives the code when the provider redirects back.

Either way the answer is stored with `save_login`, in the same
token file the fetch reads. Nothing secret is printed: the code shown is the short user code meant for the
operator, never a token.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import urllib.parse
import webbrowser
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import IO, Any

from ticketmail.errors import OAuthError
from ticketmail.oauth.settings import OAuthSettings, missing_extra
from ticketmail.oauth.tokens import TokenManager, describe_token_error

__all__ = [
    "DEVICE_CODE_GRANT",
    "authorization_code_login",
    "default_flow",
    "device_code_login",
    "discover",
    "with_discovered_endpoints",
]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def discover(manager: TokenManager) -> dict[str, str]:
    """Endpoints from the server's metadata (RFC 8414, then OpenID Connect discovery) at the token URL's origin.

    Used for `provider = "generic"` when `device_authorization_url` or `authorization_url` is not set;
    an empty mapping when the server publishes none.
    """
    import httpx

    s = manager.settings
    parts = urllib.parse.urlsplit(s.token_url)
    origin = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    found: dict[str, str] = {}
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        try:
            response = httpx.get(origin + path, timeout=s.timeout)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            continue
        if isinstance(data, dict):
            for key in ("device_authorization_endpoint", "authorization_endpoint"):
                value = data.get(key)
                if isinstance(value, str) and value.startswith(("https://", "http://")):
                    found.setdefault(key, value)
    return found


def with_discovered_endpoints(manager: TokenManager) -> TokenManager:
    """`manager`, or one whose settings gained the endpoints a generic server's metadata names."""
    import attrs

    s = manager.settings
    if s.provider != "generic" or (s.device_authorization_url and s.authorization_url):
        return manager
    found = discover(manager)
    device = s.device_authorization_url or found.get("device_authorization_endpoint")
    authorize = s.authorization_url or found.get("authorization_endpoint")
    if (device, authorize) == (s.device_authorization_url, s.authorization_url):
        return manager
    return TokenManager(attrs.evolve(s, device_authorization_url=device, authorization_url=authorize))


def default_flow(manager: TokenManager) -> str:
    """`device` when the provider has a device endpoint that allows mail scopes, else `browser`."""
    s = manager.settings
    if s.provider == "google" or not s.device_authorization_url:
        return "browser"
    return "device"


def _client(manager: TokenManager, **extra: Any) -> Any:
    try:
        import warnings

        import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from authlib.integrations.httpx_client import OAuth2Client  # type: ignore[import-untyped]
    except ImportError as exc:
        raise missing_extra(exc, manager.settings.mailbox) from exc
    s = manager.settings
    secret = s.client_secret()
    return OAuth2Client(
        client_id=s.client_id,
        client_secret=secret.reveal() if secret is not None else None,
        token_endpoint_auth_method=s.client_auth,
        timeout=s.timeout,
        trust_env=True,
        **extra,
    )


def _unreachable(manager: TokenManager, url: str, exc: BaseException) -> OAuthError:
    host = urllib.parse.urlsplit(url).netloc.rsplit("@", 1)[-1]
    return OAuthError(
        f"mailbox {manager.settings.mailbox!r}: cannot reach {host} ({type(exc).__name__}); check the network "
        "and the OAuth2 URLs",
        reason="unreachable",
        mailbox=manager.settings.mailbox,
    )


def device_code_login(
    manager: TokenManager,
    *,
    out: IO[str],
    timeout: float = 900.0,
    sleep: Callable[[float], None] = time.sleep,
    on_code: Callable[[Mapping[str, Any]], None] | None = None,
) -> None:
    """Run the device-code flow and store the refresh token.

    Args:
        manager: The mailbox's token manager (its settings name the endpoints and scopes).
        out: Where the instructions are printed.
        timeout: Seconds to wait for the operator (the provider's own expiry may be shorter).
        sleep: Wait between polls (tests pass a fast one).
        on_code: Called with the device-authorization answer (tests play the user with it).

    Raises:
        OAuthError: The endpoint refused (`consent`, `invalid_client` ...), the code expired, or the
            operator declined.
    """
    s = manager.settings
    if not s.device_authorization_url:
        raise OAuthError(
            f"mailbox {s.mailbox!r}: no device_authorization_url for this provider; use --flow browser",
            reason="server",
            mailbox=s.mailbox,
        )
    import httpx

    scope = " ".join(s.login_scopes())
    with _client(manager, scope=scope) as client:
        form = {"client_id": s.client_id or "", "scope": scope}
        auth: Any = None
        secret = s.client_secret()
        if secret is not None and s.client_auth == "client_secret_basic":
            auth = httpx.BasicAuth(s.client_id or "", secret.reveal())
        elif secret is not None:
            form["client_secret"] = secret.reveal()
        try:
            response = httpx.post(s.device_authorization_url, data=form, auth=auth, timeout=s.timeout)
        except httpx.TransportError as exc:
            raise _unreachable(manager, s.device_authorization_url, exc) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or response.status_code >= 400 or "device_code" not in answer:
            error = answer.get("error") if isinstance(answer, dict) else None
            description = answer.get("error_description") if isinstance(answer, dict) else None
            raise describe_token_error(error, description, mailbox=s.mailbox, status=response.status_code)
        uri = answer.get("verification_uri") or answer.get("verification_url") or ""
        print(f"To sign in mailbox {s.mailbox!r}, open {uri} and enter the code {answer.get('user_code')}", file=out)
        if answer.get("verification_uri_complete"):
            print(f"(or open {answer['verification_uri_complete']})", file=out)
        print("Waiting for the sign-in to complete ...", file=out, flush=True)
        if on_code is not None:
            on_code(answer)
        interval = float(answer.get("interval") or 5)
        deadline = time.monotonic() + min(timeout, float(answer.get("expires_in") or timeout))
        token = _poll_device(manager, client, str(answer["device_code"]), interval, deadline, sleep)
    manager.save_login(token)
    print(f"Signed in; the refresh token is stored in {manager.store.path if manager.store else '?'}", file=out)


def _poll_device(
    manager: TokenManager,
    client: Any,
    device_code: str,
    interval: float,
    deadline: float,
    sleep: Callable[[float], None],
) -> Mapping[str, Any]:
    import httpx
    from authlib.integrations.base_client.errors import OAuthError as AuthlibOAuthError  # type: ignore[import-untyped]

    s = manager.settings
    while True:
        if time.monotonic() >= deadline:
            raise OAuthError(
                f"mailbox {s.mailbox!r}: the sign-in was not completed in time; run `ticketmail oauth login` again",
                reason="invalid_grant",
                mailbox=s.mailbox,
            )
        sleep(interval)
        try:
            token: Mapping[str, Any] = client.fetch_token(
                s.token_url, grant_type=DEVICE_CODE_GRANT, device_code=device_code, client_id=s.client_id
            )
            return token
        except AuthlibOAuthError as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += 5
                continue
            if exc.error == "expired_token":
                raise OAuthError(
                    f"mailbox {s.mailbox!r}: the device code expired before the sign-in; run `ticketmail oauth "
                    "login` again",
                    reason="invalid_grant",
                    mailbox=s.mailbox,
                ) from None
            raise describe_token_error(exc.error, exc.description, mailbox=s.mailbox) from None
        except httpx.TransportError as exc:
            raise _unreachable(manager, s.token_url, exc) from None


class _Redirect:
    """The one request the provider's redirect brings to the loopback listener."""

    def __init__(self) -> None:
        self.query: dict[str, str] | None = None
        self.path = ""
        self.done = threading.Event()


def _listener(redirect: _Redirect, port: int) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            if "code" not in query and "error" not in query:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = (
                b"<!doctype html><title>ticketmail</title><p>Signed in. You can close this window and return "
                b"to the terminal.</p>"
                if "code" in query
                else b"<!doctype html><title>ticketmail</title><p>The sign-in did not complete; see the terminal.</p>"
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            redirect.path = self.path
            redirect.query = query
            redirect.done.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return HTTPServer(("127.0.0.1", port), Handler)


def authorization_code_login(
    manager: TokenManager,
    *,
    out: IO[str],
    open_browser: bool = True,
    port: int = 0,
    timeout: float = 300.0,
    on_url: Callable[[str], None] | None = None,
) -> None:
    """Run the authorization-code flow with PKCE (S256) on a loopback redirect and store the refresh token.

    Args:
        manager: The mailbox's token manager.
        out: Where the sign-in URL is printed.
        open_browser: Also open it in the local browser.
        port: Loopback port for the redirect (0: any free port; register `http://localhost` for Microsoft,
            a desktop client for Google).
        timeout: Seconds to wait for the redirect.
        on_url: Called with the sign-in URL (tests play the browser with it).

    Raises:
        OAuthError: No authorization URL, the provider answered with an error, the `state` did not match,
            or nobody signed in within `timeout`.
    """
    s = manager.settings
    if not s.authorization_url:
        raise OAuthError(
            f"mailbox {s.mailbox!r}: no authorization_url for this provider; set it or use --flow device",
            reason="server",
            mailbox=s.mailbox,
        )
    import httpx
    from authlib.integrations.base_client.errors import OAuthError as AuthlibOAuthError

    redirect = _Redirect()
    try:
        server = _listener(redirect, port)
    except OSError as exc:
        raise OAuthError(
            f"cannot listen on 127.0.0.1:{port} for the sign-in redirect ({exc.strerror}); choose another --port",
            reason="server",
            mailbox=s.mailbox,
        ) from exc
    thread = threading.Thread(target=server.serve_forever, name="ticketmail-oauth-redirect", daemon=True)
    thread.start()
    try:
        host = "localhost" if s.provider == "microsoft" else "127.0.0.1"
        redirect_uri = f"http://{host}:{server.server_address[1]}/"
        verifier = secrets.token_urlsafe(64)
        scope = " ".join(s.login_scopes())
        with _client(manager, scope=scope, redirect_uri=redirect_uri, code_challenge_method="S256") as client:
            url, state = client.create_authorization_url(
                s.authorization_url, code_verifier=verifier, **_authorization_extras(s)
            )
            _show_sign_in(url, redirect_uri, out=out, open_browser=open_browser, on_url=on_url, mailbox=s.mailbox)
            query = _await_redirect(redirect, state, timeout=timeout, mailbox=s.mailbox)
            try:
                token = client.fetch_token(
                    s.token_url,
                    grant_type="authorization_code",
                    code=query["code"],
                    code_verifier=verifier,
                    redirect_uri=redirect_uri,
                )
            except AuthlibOAuthError as exc:
                raise describe_token_error(exc.error, exc.description, mailbox=s.mailbox) from None
            except httpx.TransportError as exc:
                raise _unreachable(manager, s.token_url, exc) from None
    finally:
        server.shutdown()
        server.server_close()
    manager.save_login(token)
    print(f"Signed in; the refresh token is stored in {manager.store.path if manager.store else '?'}", file=out)


def _authorization_extras(s: OAuthSettings) -> dict[str, str]:
    """Provider-specific parameters of the authorization URL."""
    extra: dict[str, str] = {}
    if s.provider == "google":
        extra = {"access_type": "offline", "prompt": "consent"}  # Google issues a refresh token only so
    if s.subject:
        extra["login_hint"] = s.subject
    return extra


def _show_sign_in(
    url: str, redirect_uri: str, *, out: IO[str], open_browser: bool, on_url: Callable[[str], None] | None, mailbox: str
) -> None:
    print(f"To sign in mailbox {mailbox!r}, open this URL in a browser:\n\n  {url}\n", file=out)
    print(f"Waiting for the redirect to {redirect_uri} ...", file=out, flush=True)
    if open_browser:
        with contextlib.suppress(Exception):
            webbrowser.open(url)
    if on_url is not None:
        on_url(url)


def _await_redirect(redirect: _Redirect, state: str, *, timeout: float, mailbox: str) -> dict[str, str]:
    """The redirect's query once it arrived with our `state`; `OAuthError` for a timeout, an error or a forgery."""
    if not redirect.done.wait(timeout):
        raise OAuthError(
            f"mailbox {mailbox!r}: no sign-in arrived within {int(timeout)} s; run `ticketmail oauth login` again",
            reason="invalid_grant",
            mailbox=mailbox,
        )
    query = redirect.query or {}
    if "error" in query:
        raise describe_token_error(query.get("error"), query.get("error_description"), mailbox=mailbox)
    if not secrets.compare_digest(query.get("state", ""), state):
        raise OAuthError(
            f"mailbox {mailbox!r}: the sign-in redirect carried another state (a stale or forged "
            "request); run `ticketmail oauth login` again",
            reason="server",
            mailbox=mailbox,
        )
    return query
