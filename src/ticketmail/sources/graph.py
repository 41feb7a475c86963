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
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticketmail.errors import ConfigError, SourceError, TicketmailError
from ticketmail.model import Provenance
from ticketmail.sources._graph_folders import WELL_KNOWN_FOLDERS, Folders
from ticketmail.sources._graph_http import (
    DEFAULT_GRAPH_URL,
    GraphClient,
    quote_segment,
)
from ticketmail.sources._graph_state import DeltaState, Page, safe_name
from ticketmail.sources.base import OversizeNotice, RawItem, SkipCallback, headers_only_message
from ticketmail.sources.config import MailboxConfig

if TYPE_CHECKING:
    import httpx

    from ticketmail.sources.maildir import RetryCounter

__all__ = ["DEFAULT_GRAPH_URL", "WELL_KNOWN_FOLDERS", "GraphSession", "GraphSource", "check_graph"]

log = logging.getLogger(__name__)


class GraphSession:
    """One open Graph visit (see the module docstring). Made by `GraphSource.session`."""

    def __init__(self, source: GraphSource, graph: GraphClient) -> None:
        self.source = source
        self.config = source.config
        self.graph = graph
        self.folders = Folders(graph)
        self.oversized: list[OversizeNotice] = []
        self.folder_id = ""
        self._destination: str | None = None
        self._outstanding: set[str] = set()
        self._dirty = False
        self._pending_delta: str | None = None
        self._total: int | None = None
        self._start_delta: str | None = None
        self._pages: list[Page] = []
        self._acked: set[str] = set()
        self._after_last: str | None = None

    # -- setup ------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Resolve the folder (stages `mailbox`, `permission`, `folder`).

        A well-known folder name needs no request (the delta query's answer tells an unknown mailbox or a
        missing permission); other names are looked up by display name.
        """
        self.folder_id, info = self.folders.resolve_folder(self.config.folder, stage="folder")
        total = info.get("totalItemCount") if isinstance(info, dict) else None
        self._total = total if isinstance(total, int) else None

    def describe(self) -> int | None:
        """For `check`: read the folder resource (its message count) and the first delta page.

        Raises:
            SourceError: `auth`, `permission`, `mailbox` or `folder`, as for a fetch.
        """
        count = self._total
        if count is None:
            status, data = self.folders.get_folder(
                self.folders.folder_url(self.folder_id), f"opening folder {self.config.folder!r}"
            )
            if status in (403, 404):
                raise self.folders.folder_error(status, self.config.folder, "folder", data)
            if status < 400 and isinstance(data, dict) and isinstance(data.get("totalItemCount"), int):
                count = data["totalItemCount"]
        status, page = self.graph.json("GET", self._initial_link(), what="reading the folder's changes (delta)")
        if status >= 400:
            raise self.folders.folder_error(status, self.config.folder, "folder", page)
        if count is None and isinstance(page, dict) and isinstance(page.get("value"), list):
            count = len(page["value"])
        return count

    # -- fetch ------------------------------------------------------------------------------------------

    def _initial_link(self) -> str:
        return f"{self.folders.folder_url(self.folder_id)}/messages/delta?$select=id,isRead,parentFolderId"

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
                raise self.folders.folder_error(status, self.config.folder, "folder", page)
            if status >= 400 or not isinstance(page, dict) or not isinstance(page.get("value", []), list):
                raise (
                    self.folders.refused(status, "reading the folder's changes")
                    if status >= 400
                    else self.graph.error(
                        "Microsoft Graph sent a delta page that is not a JSON object with 'value'", "fetch"
                    )
                )
            current = Page(link)
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
                raise self.graph.error("Microsoft Graph ended a delta round without @odata.deltaLink", "fetch")
            self._pending_delta = delta
            break
        self._settle_round()

    def _item(self, entry: dict[str, Any], page: Page | None = None) -> RawItem | None:
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
        url = f"{self.graph.user_path}/messages/{quote_segment(message_id)}/$value"
        with self.graph.request("GET", url, what="downloading a message", stream=True) as response:
            if response.status_code == 404:  # deleted meanwhile: nothing to do
                return None
            if response.status_code >= 400:
                raise self.folders.refused(response.status_code, "downloading a message")
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
            self._destination = self.folders.ensure_folder(self.config.move_folder or "")
        return self._destination

    def _apply_after(self, message_id: str) -> None:
        cfg = self.config
        url = f"{self.graph.user_path}/messages/{quote_segment(message_id)}"
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
                self.folders.refused(status, f"acknowledging a message ({action})")
                if status == 403
                else self.graph.error(
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
            destination = self.folders.ensure_folder(cfg.quarantine_folder)
        except SourceError:
            log.warning("graph %s: cannot find or create the quarantine folder; message left in place", cfg.name)
            return
        url = f"{self.graph.user_path}/messages/{quote_segment(message_id)}/move"
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
        self.delta = DeltaState(state / f"graph-{safe_name(config.name)}.json" if state else None, key)
        self.retries: RetryCounter | None = RetryCounter(
            state / f"retries-{safe_name(config.name)}.json" if state is not None else None
        )

    def __repr__(self) -> str:
        return f"GraphSource({self.name!r})"

    @contextlib.contextmanager
    def session(self) -> Iterator[GraphSession]:
        """Open the mailbox (token, mailbox, folder); the delta link is settled when the session closes."""
        graph = GraphClient(self.config, client=self._client, sleep=self._sleep)
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


def check_graph(config: MailboxConfig) -> tuple[tuple[str, ...], int]:
    """For `ticketmail check`: open the folder, read its count and one delta page; nothing is changed."""
    source = GraphSource(config)
    with source.session() as session:
        return (), session.describe() or 0
