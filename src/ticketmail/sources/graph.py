r"""Microsoft Graph mailbox source: Exchange Online without IMAP, through the documented REST contract.

`protocol = "graph"` reads one folder of a user or shared mailbox (`mailbox = "support@contoso.com"`)
with the endpoints Microsoft documents for synchronising mail:

* **delta query** on the folder, `GET /users/{mailbox}/mailFolders/{folder}/messages/delta`: the first
  round lists every message, later rounds only what changed. A round is a chain of pages linked by
  `@odata.nextLink`; its last page carries `@odata.deltaLink`, the start of the next round;
* **the MIME of each message**, `GET /users/{mailbox}/messages/{id}/$value`, so the same
  `parse_email` applies as for IMAP; read as a stream and cut at `max_message_size`
  (`oversize = "skip"` leaves the message in the folder and reports it, `"headers"` ingests its header
  block with a note, as the IMAP source does);
* **acknowledgement after commit**: `after = "seen"` is `PATCH /messages/{id}` with `{"isRead": true}`,
  `"move:FOLDER"` is `POST /messages/{id}/move`, `"delete"` is `DELETE /messages/{id}` (to Deleted
  Items, like Outlook).

Exactly once, as with every source: the provenance key is the message's **immutable id** (every request
sends `Prefer: IdType="ImmutableId"`, so the id survives moves between folders), the pipeline's ledger
turns a redelivery into a duplicate, and a message is acknowledged only after its commit. The delta link is
persisted (`<state dir>/graph-<name>.json`, atomically) **only when a round is complete and every message
it handed over was committed and acknowledged**. A visit cut short by the cap or the time budget saves a
resume point instead (the `@odata.nextLink` of the first page with a message not yet acknowledged); after
a crash or a failure, the next visit replays the round from the last saved point, and the `skip` check
(`Pipeline.is_processed`) finishes the acknowledgement of what was already committed without downloading
it again. A delta link the service no longer accepts (`410 Gone`) restarts with a full round.

Throttling is honoured: `429`, `503` and `504` are retried after the `Retry-After` the service sent
(seconds or an HTTP date; exponential backoff without one), at most `6` times and never longer than 60 s
per wait, then the visit ends with a `throttled` error and the poller's backoff takes over. A `401`
gets one retry with a fresh token. `check` stages: `oauth` (token), `auth` (the service refuses the
token), `permission` (`403`: the app lacks `Mail.ReadWrite` or an application access policy excludes
the mailbox), `mailbox` (unknown mailbox), `folder` (unknown folder).

Needs the `oauth` extra (httpx), imported when a session opens.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import random
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticketmail.errors import ConfigError, SourceError, TicketmailError
from ticketmail.model import Provenance
from ticketmail.sources.base import OversizeNotice, RawItem, SkipCallback, headers_only_message
from ticketmail.sources.config import MailboxConfig

if TYPE_CHECKING:
    import httpx

    from ticketmail.sources.maildir import RetryCounter

__all__ = ["DEFAULT_GRAPH_URL", "GraphSession", "GraphSource", "check_graph"]

log = logging.getLogger(__name__)

DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
"""The public cloud's Graph endpoint (national clouds: set `graph_url`)."""

WELL_KNOWN_FOLDERS = frozenset(
    {
        "archive", "clutter", "conflicts", "conversationhistory", "deleteditems", "drafts", "inbox", "junkemail",
        "localfailures", "msgfolderroot", "outbox", "recoverableitemsdeletions", "scheduled", "searchfolders",
        "sentitems", "serverfailures", "syncissues",
    }
)  # fmt: skip
"""Graph's well-known folder names (case-insensitive; usable in place of a folder id)."""

_THROTTLED = (429, 503, 504)
_MAX_ATTEMPTS = 6
_MAX_WAIT = 60.0
_PAGE_SIZE = 50


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="@.")


