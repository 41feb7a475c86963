"""A real OAuth2 authorization server for the tests, built on Authlib's server side, on loopback HTTP.

Nothing here is a mock of a client: Authlib's ``AuthorizationServer`` validates every request exactly as it
would behind Flask or Django; this module only adapts ``http.server`` requests to it and keeps the models in
memory. Supported, like Microsoft Entra ID and Google:

* ``POST /token``: ``refresh_token`` (rotating: every refresh issues a new refresh token and revokes the
  old one), ``client_credentials``, ``authorization_code`` with PKCE (S256), the device-code grant
  (RFC 8628) and the JWT-bearer grant (RFC 7523, Google service accounts); client secrets checked with
  ``client_secret_basic`` or ``client_secret_post``; public clients (``none``) for device/PKCE logins;
* ``GET /authorize``: approves at once as :attr:`OAuthServer.approve_as` and redirects with a code;
* ``POST /devicecode``: device authorization; :meth:`OAuthServer.approve_device` plays the user;
* ``POST /introspect``: RFC 7662 token introspection for resource servers (Dovecot's oauth2 passdb, the
  Graph test server), authenticated with HTTP Basic as a resource client.

Test controls: ``expires_in`` (access-token lifetime), ``down`` (answer 503), ``refreshes`` and
``reused_refresh_tokens`` counters, :meth:`revoke_all` (every token of a user dies: ``invalid_grant``),
:meth:`issue_refresh_token` (a refresh token as a completed login would leave it).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Request, TokenMixin, grants
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7523 import JWTBearerGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant, DeviceCredentialDict

RESOURCE_CLIENT = ("resource-server", "rs-secret")
"""The client id and secret resource servers (Dovecot, the Graph test server) introspect with."""


class Client(ClientMixin):
    """An OAuth2 client registration."""

    def __init__(
        self,
        client_id: str,
        secret: str | None,
        grant_types: tuple[str, ...],
        redirect_uris: tuple[str, ...] = (),
        scope: str = "",
        user: str | None = None,
        auth_methods: tuple[str, ...] = ("client_secret_basic", "client_secret_post"),
    ) -> None:
        self.auth_methods = auth_methods
        self.client_id = client_id
        self.secret = secret
        self.grant_types = grant_types
        self.redirect_uris = redirect_uris
        self.scope = scope
        self.user = user  # the mailbox an app-only (client credentials) token acts on

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        if not scope:
            return ""
        if not self.scope:
            return str(scope)
        allowed = set(self.scope.split())
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 8252 section 7.3: any port on the loopback address for native apps
        parts = urllib.parse.urlsplit(redirect_uri)
        return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and client_secret == self.secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.secret is None:
            return method == "none"
        return method in self.auth_methods

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


class Token(TokenMixin):
    """An issued token pair."""

    def __init__(self, data: dict[str, Any], client_id: str, user: str | None) -> None:
        self.access_token: str = data["access_token"]
        self.refresh_token: str | None = data.get("refresh_token")
        self.scope: str = data.get("scope", "")
        self.expires_in: int = int(data.get("expires_in", 0))
        self.issued_at = time.time()
        self.client_id = client_id
        self.user = user
        self.revoked = False

    def check_client(self, client: ClientMixin) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str | None:
        return self.user

    def get_client(self) -> ClientMixin:
        raise NotImplementedError


class AuthCode:
    """An authorization code (with its PKCE challenge)."""

    def __init__(self, code: str, client_id: str, redirect_uri: str, scope: str, user: str, request: Any) -> None:
        self.code = code
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.scope = scope
        self.user = user
        self.code_challenge = request.payload.data.get("code_challenge")
        self.code_challenge_method = request.payload.data.get("code_challenge_method")

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class _Request(OAuth2Request):
    def __init__(self, method: str, uri: str, headers: dict[str, str], form: dict[str, str]) -> None:
        super().__init__(method, uri, headers=headers)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(uri).query))
        self._args = query
        self._form = form
        self.payload = BasicOAuth2Payload({**query, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class OAuthServer:
    """The authorization server (see the module docstring). Stop it with :meth:`close`."""

    def __init__(self, *, expires_in: int = 3600) -> None:
        self.lock = threading.RLock()
        self.clients: dict[str, Client] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_index: dict[str, Token] = {}
        self.codes: dict[str, AuthCode] = {}
        self.devices: dict[str, DeviceCredentialDict] = {}
        self.device_grants: dict[str, tuple[str, bool]] = {}
        self.jwt_keys: dict[str, tuple[str, str]] = {}  # issuer -> (public PEM, allowed subject domain)
        self.expires_in = expires_in
        self.approve_as = "alice"
        self.down = False
        self.refreshes = 0
        self.reused_refresh_tokens = 0
        self.token_requests = 0
        self.introspections = 0
        self.add_client(*RESOURCE_CLIENT, grant_types=())
        self._server = self._authorization_server()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="oauth-test-server", daemon=True)
        self.thread.start()

    # -- public helpers ---------------------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def introspection_url(self) -> str:
        rs, secret = RESOURCE_CLIENT
        return f"http://{rs}:{secret}@127.0.0.1:{self.port}/introspect"

    def add_client(
        self,
        client_id: str,
        secret: str | None,
        *,
        grant_types: tuple[str, ...] = ("refresh_token", "client_credentials", "authorization_code"),
        scope: str = "",
        user: str | None = None,
        auth_methods: tuple[str, ...] = ("client_secret_basic", "client_secret_post"),
    ) -> Client:
        client = Client(client_id, secret, grant_types, scope=scope, user=user, auth_methods=auth_methods)
        with self.lock:
            self.clients[client_id] = client
        return client

    def issue_refresh_token(self, client_id: str, user: str, scope: str = "") -> str:
        """A refresh token for ``user`` as a completed interactive login would leave it."""
        data = {
            "access_token": generate_token(32),
            "refresh_token": generate_token(40),
            "expires_in": self.expires_in,
            "scope": scope,
            "token_type": "Bearer",
        }
        token = Token(data, client_id, user)
        with self.lock:
            self.tokens[token.access_token] = token
            self.refresh_index[data["refresh_token"]] = token
        return data["refresh_token"]

    def user_of(self, access_token: str) -> str | None:
        """The user an access token is valid for, or ``None`` (unknown, expired, revoked)."""
        with self.lock:
            token = self.tokens.get(access_token)
            if token is None or token.is_expired() or token.revoked:
                return None
            return token.user

    def revoke_all(self, user: str) -> None:
        """Revoke every token of ``user`` (an administrator signing the user out)."""
        with self.lock:
            for token in self.tokens.values():
                if token.user == user:
                    token.revoked = True

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now (refresh tokens stay valid)."""
        with self.lock:
            for token in self.tokens.values():
                token.issued_at = 0.0

    def approve_device(self, user_code: str, user: str | None = None, approved: bool = True) -> None:
        """The user entering ``user_code`` at the verification page and consenting (or not)."""
        with self.lock:
            self.device_grants[user_code] = (user or self.approve_as, approved)

    def pending_user_codes(self) -> list[str]:
        with self.lock:
            return [d["user_code"] for d in self.devices.values() if d["user_code"] not in self.device_grants]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- Authlib wiring ---------------------------------------------------------------------------------

    def _authorization_server(self) -> AuthorizationServer:
        owner = self

        class Server(AuthorizationServer):
            def query_client(self, client_id: str) -> Client | None:
                return owner.clients.get(client_id)

            def save_token(self, token: dict[str, Any], request: Any) -> None:
                user = request.user
                client = request.client
                if user is None and client is not None:
                    user = getattr(client, "user", None)
                record = Token(token, client.get_client_id(), user)
                with owner.lock:
                    owner.tokens[record.access_token] = record
                    if record.refresh_token:
                        owner.refresh_index[record.refresh_token] = record

            def create_oauth2_request(self, request: Any) -> OAuth2Request:
                return request  # type: ignore[no-any-return]

            def create_json_request(self, request: Any) -> Any:
                return request

            def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
                return status, body, headers

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                pass

        server = Server()
        server.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **kw: generate_token(32),
                refresh_token_generator=lambda **kw: generate_token(40),
                expires_generator=lambda client, grant_type: owner.expires_in,
            ),
        )

        class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = [  # noqa: RUF012
                "client_secret_basic",
                "client_secret_post",
                "none",
            ]

            def save_authorization_code(self, code: str, request: Any) -> None:
                owner.codes[code] = AuthCode(
                    code, request.client.get_client_id(), request.payload.redirect_uri, request.payload.scope or "",
                    request.user, request,
                )  # fmt: skip

            def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
                item = owner.codes.get(code)
                return item if item is not None and item.client_id == client.get_client_id() else None

            def delete_authorization_code(self, authorization_code: AuthCode) -> None:
                owner.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: AuthCode) -> str:
                return authorization_code.user

        class RefreshTokenGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = [  # noqa: RUF012
                "client_secret_basic",
                "client_secret_post",
                "none",
            ]
            INCLUDE_NEW_REFRESH_TOKEN = True  # rotation, like Microsoft Entra ID

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                with owner.lock:
                    owner.refreshes += 1
                    token = owner.refresh_index.get(refresh_token)
                    if token is not None and token.revoked:
                        owner.reused_refresh_tokens += 1
                        return None
                    return token

            def authenticate_user(self, refresh_token: Token) -> str | None:
                return refresh_token.user

            def revoke_old_credential(self, refresh_token: Token) -> None:
                with owner.lock:
                    refresh_token.revoked = True

        class ClientCredentialsGrant(grants.ClientCredentialsGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = [  # noqa: RUF012
                "client_secret_basic",
                "client_secret_post",
            ]

        class DeviceGrant(DeviceCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = [  # noqa: RUF012
                "client_secret_basic",
                "client_secret_post",
                "none",
            ]

            def query_device_credential(self, device_code: str) -> DeviceCredentialDict | None:
                return owner.devices.get(device_code)

            def query_user_grant(self, user_code: str) -> tuple[str, bool] | None:
                return owner.device_grants.get(user_code)

            def should_slow_down(self, credential: Any) -> bool:
                return False

        class DeviceEndpoint(DeviceAuthorizationEndpoint):
            INTERVAL = 1
            EXPIRES_IN = 120

            def get_verification_uri(self) -> str:
                return owner.url + "/device"

            def save_device_credential(self, client_id: str, scope: str, data: dict[str, Any]) -> None:
                owner.devices[data["device_code"]] = DeviceCredentialDict(
                    client_id=client_id, scope=scope, expires_at=int(time.time()) + self.EXPIRES_IN, **data
                )

        class Introspection(IntrospectionEndpoint):
            CLIENT_AUTH_METHODS = [  # noqa: RUF012
                "client_secret_basic",
                "client_secret_post",
            ]

            def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
                with owner.lock:
                    owner.introspections += 1
                    return owner.tokens.get(token_string) or owner.refresh_index.get(token_string)

            def introspect_token(self, token: Token) -> dict[str, Any]:
                return {
                    "active": True,
                    "client_id": token.client_id,
                    "token_type": "Bearer",
                    "username": token.user,
                    "sub": token.user,
                    "scope": token.scope,
                    "exp": int(token.issued_at + token.expires_in),
                    "iat": int(token.issued_at),
                }

            def check_permission(self, token: Token, client: Client, request: Any) -> bool:
                return client.get_client_id() == RESOURCE_CLIENT[0]

        class JWTGrant(JWTBearerGrant):
            def resolve_issuer_client(self, issuer: str) -> Client | None:
                return owner.clients.get(issuer)

            def resolve_client_public_key(self, client: Client) -> Any:
                from joserfc.jwk import RSAKey

                return RSAKey.import_key(owner.jwt_keys[client.get_client_id()][0])

            def authenticate_user(self, subject: str) -> str | None:
                domain = owner.jwt_keys.get(self.request.client.get_client_id(), ("", ""))[1]
                return subject if subject and subject.endswith("@" + domain) else None

            def has_granted_permission(self, client: Client, user: str) -> bool:
                return True

            def get_audiences(self) -> list[str]:
                return [owner.token_url]

        server.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=True)])
        server.register_grant(RefreshTokenGrant)
        server.register_grant(ClientCredentialsGrant)
        server.register_grant(DeviceGrant)
        server.register_grant(JWTGrant)
        server.register_endpoint(DeviceEndpoint(server))
        server.register_endpoint(Introspection(server))
        return server

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        return {
            "issuer": self.url,
            "token_endpoint": self.token_url,
            "authorization_endpoint": self.url + "/authorize",
            "device_authorization_endpoint": self.url + "/devicecode",
            "introspection_endpoint": self.url + "/introspect",
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": [
                "authorization_code", "refresh_token", "client_credentials",
                "urn:ietf:params:oauth:grant-type:device_code", JWTBearerGrant.GRANT_TYPE,
            ],
        }  # fmt: skip

    def add_service_account(self, client_email: str, public_pem: str, domain: str) -> None:
        """Register a service account (JWT bearer issuer) allowed to act for users of ``domain``."""
        self.add_client(client_email, None, grant_types=(JWTBearerGrant.GRANT_TYPE,))
        self.jwt_keys[client_email] = (public_pem, domain)

    def _dispatch(self, method: str, path: str, uri: str, headers: dict[str, str], form: dict[str, str]) -> Any:
        request = _Request(method, uri, headers, form)
        if path == "/token":
            with self.lock:
                self.token_requests += 1
            return self._server.create_token_response(request)
        if path == "/devicecode":
            return self._server.create_endpoint_response(DeviceAuthorizationEndpoint.ENDPOINT_NAME, request)
        if path == "/introspect":
            return self._server.create_endpoint_response(IntrospectionEndpoint.ENDPOINT_NAME, request)
        if path == "/.well-known/oauth-authorization-server":  # RFC 8414 metadata
            return 200, self.metadata(), [("Content-Type", "application/json")]
        if path == "/authorize":
            grant = self._server.get_consent_grant(request, end_user=self.approve_as)
            return self._server.create_authorization_response(request, grant_user=self.approve_as, grant=grant)
        return 404, {"error": "not_found"}, [("Content-Type", "application/json")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def _run(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                form = dict(urllib.parse.parse_qsl(body)) if body else {}
                path = urllib.parse.urlsplit(self.path).path
                if owner.down:
                    self._send(503, {"error": "temporarily_unavailable"}, [])
                    return
                uri = f"http://127.0.0.1:{owner.port}{self.path}"
                headers = dict(self.headers.items())
                try:
                    status, payload, extra = owner._dispatch(method, path, uri, headers, form)
                except Exception as exc:  # an error page instead of a dead connection
                    self._send(500, {"error": "server_error", "error_description": type(exc).__name__}, [])
                    return
                self._send(status, payload, extra)

            def _send(self, status: int, payload: Any, headers: Any) -> None:
                data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
                raw = data.encode() if isinstance(data, str) else data
                self.send_response(status)
                sent_type = False
                for name, value in headers or []:
                    if name.lower() == "content-length":
                        continue
                    sent_type = sent_type or name.lower() == "content-type"
                    self.send_header(name, value)
                if not sent_type and status != 302:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                self._run("POST")

            def do_GET(self) -> None:
                self._run("GET")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
