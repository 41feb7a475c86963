"""A small Microsoft Graph HTTP client: bearer token, `Prefer` headers, throttling, one token refresh on 401.

Errors become `SourceError`s naming the stage (`connect`, `auth`, `throttled`, or the caller's); Graph
error bodies contribute their `code` only, never their message (it may quote request data).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ticketmail.errors import ConfigError, SourceError
from ticketmail.sources.config import MailboxConfig

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_GRAPH_URL", "GraphClient", "body_code", "error_code", "mailbox_missing", "quote_segment"]

log = logging.getLogger("ticketmail.sources.graph")

DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
"""The public cloud's Graph endpoint (national clouds: set `graph_url`)."""

_THROTTLED = (429, 503, 504)
_MAX_ATTEMPTS = 6
_MAX_WAIT = 60.0
PAGE_SIZE = 50


def quote_segment(value: str) -> str:
    return urllib.parse.quote(value, safe="@.")


class GraphClient:
    """A small Graph client: auth header, `Prefer`, throttling, token refresh on 401, error mapping."""

    def __init__(
        self,
        config: MailboxConfig,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - exercised without the extra only
            raise ConfigError(
                "protocol 'graph' needs the 'oauth' extra (httpx is not installed): pip install 'ticketmail[oauth]'",
                field="protocol",
            ) from exc
        self.httpx = httpx
        self.config = config
        self.base = (config.graph_url or DEFAULT_GRAPH_URL).rstrip("/")
        self.mailbox = config.mailbox or config.address or ""
        self.user_path = f"{self.base}/users/{quote_segment(self.mailbox)}"
        verify: Any = True
        if config.ca_file:
            import ssl

            verify = ssl.create_default_context(cafile=config.ca_file)
        self.client = client or httpx.Client(timeout=config.timeout, verify=verify, trust_env=True)
        self._own_client = client is None
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._token: str | None = None
        self.requests = 0
        self.throttled = 0

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        if self._token is None:
            self._token = self.config.access_token().reveal()
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Prefer": f'IdType="ImmutableId", odata.maxpagesize={PAGE_SIZE}',
            "Accept": "application/json",
        }
        if extra:
            headers.update(extra)
        return headers

    def error(self, message: str, stage: str) -> SourceError:
        return SourceError(f"mailbox {self.config.name!r}: {message}", stage=stage, mailbox=self.config.name)

    def _wait(self, response: httpx.Response, attempt: int) -> float:
        value = response.headers.get("Retry-After", "").strip()
        delay: float | None = None
        if value.isdigit():
            delay = float(value)
        elif value:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                when = email.utils.parsedate_to_datetime(value)
                delay = max(0.0, when.timestamp() - time.time())
        if delay is None:  # no hint: exponential backoff with jitter (Microsoft's advice)
            delay = min(_MAX_WAIT, 2.0**attempt) * (0.5 + self._rng.random() / 2)
        return min(_MAX_WAIT, delay)

    @contextlib.contextmanager
    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        stage: str = "fetch",
        json_body: Any = None,
        stream: bool = False,
    ) -> Iterator[httpx.Response]:
        """Send a request (throttling and one token refresh handled); yield the response (any status < 500).

        Raises:
            SourceError: Transport failure (`connect`), 401 twice (`auth`), throttled past the limit
                (`throttled`), server errors (`stage`).
        """
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            try:
                request = self.client.build_request(method, url, headers=self._headers(), json=json_body)
                response = self.client.send(request, stream=stream)
            except self.httpx.TransportError as exc:
                raise self.error(
                    f"cannot reach Microsoft Graph at {urllib.parse.urlsplit(self.base).netloc} while {what} "
                    f"({type(exc).__name__}); check the network, proxy and graph_url",
                    "connect",
                ) from None
            try:
                if response.status_code == 401 and not refreshed:
                    refreshed = True
                    response.close()
                    self.config.token_refused()
                    self._token = None
                    continue
                if response.status_code in _THROTTLED:
                    if attempt >= _MAX_ATTEMPTS:
                        raise self.error(
                            f"Microsoft Graph kept throttling ({response.status_code}) while {what}; "
                            f"gave up after {attempt} attempts, the next visit resumes",
                            "throttled",
                        )
                    delay = self._wait(response, attempt)
                    response.close()
                    self.throttled += 1
                    log.info("graph %s: throttled (%s) while %s; waiting %.1fs", self.config.name,
                             response.status_code, what, delay)  # fmt: skip
                    self._sleep(delay)
                    continue
                if response.status_code == 401:
                    raise self.error(
                        f"Microsoft Graph refused the access token while {what} (401{error_code(response)}); check "
                        "that the token is for Graph (scope https://graph.microsoft.com/...) and the tenant",
                        "auth",
                    )
                if response.status_code >= 500:
                    raise self.error(
                        f"Microsoft Graph failed while {what} (HTTP {response.status_code}{error_code(response)})",
                        stage,
                    )
                try:
                    yield response
                except self.httpx.TransportError as exc:  # the body broke off (timeout, reset)
                    raise self.error(
                        f"the connection to Microsoft Graph broke while {what} ({type(exc).__name__})", "connect"
                    ) from None
                return
            finally:
                response.close()

    def json(self, method: str, url: str, *, what: str, stage: str = "fetch", json_body: Any = None) -> tuple[int, Any]:
        """`(status, parsed JSON or None)` of a request."""
        with self.request(method, url, what=what, stage=stage, json_body=json_body) as response:
            response.read()
            try:
                data = response.json() if response.content else None
            except ValueError:
                data = None
            return response.status_code, data


def error_code(response: httpx.Response) -> str:
    """`": ErrorCode"` from a Graph error body (never its message: it may quote request data)."""
    try:
        if not response.is_stream_consumed:
            response.read()
        data = response.json()
    except Exception:
        return ""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = data["error"].get("code")
        if isinstance(code, str) and code.isprintable() and len(code) < 80:
            return f": {code}"
    return ""


def body_code(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return f": {code}" if isinstance(code, str) and code.isprintable() and len(code) < 80 else ""


def mailbox_missing(body: Any) -> bool:
    """Whether a Graph 404 names the mailbox (`ErrorInvalidUser`, `MailboxNotEnabledForRESTAPI` ...)."""
    code = body_code(body).lower()
    return any(word in code for word in ("user", "mailbox", "recipient"))