class _Graph:
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
        self.user_path = f"{self.base}/users/{_quote(self.mailbox)}"
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
            "Prefer": f'IdType="ImmutableId", odata.maxpagesize={_PAGE_SIZE}',
            "Accept": "application/json",
        }
        if extra:
            headers.update(extra)
        return headers

    def _error(self, message: str, stage: str) -> SourceError:
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
                raise self._error(
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
                        raise self._error(
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
                    raise self._error(
                        f"Microsoft Graph refused the access token while {what} (401{_code(response)}); check "
                        "that the token is for Graph (scope https://graph.microsoft.com/...) and the tenant",
                        "auth",
                    )
                if response.status_code >= 500:
                    raise self._error(
                        f"Microsoft Graph failed while {what} (HTTP {response.status_code}{_code(response)})", stage
                    )
                try:
                    yield response
                except self.httpx.TransportError as exc:  # the body broke off (timeout, reset)
                    raise self._error(
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


def _code(response: httpx.Response) -> str:
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


class _DeltaState:
    """The persisted sync state of one mailbox folder (atomic JSON file, or memory without a state dir).

    `delta_link`: where the current round started (the previous round's `@odata.deltaLink`; `None`
    before the first complete round). `resume`: a `@odata.nextLink` of the current round before which
    every message was committed and acknowledged (a visit cut short by the cap or the budget continues
    there instead of replaying the round); `None` to start at `delta_link`.
    """

    def __init__(self, path: Path | None, key: str) -> None:
        self.path = path
        self.key = key
        self._memory: tuple[str | None, str | None] = (None, None)

    def load(self) -> tuple[str | None, str | None]:
        """`(delta_link, resume)`."""
        if self.path is None:
            return self._memory
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError):
            log.warning("unreadable Graph state %s; starting a full sync round", self.path)
            return None, None
        if not isinstance(data, dict) or data.get("key") != self.key:
            return None, None
        delta = data.get("delta_link")
        resume = data.get("resume")
        return (
            delta if isinstance(delta, str) and delta else None,
            resume if isinstance(resume, str) and resume else None,
        )

    def save(self, link: str | None, resume: str | None = None) -> None:
        if self.path is None:
            self._memory = (link, resume)
            return
        body = json.dumps({"key": self.key, "delta_link": link, "resume": resume, "updated_at": time.time()}).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(body)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise SourceError(
                f"cannot write the Graph sync state {self.path}: {exc.strerror or type(exc).__name__}",
                stage="state",
            ) from exc


class _Page:
    """One delta page of the current visit: its URL, the keys handed over, whether it was read to its end."""

    __slots__ = ("complete", "keys", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: set[str] = set()
        self.complete = True


class GraphSession:
    """One open Graph visit (see the module docstring). Made by `GraphSource.session`."""

    def __init__(self, source: GraphSource, graph: _Graph) -> None:
        self.source = source
        self.config = source.config
        self.graph = graph
        self.oversized: list[OversizeNotice] = []
        self.folder_id = ""
        self._destination: str | None = None
        self._outstanding: set[str] = set()
        self._dirty = False
        self._pending_delta: str | None = None
        self._total: int | None = None
        self._start_delta: str | None = None
        self._pages: list[_Page] = []
        self._acked: set[str] = set()
        self._after_last: str | None = None

    # -- setup ------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Resolve the folder (stages `mailbox`, `permission`, `folder`).

        A well-known folder name needs no request (the delta query's answer tells an unknown mailbox or a
        missing permission); other names are looked up by display name.
        """
        self.folder_id, info = self._resolve_folder(self.config.folder, stage="folder")
        total = info.get("totalItemCount") if isinstance(info, dict) else None
        self._total = total if isinstance(total, int) else None

    def describe(self) -> int | None:
        """For `check`: read the folder resource (its message count) and the first delta page.

        Raises:
            SourceError: `auth`, `permission`, `mailbox` or `folder`, as for a fetch.
        """
        count = self._total
        if count is None:
            status, data = self._get_folder(self._folder_url(self.folder_id), f"opening folder {self.config.folder!r}")
            if status in (403, 404):
                raise self._folder_error(status, self.config.folder, "folder", data)
            if status < 400 and isinstance(data, dict) and isinstance(data.get("totalItemCount"), int):
                count = data["totalItemCount"]
        status, page = self.graph.json("GET", self._initial_link(), what="reading the folder's changes (delta)")
        if status >= 400:
            raise self._folder_error(status, self.config.folder, "folder", page)
        if count is None and isinstance(page, dict) and isinstance(page.get("value"), list):
            count = len(page["value"])
        return count

    def _folder_url(self, segment: str) -> str:
        return f"{self.graph.user_path}/mailFolders/{_quote(segment)}"

    def _get_folder(self, url: str, what: str) -> tuple[int, Any]:
        return self.graph.json("GET", url + "?$select=id,displayName,totalItemCount,unreadItemCount", what=what)

    def _refused(self, status: int, what: str) -> SourceError:
        if status == 403:
            return self.graph._error(
                f"Microsoft Graph denied access to {self.graph.mailbox} while {what} (403): the app needs the "
                "Mail.ReadWrite permission (application or delegated) with admin consent, and an application "
                "access policy, if one is set, must include this mailbox",
                "permission",
            )
        return self.graph._error(f"Microsoft Graph answered HTTP {status} while {what}", "fetch")

    def _resolve_folder(self, folder: str, *, stage: str) -> tuple[str, Any]:
        """`(folder id or well-known name, folder resource or None)`; raises `mailbox`/`folder` errors."""
        name = folder.strip().strip("/")
        if name.lower() in WELL_KNOWN_FOLDERS:
            return name.lower(), None
        parent: str | None = None
        info: Any = None
        parts = [p for p in name.split("/") if p]
        if parts and parts[0].lower() in WELL_KNOWN_FOLDERS:  # "Inbox/Support": Inbox by its well-known name
            parent = parts.pop(0).lower()  # (display names are localized: "Posteingang", "Boîte de réception")
        for part in parts:
            where = f"{self._folder_url(parent)}/childFolders" if parent else f"{self.graph.user_path}/mailFolders"
            flt = urllib.parse.quote("displayName eq '" + part.replace("'", "''") + "'")
            url: str | None = f"{where}?$filter={flt}&$select=id,displayName,totalItemCount"
            match: Any = None
            for _page in range(50):  # a server that ignores $filter pages through every folder
                if url is None or match is not None:
                    break
                status, listing = self.graph.json("GET", url, what=f"looking up folder {part!r}")
                if status >= 400:
                    raise self._folder_error(status, name, stage, listing)
                values = listing.get("value") if isinstance(listing, dict) else None
                match = next(
                    (
                        v
                        for v in values or []
                        if isinstance(v, dict)
                        and isinstance(v.get("id"), str)
                        and str(v.get("displayName", "")).casefold() == part.casefold()
                    ),
                    None,
                )
                following = listing.get("@odata.nextLink") if isinstance(listing, dict) else None
                url = following if isinstance(following, str) and following else None
            if match is None:
                raise self._folder_error(404, name, stage)
            parent, info = match["id"], match
        if parent is None:  # an empty path
            raise self._folder_error(404, name, stage)
        return parent, info

    def _folder_error(self, status: int, name: str, stage: str, body: Any = None) -> SourceError:
        if status == 404 and _mailbox_missing(body):
            return self.graph._error(
                f"mailbox {self.graph.mailbox!r} was not found by Microsoft Graph (404{_body_code(body)}): check "
                "the address; a shared mailbox needs its own address, and the mailbox must be in Exchange Online",
                "mailbox",
            )
        if status == 404:
            return self.graph._error(
                f"folder {name!r} does not exist in mailbox {self.graph.mailbox!r} (use a well-known name such "
                "as Inbox, or the display-name path, e.g. 'Inbox/Support')",
                stage,
            )
        return self._refused(status, f"opening folder {name!r}")

    # -- fetch ------------------------------------------------------------------------------------------

    def _initial_link(self) -> str:
        return f"{self._folder_url(self.folder_id)}/messages/delta?$select=id,isRead,parentFolderId"

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        """Yield the messages of the current delta round not yet committed, at most `limit`."""
        stored, resume = self.source.delta.load()
        self._start_delta = stored
        link: str | None = resume or stored or self._initial_link()
        restarted = False
        handed = 0
        while link:
            status, page = self.graph.json("GET", link, what="reading the folder's changes (delta)")
            if resume is not None and link == resume and status in (400, 404, 410):  # a stale resume point
                log.info("graph %s: resume link no longer valid; replaying the round", self.config.name)
                resume = None
                link = stored or self._initial_link()
                continue
            if status == 410 and not restarted:  # the delta token expired: a full round (the ledger dedups)
                log.info("graph %s: delta link expired; starting a full round", self.config.name)
                restarted = True
                self._start_delta = None
                link = self._initial_link()
                continue
            if status in (403, 404):
                raise self._folder_error(status, self.config.folder, "folder", page)
            if status >= 400 or not isinstance(page, dict) or not isinstance(page.get("value", []), list):
                raise (
                    self._refused(status, "reading the folder's changes")
                    if status >= 400
                    else self.graph._error(
                        "Microsoft Graph sent a delta page that is not a JSON object with 'value'", "fetch"
                    )
                )
            current = _Page(link)
            self._pages.append(current)
            for entry in page.get("value", []):
                if not isinstance(entry, dict) or "@removed" in entry or not isinstance(entry.get("id"), str):
                    continue
                if limit is not None and handed >= limit:
                    self._dirty = True  # the round is not finished: keep the old delta link
                    current.complete = False
                    return
                item = self._item(entry, current)
                if item is None:
                    continue
                handed += 1
                self._outstanding.add(item.provenance.key)
                current.keys.add(item.provenance.key)
                yield item
            next_link = page.get("@odata.nextLink")
            if isinstance(next_link, str) and next_link:
                link = next_link
                self._after_last = next_link
                continue
            self._after_last = None
            delta = page.get("@odata.deltaLink")
            if not isinstance(delta, str) or not delta:
                raise self.graph._error("Microsoft Graph ended a delta round without @odata.deltaLink", "fetch")
            self._pending_delta = delta
            break
        self._settle_round()

    def _item(self, entry: dict[str, Any], page: _Page | None = None) -> RawItem | None:
        """The item for one delta entry, or `None` (already committed, not wanted, oversize-skipped)."""
        cfg = self.config
        message_id: str = entry["id"]
        provenance = Provenance(mailbox=cfg.name, kind="graph", key=message_id)
        is_read = entry.get("isRead") is True
        skip = self.source.skip
        if skip is not None and skip(provenance):
            # Committed earlier, acknowledgement lost (a crash) or a kept mailbox: finish it, no download.
            if not (cfg.after_action == "seen" and is_read):
                try:
                    self._apply_after(message_id)
                except SourceError:  # committed, acknowledgement still owed: keep this page for next time
                    self._dirty = True
                    if page is not None:
                        page.complete = False
            return None
        if cfg.fetch_mode == "unseen" and is_read:
            return None
        return self._download(message_id, provenance)

    def _download(self, message_id: str, provenance: Provenance) -> RawItem | None:
        cfg = self.config
        limit = cfg.max_message_size
        url = f"{self.graph.user_path}/messages/{_quote(message_id)}/$value"
        with self.graph.request("GET", url, what="downloading a message", stream=True) as response:
            if response.status_code == 404:  # deleted meanwhile: nothing to do
                return None
            if response.status_code >= 400:
                raise self._refused(response.status_code, "downloading a message")
            declared = response.headers.get("Content-Length", "")
            size = int(declared) if declared.isdigit() else 0
            if limit is not None and size > limit:
                head = self._read_head(response) if cfg.oversize == "headers" else b""
                return self._oversize(provenance, size, head)
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_bytes(65536):
                chunks.append(chunk)
                total += len(chunk)
                if limit is not None and total > limit:
                    data = b"".join(chunks)
                    return self._oversize(provenance, max(size, total), data if cfg.oversize == "headers" else b"")
            data = b"".join(chunks)
        return RawItem(data=data, provenance=provenance, size=len(data))

    @staticmethod
    def _read_head(response: httpx.Response, cap: int = 256 * 1024) -> bytes:
        got = b""
        for chunk in response.iter_bytes(65536):
            got += chunk
            if b"\r\n\r\n" in got or b"\n\n" in got or len(got) >= cap:
                break
        return got

    def _oversize(self, provenance: Provenance, size: int, head: bytes) -> RawItem | None:
        cfg = self.config
        limit = cfg.max_message_size or 0
        if cfg.oversize == "skip":
            self.oversized.append(OversizeNotice(provenance=provenance, size=size, limit=limit))
            log.warning("graph %s: message %s is larger than %d bytes; left in the folder",
                        cfg.name, provenance.key[-12:], limit)  # fmt: skip
            return None
        end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=len(head))
        note = (
            f"[ticketmail] This message ({size} bytes) is larger than the mailbox limit of {limit} bytes; only its "
            "header was imported. The original is still in the mailbox."
        )
        data = headers_only_message(head[:end], note, size)
        return RawItem(data=data, provenance=provenance, size=size, truncated=True, note=note)

    # -- acknowledge ------------------------------------------------------------------------------------

    def _destination_id(self) -> str:
        if self._destination is None:
            self._destination = self._ensure_folder(self.config.move_folder or "")
        return self._destination

    def _ensure_folder(self, name: str) -> str:
        """The id of folder `name` (a well-known name or a display-name path), created when missing.

        Like the IMAP source, a missing target of `after = "move:F"` (or the quarantine folder) is created:
        its last path segment under the folder its parents name (the top level for a single name).

        Raises:
            SourceError: `ack`: the folder could not be found nor created.
        """
        try:
            folder_id, _ = self._resolve_folder(name, stage="ack")
            return folder_id
        except SourceError as exc:
            if exc.stage != "ack":
                raise
        parts = [p for p in name.strip().strip("/").split("/") if p]
        parent_id = self._resolve_folder("/".join(parts[:-1]), stage="ack")[0] if len(parts) > 1 else None
        where = f"{self._folder_url(parent_id)}/childFolders" if parent_id else f"{self.graph.user_path}/mailFolders"
        status, data = self.graph.json(
            "POST", where, what=f"creating folder {name!r}", stage="ack", json_body={"displayName": parts[-1]}
        )
        if status == 409:  # created meanwhile by another worker
            return self._resolve_folder(name, stage="ack")[0]
        if status >= 400 or not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise self.graph._error(f"cannot create folder {name!r} (HTTP {status}{_body_code(data)})", "ack")
        folder_id = data["id"]
        log.info("graph %s: created folder %r", self.config.name, name)
        return str(folder_id)

    def _apply_after(self, message_id: str) -> None:
        cfg = self.config
        url = f"{self.graph.user_path}/messages/{_quote(message_id)}"
        action = cfg.after_action
        if action == "seen":
            status, _ = self.graph.json("PATCH", url, what="marking a message read", stage="ack",
                                        json_body={"isRead": True})  # fmt: skip
        elif action == "move":
            status, _ = self.graph.json("POST", url + "/move", what="moving a message", stage="ack",
                                        json_body={"destinationId": self._destination_id()})  # fmt: skip
        else:
            status, _ = self.graph.json("DELETE", url, what="deleting a message", stage="ack")
        if status == 404:  # already gone (moved or deleted by someone else): nothing left to acknowledge
            return
        if status >= 400:
            raise (
                self._refused(status, f"acknowledging a message ({action})")
                if status == 403
                else self.graph._error(
                    f"Microsoft Graph answered HTTP {status} while acknowledging a message ({action})", "ack"
                )
            )

    def acknowledge(self, item: RawItem) -> None:
        """Apply `after` to a committed message; the delta link advances once the round is all done."""
        self._apply_after(item.provenance.key)
        self._outstanding.discard(item.provenance.key)
        self._acked.add(item.provenance.key)
        retries = self.source.retries
        if retries is not None:
            retries.clear(item.provenance.key)
        self._settle_round()

    def release(self, item: RawItem, *, failed: bool) -> None:
        """Leave a message in the folder; the current round is replayed next visit (delta link kept)."""
        key = item.provenance.key
        self._outstanding.discard(key)
        self._dirty = True
        retries = self.source.retries
        if not failed or retries is None:
            return
        count = retries.increment(key)
        if count >= self.config.max_retries:
            self._quarantine(key, count)

    def _quarantine(self, message_id: str, count: int) -> None:
        cfg = self.config
        try:
            destination = self._ensure_folder(cfg.quarantine_folder)
        except SourceError:
            log.warning("graph %s: cannot find or create the quarantine folder; message left in place", cfg.name)
            return
        url = f"{self.graph.user_path}/messages/{_quote(message_id)}/move"
        status, _ = self.graph.json("POST", url, what="quarantining a message", stage="ack",
                                    json_body={"destinationId": destination})  # fmt: skip
        if status < 400:
            log.warning("graph %s: message failed %d times; moved to %s", cfg.name, count, cfg.quarantine_folder)
            if self.source.retries is not None:
                self.source.retries.clear(message_id)

    def _settle_round(self, *, closing: bool = False) -> None:
        """Persist the round's delta link when every message it handed over was committed and acknowledged.

        When the session closes with the round unfinished, the resume point is saved instead: the link of
        the first page with a message not yet acknowledged (or cut off by the cap), or the link after the
        last page when every page seen was done.
        """
        if self._pending_delta is not None and not self._outstanding and not self._dirty:
            self.source.delta.save(self._pending_delta)
            self._pending_delta = None
            self._pages.clear()
            return
        if not closing or not self._pages:
            return
        resume: str | None = self._after_last if self._pending_delta is None else None
        for page in self._pages:
            if not page.complete or page.keys - self._acked:
                resume = page.url
                break
        if resume is not None and resume != self._pages[0].url:
            self.source.delta.save(self._start_delta, resume)
        self._pages.clear()

    def pending(self) -> int | None:
        """Messages in the folder when the visit began (Graph's `totalItemCount`), if known."""
        return self._total

    def close(self) -> None:
        """Settle the round (the delta link, or the resume point) and close the HTTP client."""
        try:
            self._settle_round(closing=True)
        finally:
            self.graph.close()


class GraphSource:
    """A Microsoft Graph mailbox folder as a `Source`.

    Args:
        config: The mailbox (`protocol = "graph"`).
        skip: `skip(provenance)`: already committed (`Pipeline.is_processed`); see the module docstring.
        state_dir: Where the delta link (`graph-<name>.json`) and retry counters live; `None` keeps them
            in memory for the life of this object.
        client: An `httpx.Client` to use (tests, proxies); by default one per session.
        sleep: Waits for throttling (tests pass a fake).
    """

    def __init__(
        self,
        config: MailboxConfig,
        *,
        skip: SkipCallback | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from ticketmail.sources.maildir import RetryCounter

        if config.protocol != "graph":
            raise ConfigError(f"mailbox {config.name!r}: GraphSource needs protocol 'graph'", field="protocol")
        self.config = config
        self.name = config.name
        self.skip = skip
        self._client = client
        self._sleep = sleep
        state = Path(state_dir) if state_dir is not None else None
        mailbox = (config.mailbox or config.address or "").lower()
        key = f"{(config.graph_url or DEFAULT_GRAPH_URL).rstrip('/')}|{mailbox}|{config.folder}"
        self.delta = _DeltaState(state / f"graph-{_safe(config.name)}.json" if state else None, key)
        self.retries: RetryCounter | None = RetryCounter(
            state / f"retries-{_safe(config.name)}.json" if state is not None else None
        )

    def __repr__(self) -> str:
        return f"GraphSource({self.name!r})"

    @contextlib.contextmanager
    def session(self) -> Iterator[GraphSession]:
        """Open the mailbox (token, mailbox, folder); the delta link is settled when the session closes."""
        graph = _Graph(self.config, client=self._client, sleep=self._sleep)
        session = GraphSession(self, graph)
        try:
            session.open()
        except BaseException:
            graph.close()
            raise
        try:
            yield session
        finally:
            try:
                session.close()
            except TicketmailError:
                log.warning("graph %s: could not save the sync state", self.name, exc_info=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def _body_code(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return f": {code}" if isinstance(code, str) and code.isprintable() and len(code) < 80 else ""


def _mailbox_missing(body: Any) -> bool:
    """Whether a Graph 404 names the mailbox (`ErrorInvalidUser`, `MailboxNotEnabledForRESTAPI` ...)."""
    code = _body_code(body).lower()
    return any(word in code for word in ("user", "mailbox", "recipient"))


def check_graph(config: MailboxConfig) -> tuple[tuple[str, ...], int]:
    """For `ticketmail check`: open the folder, read its count and one delta page; nothing is changed."""
    source = GraphSource(config)
    with source.session() as session:
        return (), session.describe() or 0
