r"""IMAP source: bulk UID fetches of the original bytes, acknowledgement after commit, bounded retries, IDLE.

The only module that imports imap-tools (for its IDLE manager and modified UTF-7 folder names, RFC 3501
section 5.1.3); the protocol work is plain `imaplib` because imap-tools neither keeps the original bytes nor
leaves `\Seen` alone by default.

How a session works (RFC 9051 / RFC 3501 references):

* Connect stage by stage (`ticketmail.sources._net`), STARTTLS when configured (RFC 3501 section 6.2.1),
  authenticate with LOGIN (AUTHENTICATE PLAIN for non-ASCII credentials) or SASL XOAUTH2, then SELECT the
  folder read-write and remember `UIDVALIDITY` (section 2.3.1.1): provenance keys are
  `"<uidvalidity>:<uid>"`, never sequence numbers, so a server renumbering invalidates old keys instead of
  silently pointing them at other messages.
* `fetch`: `UID SEARCH UNDELETED NOT KEYWORD $TmQuarantined` (+ `UNSEEN` in `unseen` mode), oldest
  first. UIDs the `skip` callable reports as already committed are acknowledged without download. Then one
  `UID FETCH <set> (RFC822.SIZE FLAGS)` for the selected UIDs, and the bodies with `BODY.PEEK[]` (PEEK:
  fetching must not set `\Seen`, section 6.4.5) in batches of up to `batch_size` messages or
  `batch_bytes` bytes: one round trip per batch, not per message. Oversize messages (`RFC822.SIZE` above
  `max_message_size`) are never downloaded whole: `skip` leaves them and records an
  `OversizeNotice`; `headers` fetches `BODY.PEEK[HEADER]`, flags the
  message `$TmTruncated` and yields a truncated item whose body is a note saying where the original stays.
* `acknowledge` (only after the pipeline committed): `seen` stores `\Seen`; `move:F` uses `UID MOVE`
  (RFC 6851) or `UID COPY` + `\Deleted` + expunge; `delete` stores `\Deleted` at once and expunges with
  `UID EXPUNGE` (RFC 4315 UIDPLUS) every few messages and at the end (plain `EXPUNGE` without UIDPLUS).
  A message flagged `\Deleted` is already committed, so a crash before the expunge loses nothing; the next
  session expunges such leftovers once the ledger (`skip`) confirms they were committed.
* A truncated item (`oversize = "headers"`) is never deleted or moved away as if processed, whatever
  `after` says: its original is the only full copy. With `after = "seen"` it is flagged `\Seen` and
  stays where it is; with `delete` or `move:F` it moves to `quarantine_folder` (flagged
  `$TmQuarantined` in place when that folder cannot be used). A committed item whose acknowledgement was
  lost is recognised as truncated by its `$TmTruncated` keyword or its size, and kept the same way.
* `release(failed=True)` counts failures in a keyword `$TmFail1` .. `$TmFailN` on the message itself
  (survives restarts and other hosts). At `max_retries` it is moved to `quarantine_folder` (created when
  missing), or, if that fails, flagged `$TmQuarantined` so fetch ignores it. Never deleted. Servers that
  cannot store keywords (`PERMANENTFLAGS` without `\*`) quarantine at the first failure.
* `wait_for_changes(timeout)`: IDLE (RFC 2177), re-issued at least every 25 minutes (the RFC's 29-minute
  server limit with margin); without IDLE a `NOOP` every few seconds (polling fallback).
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from imap_tools.errors import UnexpectedCommandStatusError
from imap_tools.imap_utf7 import utf7_encode
from imap_tools.mailbox import BaseMailBox

from ticketmail.errors import SourceError
from ticketmail.model import Provenance
from ticketmail.sources._net import (
    classify_tls_error,
    make_ssl_context,
    open_socket,
    scrub,
    server_text,
    translate,
)
from ticketmail.sources.base import OversizeNotice, RawItem, SkipCallback, headers_only_message
from ticketmail.sources.config import MailboxConfig
from ticketmail.sources.oauth import xoauth2_responder

__all__ = [
    "FAIL_KEYWORD_PREFIX",
    "QUARANTINE_KEYWORD",
    "TRUNCATED_KEYWORD",
    "ImapSession",
    "ImapSource",
    "fail_count",
    "headers_only_message",
    "uid_set",
]

log = logging.getLogger("ticketmail.sources.imap")

FAIL_KEYWORD_PREFIX = "$TmFail"
"""Keywords `$TmFail1` .. `$TmFailN` count processing failures on a message."""
QUARANTINE_KEYWORD = "$TmQuarantined"
"""Set on a message that reached `max_retries` but could not be moved to the quarantine folder."""
TRUNCATED_KEYWORD = "$TmTruncated"
"""Set on a message ingested headers-only (`oversize = "headers"`): it is kept, never deleted."""

_IDLE_MAX = 25 * 60.0  # RFC 2177: servers may log out an idle client after 29 minutes; re-IDLE well before
_POLL_STEP = 5.0  # polling fallback: NOOP interval
_EXPUNGE_EVERY = 50
_MAX_UIDS_PER_COMMAND = 500  # worst case "nnnnnnn," x 500 = 4 KB, under the strictest common line limits
_UID_RE = re.compile(rb"UID (\d+)")
_SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")
_FLAGS_RE = re.compile(rb"FLAGS \(([^)]*)\)")
_LIST_RE = re.compile(rb'^\([^)]*\) (?:NIL|"(?:[^"\\]|\\.)*") (.+)$')  # RFC 3501 section 7.2.2
_FAIL_RE = re.compile(r"^\$TmFail(\d+)$", re.IGNORECASE)


def uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP sequence set (RFC 3501 section 9, `sequence-set`): `1:3,7,9:10`."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _chunks(uids: list[int], size: int | None = None) -> Iterator[list[int]]:
    """Slices of `uids`, so no command line outgrows server limits (Dovecot: 64 KiB, others 8 KiB)."""
    size = size or _MAX_UIDS_PER_COMMAND
    for start in range(0, len(uids), size):
        yield uids[start : start + size]


def _quote(folder: str) -> str:
    encoded = utf7_encode(folder).decode("ascii")
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fail_count(flags: Iterable[str]) -> int:
    """The failure count recorded in `$TmFailN` keywords (the highest N, 0 when none)."""
    best = 0
    for flag in flags:
        m = _FAIL_RE.match(flag)
        if m:
            best = max(best, int(m.group(1)))
    return best


class _IMAP4(imaplib.IMAP4):
    """imaplib on a socket that `_net.open_socket` already connected (and maybe TLS-wrapped)."""

    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float) -> None:
        self._tm_sock = sock
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self._tm_sock


class _MailBox(BaseMailBox):
    """imap-tools facade over our client, used for IDLE only."""

    def __init__(self, client: imaplib.IMAP4) -> None:
        self._tm_client = client
        super().__init__()

    def _get_mailbox_client(self) -> imaplib.IMAP4:
        return self._tm_client


class ImapSource:
    """An IMAP mailbox (see the module docstring).

    Args:
        config: The mailbox (`protocol = "imap"`).
        skip: `skip(provenance) -> True` for items already committed (e.g. `Pipeline.is_processed`); they
            are acknowledged without being downloaded.
        batch_size: Messages per `UID FETCH` round trip.
        batch_bytes: Upper bound of message bytes per round trip.
        ack_batch: Acknowledgements sent together (1: each at once); see `ImapSession.acknowledge()`.
    """

    def __init__(
        self,
        config: MailboxConfig,
        *,
        skip: SkipCallback | None = None,
        batch_size: int = 100,
        batch_bytes: int = 16 * 1024 * 1024,
        ack_batch: int = 100,
    ) -> None:
        if config.protocol != "imap":
            raise ValueError(f"ImapSource needs protocol 'imap', got {config.protocol!r}")
        self.config = config
        self.name = config.name
        self.skip = skip
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.ack_batch = ack_batch

    def __repr__(self) -> str:
        return f"ImapSource(name={self.name!r}, host={self.config.host!r}, folder={self.config.folder!r})"

    @contextlib.contextmanager
    def session(self) -> Iterator[ImapSession]:
        """Connect, authenticate and select; logs out (after a final expunge) on exit."""
        session = ImapSession(
            self.config,
            skip=self.skip,
            batch_size=self.batch_size,
            batch_bytes=self.batch_bytes,
            ack_batch=self.ack_batch,
        )
        try:
            session.open()
            try:
                yield session
            except BaseException:
                with contextlib.suppress(Exception):  # committed items: still worth acknowledging
                    session.flush()
                raise
            session.flush()
        finally:
            session.close()


class ImapSession:
    r"""One authenticated IMAP connection with the folder selected. Obtain through `ImapSource.session()`.

    `readonly=True` opens the folder with `EXAMINE` (used by `check`): nothing, not even `\Recent`,
    changes; acknowledging is then refused by the server.

    Attributes:
        capabilities: Server capabilities after login (upper case), e.g. `{"IDLE", "MOVE", "UIDPLUS"}`.
        uidvalidity: The selected folder's UIDVALIDITY.
        exists: Message count of the folder at SELECT (updated by IDLE/NOOP).
        oversized: Messages left on the server by the `skip` oversize policy during this session.
        acknowledged_skipped: Items acknowledged without download because `skip` reported them committed.
    """

    def __init__(
        self,
        config: MailboxConfig,
        *,
        skip: SkipCallback | None = None,
        batch_size: int = 100,
        batch_bytes: int = 16 * 1024 * 1024,
        ack_batch: int = 100,
        readonly: bool = False,
    ) -> None:
        self.config = config
        self.skip = skip
        self.ack_batch = max(1, ack_batch)
        self.batch_size = max(1, batch_size)
        self.batch_bytes = max(1, batch_bytes)
        self.capabilities: frozenset[str] = frozenset()
        self.uidvalidity = 0
        self.exists = 0
        self.oversized: list[OversizeNotice] = []
        self.acknowledged_skipped = 0
        self._client: _IMAP4 | None = None
        self._keywords_ok = True
        self._pending_expunge: list[int] = []
        self._pending_ack: list[int] = []
        self._backlog = False
        self._idle_tag: bytes = b""
        self.readonly = readonly
        self._created: set[str] = set()
        self._secrets: tuple[str, ...] = ()
        self._leftovers_checked = False
        self._committed: set[int] = set()  # UIDs known committed in this session (saves ledger lookups)
        self._last_candidates: list[int] = []  # the last fetch's search result (for pending())

    def __repr__(self) -> str:
        return f"ImapSession(mailbox={self.config.name!r}, uidvalidity={self.uidvalidity})"

    # --- connection -----------------------------------------------------------------------------------

    @property
    def client(self) -> imaplib.IMAP4:
        """The underlying imaplib client (for diagnostics; do not change the selected folder)."""
        if self._client is None:
            raise SourceError("IMAP session is not open", stage="fetch", mailbox=self.config.name)
        return self._client

    def _guard(self, stage: str, what: str) -> contextlib.AbstractContextManager[None]:
        return translate(self.config, stage, what, self._secrets)

    def open(self) -> None:
        """Connect, STARTTLS if configured, authenticate and select the folder (stage-named errors)."""
        cfg = self.config
        ctx = make_ssl_context(cfg) if cfg.security != "none" else None
        sock = open_socket(cfg, ctx)
        with self._guard("protocol", "IMAP greeting"):
            self._client = _IMAP4(sock, cfg.host or "", cfg.effective_port, cfg.timeout)
        client = self._client
        if cfg.security == "starttls":
            if "STARTTLS" not in client.capabilities:
                raise SourceError(
                    f"{cfg.host}:{cfg.effective_port} does not offer STARTTLS; use security = 'ssl' with port 993, "
                    "or 'none' on a trusted network only",
                    stage="tls",
                    mailbox=cfg.name,
                )
            with self._guard("tls", "STARTTLS"):
                try:
                    client.starttls(ssl_context=ctx)
                except ssl.SSLError as exc:
                    raise classify_tls_error(exc, cfg) from exc
        self._authenticate(client)
        with self._guard("protocol", "CAPABILITY"):
            typ, data = client.capability()
            caps = data[0].decode("ascii", "replace").upper().split() if typ == "OK" and data and data[0] else []
            self.capabilities = frozenset(caps) | frozenset(c.upper() for c in client.capabilities)
        self._select(cfg.folder)

    def _authenticate(self, client: _IMAP4) -> None:
        cfg = self.config
        user = cfg.login
        if cfg.auth == "oauth2":
            token = cfg.access_token()
            self._secrets = (token.reveal(),)
            with self._guard("auth", "XOAUTH2 authentication"):
                try:
                    client.authenticate("XOAUTH2", xoauth2_responder(user, token))
                except imaplib.IMAP4.error as exc:
                    cfg.token_refused()  # the built-in OAuth2 lifecycle fetches a new token next time
                    raise self._auth_error(exc) from exc
            return
        password = cfg.secret().reveal()
        self._secrets = (password,)
        if "LOGINDISABLED" in client.capabilities:  # RFC 3501 section 6.2.3
            raise SourceError(
                f"{cfg.host}:{cfg.effective_port} refuses password login on an unencrypted connection: use "
                "security = 'starttls' (or 'ssl' with port 993)",
                stage="auth",
                mailbox=cfg.name,
            )
        with self._guard("auth", "login"):
            try:
                if user.isascii() and password.isascii():
                    client.login(user, password)
                else:  # RFC 4616 PLAIN carries UTF-8; LOGIN's quoted strings are ASCII in imaplib
                    plain = b"\0" + user.encode() + b"\0" + password.encode()
                    client.authenticate("PLAIN", lambda _challenge: plain)
            except imaplib.IMAP4.error as exc:
                raise self._auth_error(exc) from exc

    def _auth_error(self, exc: imaplib.IMAP4.error) -> SourceError:
        server = scrub(server_text(exc), self._secrets)
        how = "token" if self.config.auth == "oauth2" else "user name or password"
        return SourceError(
            f"authentication as {self.config.login!r} failed at {self.config.host}:{self.config.effective_port}: "
            f"check the {how} (server said: {server})",
            stage="auth",
            mailbox=self.config.name,
        )

    def _select(self, folder: str) -> None:
        client = self.client
        with self._guard("folder", f"SELECT {folder!r}"):
            typ, data = client.select(_quote(folder), readonly=self.readonly)
            if typ != "OK":
                names = self.list_folders()
                raise SourceError(
                    f"cannot select folder {folder!r}: {server_text(data)}; folders on the server: {', '.join(names)}",
                    stage="folder",
                    mailbox=self.config.name,
                )
            self.exists = int(data[0] or b"0")
            for name in ("EXISTS", "RECENT"):  # imaplib's select() reads them without popping
                client.untagged_responses.pop(name, None)
            _, uv = client.response("UIDVALIDITY")
            self.uidvalidity = int(uv[0]) if uv and uv[0] else 0
            _, perm = client.response("PERMANENTFLAGS")
            if perm and perm[0] is not None:
                self._keywords_ok = b"\\*" in perm[0]

    def list_folders(self) -> list[str]:
        """Names of the folders on the server (raw modified-UTF-7 names)."""
        typ, data = self.client.list()
        names: list[str] = []
        if typ == "OK":
            for line in data:
                m = _LIST_RE.match(line) if isinstance(line, bytes) else None
                if m:
                    name = m.group(1)
                    if name.startswith(b'"'):
                        name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
                    names.append(name.decode("ascii", "replace"))
        return names

    def close(self) -> None:
        """Log out (best effort, never raises)."""
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.logout()
        with contextlib.suppress(Exception):
            client.shutdown()

    # --- fetching -------------------------------------------------------------------------------------

    def _provenance(self, uid: int) -> Provenance:
        return Provenance(mailbox=self.config.name, kind="imap", key=f"{self.uidvalidity}:{uid}")

    def _uid(self, *args: str) -> list[Any]:
        typ, data = self.client.uid(*args)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID {args[0]} answered {typ}: {server_text(data)}")
        return data

    def search(self, *extra: str) -> list[int]:
        """UIDs of candidate messages, oldest first (see the module docstring for the criteria).

        With `oversize = "skip"` the server filters out messages over the limit (`SMALLER`, RFC 3501
        section 6.4.4), so a pile of oversize mail never eats the per-run cap; they are reported separately.
        """
        criteria = ["UNDELETED"]
        if self.config.fetch_mode == "unseen":
            criteria.append("UNSEEN")
        criteria += ["NOT", "KEYWORD", QUARANTINE_KEYWORD, *extra]
        with self._guard("fetch", "UID SEARCH"):
            data = self._uid("SEARCH", *criteria)
        return sorted(int(x) for x in (data[0] or b"").split())

    def pending(self) -> int:
        """Messages still waiting to be processed, as of the last `fetch()`'s `UID SEARCH`.

        No server round trip (so it never delays IDLE): the candidates of the last search, less those
        acknowledged, handed over and committed in this session, or reported committed by the ledger
        (`skip`). Oversize messages left by `oversize = "skip"` (reported in `oversized`) and
        quarantined ones were never candidates. Mail that arrived after that search is not counted yet.
        """
        candidates = self._last_candidates
        skip = self.skip
        if skip is None:
            return sum(1 for uid in candidates if uid not in self._committed)
        return sum(1 for uid in candidates if uid not in self._committed and not skip(self._provenance(uid)))

    def _queue_committed_leftovers(self) -> None:
        r"""Queue for expunge the messages a killed earlier run flagged `\Deleted` but never expunged.

        Once per session, and only with `UIDPLUS` (`UID EXPUNGE` removes exactly the UIDs named) and a
        `skip` callback: a `\Deleted` message is expunged only when the ledger says it was committed,
        so mail someone else flagged for deletion in a shared folder is left to its owner.
        """
        if self._leftovers_checked or self.readonly or self.skip is None:
            return
        self._leftovers_checked = True
        if self.config.after_action == "seen" or "UIDPLUS" not in self.capabilities:
            return
        with self._guard("fetch", "UID SEARCH DELETED"):
            data = self._uid("SEARCH", "DELETED", "NOT", "KEYWORD", QUARANTINE_KEYWORD)
        leftovers = [int(x) for x in (data[0] or b"").split()]
        self._pending_expunge.extend(uid for uid in leftovers if self.skip(self._provenance(uid)))

    def _skip_oversize(self) -> bool:
        return self.config.max_message_size is not None and self.config.oversize == "skip"

    def _report_oversize(self) -> None:
        limit = self.config.max_message_size or 0
        big = self.search("LARGER", str(limit))
        if not big:
            return
        for uid, (size, flags) in sorted(self._fetch_meta(big).items()):
            self._oversize(uid, size, flags, limit)

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        """Yield up to `limit` (default `max_per_run`) messages, oldest first, fetched in batches."""
        cap = self.config.max_per_run if limit is None else limit
        if cap <= 0:
            return
        self._queue_committed_leftovers()
        selected: list[int] = []
        already: list[int] = []
        if self._skip_oversize():
            self._report_oversize()
            candidates = self.search("SMALLER", str((self.config.max_message_size or 0) + 1))
        else:
            candidates = self.search()
        self._last_candidates = candidates
        self._backlog = False
        for index, uid in enumerate(candidates):
            if self.skip is not None and self.skip(self._provenance(uid)):
                already.append(uid)
                continue
            selected.append(uid)
            if len(selected) >= cap:
                self._backlog = index + 1 < len(candidates)
                break
        if already:
            self._committed.update(already)
            keep = self._committed_truncated(already)
            self._acknowledge_uids([uid for uid in already if uid not in keep])
            self._keep_uids(sorted(keep))
            self.acknowledged_skipped += len(already)
        if not selected:
            return
        meta = self._fetch_meta(selected)
        limit_size = self.config.max_message_size
        batch: list[int] = []
        batch_bytes = 0
        for uid in selected:
            if uid not in meta:  # expunged meanwhile
                continue
            size, flags = meta[uid]
            if limit_size is not None and size > limit_size:
                yield from self._flush_batch(batch, meta)
                batch, batch_bytes = [], 0
                item = self._oversize(uid, size, flags, limit_size)
                if item is not None:
                    yield item
                continue
            if batch and (len(batch) >= self.batch_size or batch_bytes + size > self.batch_bytes):
                yield from self._flush_batch(batch, meta)
                batch, batch_bytes = [], 0
            batch.append(uid)
            batch_bytes += size
        yield from self._flush_batch(batch, meta)

    def _fetch_meta(self, uids: list[int]) -> dict[int, tuple[int, tuple[str, ...]]]:
        data: list[Any] = []
        with self._guard("fetch", "UID FETCH (RFC822.SIZE FLAGS)"):
            for chunk in _chunks(uids):
                data += self._uid("FETCH", uid_set(chunk), "(UID RFC822.SIZE FLAGS)")
        meta: dict[int, tuple[int, tuple[str, ...]]] = {}
        for line in data:
            head = line[0] if isinstance(line, tuple) else line
            if not isinstance(head, bytes):
                continue
            m_uid, m_size = _UID_RE.search(head), _SIZE_RE.search(head)
            if m_uid and m_size:
                m_flags = _FLAGS_RE.search(head)
                flags = tuple(m_flags.group(1).decode("ascii", "replace").split()) if m_flags else ()
                meta[int(m_uid.group(1))] = (int(m_size.group(1)), flags)
        return meta

    def _fetch_bodies(self, uids: list[int], section: str) -> dict[int, bytes]:
        with self._guard("fetch", f"UID FETCH (BODY.PEEK[{section}])"):
            data = self._uid("FETCH", uid_set(uids), f"(UID BODY.PEEK[{section}])")
        bodies: dict[int, bytes] = {}
        pending: bytes | None = None  # a literal whose UID comes after it (some servers order it that way)
        for part in data:
            if isinstance(part, tuple):
                m = _UID_RE.search(part[0])
                if m:
                    bodies[int(m.group(1))] = part[1]
                    pending = None
                else:
                    pending = part[1]
            elif isinstance(part, bytes) and pending is not None:
                m = _UID_RE.search(part)
                if m:
                    bodies[int(m.group(1))] = pending
                pending = None
        return bodies

    def _flush_batch(self, batch: list[int], meta: dict[int, tuple[int, tuple[str, ...]]]) -> Iterator[RawItem]:
        if not batch:
            return
        bodies = self._fetch_bodies(batch, "")
        for uid in batch:
            data = bodies.get(uid)
            if data is None:  # expunged by another client between SEARCH and FETCH
                continue
            size, flags = meta[uid]
            yield RawItem(data=data, provenance=self._provenance(uid), size=size, flags=flags)

    def _oversize(self, uid: int, size: int, flags: tuple[str, ...], limit: int) -> RawItem | None:
        prov = self._provenance(uid)
        log.warning(
            "mailbox %s: message %s is %d bytes, over max_message_size %d", self.config.name, prov.key, size, limit
        )
        if self.config.oversize == "skip":
            self.oversized.append(OversizeNotice(provenance=prov, size=size, limit=limit))
            return None
        header = self._fetch_bodies([uid], "HEADER").get(uid)
        if header is None:
            return None
        if self._keywords_ok and not self.readonly:
            # Marked before processing, so a lost acknowledgement still finds it truncated (kept, not deleted).
            with self._guard("fetch", f"flag {TRUNCATED_KEYWORD}"):
                self._uid("STORE", str(uid), "+FLAGS.SILENT", f"({TRUNCATED_KEYWORD})")
        note = self._truncation_note(uid, size, limit)
        return RawItem(
            data=headers_only_message(header, note, size),
            provenance=prov,
            size=size,
            truncated=True,
            flags=flags,
            note=note,
        )

    def _truncation_note(self, uid: int, size: int, limit: int) -> str:
        cfg = self.config
        head = (
            f"This message was {size} bytes, over this mailbox's limit of {limit} bytes; only its headers were "
            "fetched. "
        )
        if cfg.after_action == "seen":
            return head + (
                f"The original remains on the server in folder {cfg.folder!r} of mailbox {cfg.name} (UID {uid})."
            )
        return head + (
            f"The original is kept on the server, not deleted: it moves from folder {cfg.folder!r} (UID {uid}) to "
            f"folder {cfg.quarantine_folder!r} of mailbox {cfg.name} (or, where that folder cannot be used, stays "
            f"in {cfg.folder!r} flagged {QUARANTINE_KEYWORD})."
        )

    def _committed_truncated(self, uids: list[int]) -> set[int]:
        """Which of these committed UIDs were ingested truncated (keyword, or size over the headers limit)."""
        limit = self.config.max_message_size
        if self.config.oversize != "headers" or limit is None:
            criteria: tuple[str, ...] = ("KEYWORD", TRUNCATED_KEYWORD)
        else:
            criteria = ("OR", "KEYWORD", TRUNCATED_KEYWORD, "LARGER", str(limit))
        found: set[int] = set()
        with self._guard("fetch", "UID SEARCH (truncated)"):
            for chunk in _chunks(uids):
                data = self._uid("SEARCH", "UID", uid_set(chunk), *criteria)
                found.update(int(x) for x in (data[0] or b"").split())
        return found & set(uids)

    def _keep_uids(self, uids: list[int]) -> None:
        r"""Acknowledge truncated items without losing the original (see the module docstring)."""
        if not uids:
            return
        cfg = self.config
        with self._guard("ack", "keep a truncated message"):
            if cfg.after_action == "seen":
                self._uid("STORE", uid_set(uids), "+FLAGS.SILENT", "(\\Seen)")
                return
            try:
                self._move(uids, cfg.quarantine_folder)
            except imaplib.IMAP4.error:
                log.warning(
                    "mailbox %s: cannot move truncated UIDs %s to %r; flagging them",
                    cfg.name,
                    uid_set(uids),
                    cfg.quarantine_folder,
                )
                self._uid("STORE", uid_set(uids), "+FLAGS.SILENT", f"(\\Seen {QUARANTINE_KEYWORD})")
                return
        log.info("mailbox %s: truncated UIDs %s kept in %r", cfg.name, uid_set(uids), cfg.quarantine_folder)

    # --- acknowledgement ------------------------------------------------------------------------------

    def acknowledge(self, item: RawItem) -> None:
        """Apply `after` (delete / move / seen) to a committed item.

        Acknowledgements are queued and sent as one `UID STORE`/`UID MOVE` with a UID set every
        `ack_batch` items, before IDLE and when the session ends (also when it ends with an exception).
        A truncated item is kept instead, at once (see the module docstring): never deleted or moved away.
        Deferring is safe because the item is already committed: a crash loses at most the pending
        acknowledgements, and the ledger turns their redelivery into `duplicate` outcomes that are
        acknowledged then. Errors of a deferred batch surface from the call that sends it (stage `ack`).
        """
        uid = self._uid_of(item)
        self._committed.add(uid)
        if item.truncated:
            self._keep_uids([uid])
            return
        self._pending_ack.append(uid)
        if len(self._pending_ack) >= self.ack_batch:
            self._send_acks()

    def _send_acks(self) -> None:
        uids, self._pending_ack = self._pending_ack, []
        if uids:
            self._acknowledge_uids(uids)

    def _uid_of(self, item: RawItem) -> int:
        validity, _, uid = item.provenance.key.partition(":")
        if item.provenance.mailbox != self.config.name or int(validity) != self.uidvalidity:
            raise SourceError(
                f"item {item.provenance.key} belongs to another mailbox or UIDVALIDITY (now {self.uidvalidity}); "
                "it will be fetched again",
                stage="ack",
                mailbox=self.config.name,
            )
        return int(uid)

    def _acknowledge_uids(self, uids: list[int]) -> None:
        action = self.config.after_action
        with self._guard("ack", f"acknowledge ({self.config.after})"):
            for chunk in _chunks(uids):
                if action == "seen":
                    self._uid("STORE", uid_set(chunk), "+FLAGS.SILENT", "(\\Seen)")
                elif action == "move":
                    self._move(chunk, self.config.move_folder or "")
                else:
                    self._uid("STORE", uid_set(chunk), "+FLAGS.SILENT", "(\\Deleted)")
                    self._pending_expunge.extend(chunk)
                    if len(self._pending_expunge) >= _EXPUNGE_EVERY:
                        self._expunge()

    def _ensure_folder(self, folder: str) -> None:
        if folder in self._created:
            return
        typ, data = self.client.create(_quote(folder))
        if typ != "OK" and b"ALREADYEXISTS" not in (data[0] or b"").upper() and folder not in self.list_folders():
            raise imaplib.IMAP4.error(f"cannot create folder {folder!r}: {server_text(data)}")
        self._created.add(folder)

    def _move(self, uids: list[int], folder: str) -> None:
        self._ensure_folder(folder)
        if "MOVE" in self.capabilities:
            self._uid("MOVE", uid_set(uids), _quote(folder))
            return
        self._uid("COPY", uid_set(uids), _quote(folder))
        self._uid("STORE", uid_set(uids), "+FLAGS.SILENT", "(\\Deleted)")
        self._pending_expunge.extend(uids)
        self._expunge()

    def _expunge(self) -> None:
        uids, self._pending_expunge = self._pending_expunge, []
        if not uids:
            return
        if "UIDPLUS" in self.capabilities:
            for chunk in _chunks(uids):
                self._uid("EXPUNGE", uid_set(chunk))
        else:  # RFC 3501 EXPUNGE also removes other \Deleted messages of the folder
            typ, data = self.client.expunge()
            if typ != "OK":
                raise imaplib.IMAP4.error(f"EXPUNGE answered {typ}: {server_text(data)}")

    def flush(self) -> None:
        """Send queued acknowledgements and expunge messages acknowledged with `delete`."""
        if self._client is None:
            return
        self._send_acks()
        if self._pending_expunge:
            with self._guard("ack", "UID EXPUNGE"):
                self._expunge()

    def release(self, item: RawItem, *, failed: bool) -> None:
        """Leave the message; on failure count it (`$TmFailN`) and quarantine it at `max_retries`."""
        if not failed:
            return
        uid = self._uid_of(item)
        count = fail_count(item.flags) + 1
        cfg = self.config
        with self._guard("ack", "record failure"):
            if count >= cfg.max_retries or not self._keywords_ok:
                self._quarantine(uid, count)
                return
            old = [f for f in item.flags if _FAIL_RE.match(f)]
            if old:
                self._uid("STORE", str(uid), "-FLAGS.SILENT", f"({' '.join(old)})")
            self._uid("STORE", str(uid), "+FLAGS.SILENT", f"({FAIL_KEYWORD_PREFIX}{count})")
        log.info("mailbox %s: message %s failed (%d/%d)", cfg.name, item.provenance.key, count, cfg.max_retries)

    def _quarantine(self, uid: int, count: int) -> None:
        cfg = self.config
        if self._keywords_ok:
            self._uid("STORE", str(uid), "+FLAGS.SILENT", f"({FAIL_KEYWORD_PREFIX}{count})")
        try:
            self._move([uid], cfg.quarantine_folder)
        except imaplib.IMAP4.error:
            log.warning("mailbox %s: cannot move UID %d to %r; flagging it", cfg.name, uid, cfg.quarantine_folder)
            self._uid("STORE", str(uid), "+FLAGS.SILENT", f"({QUARANTINE_KEYWORD})")
            return
        log.warning(
            "mailbox %s: UID %d quarantined in %r after %d failures", cfg.name, uid, cfg.quarantine_folder, count
        )

    # --- waiting --------------------------------------------------------------------------------------

    def wait_for_changes(self, timeout: float) -> bool:
        """Block up to `timeout` s until new mail arrives: IDLE when offered, else NOOP polling.

        Returns true at once when the last `fetch()` stopped at its limit with more messages waiting
        (a backlog is not "no changes").
        """
        self.flush()
        if self._backlog:
            self._backlog = False
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        if "IDLE" in self.capabilities:
            mailbox = _MailBox(self.client)
            if self._take_new_mail():  # news that arrived with the answers to earlier commands
                return True
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with self._guard("fetch", "IDLE"):
                    try:
                        if self._idle_start():
                            lines = mailbox.idle.poll(timeout=min(remaining, _IDLE_MAX))
                            self.client.send(b"DONE\r\n")
                            mailbox.consume_until_tagged_response(self._idle_tag)
                        else:  # news arrived before the server confirmed IDLE: leave IDLE at once
                            self.client.send(b"DONE\r\n")
                            mailbox.consume_until_tagged_response(self._idle_tag)
                            lines = []
                    except UnexpectedCommandStatusError as exc:
                        raise imaplib.IMAP4.error(f"IDLE failed: {server_text(exc)}") from exc
                changed = any(b"EXISTS" in x for x in lines)
                if self._take_new_mail() or changed:
                    return True
        return self._poll_noop(deadline)

    def _idle_start(self) -> bool:
        """Send IDLE; read until the continuation. False when new-mail notifications came first."""
        client: Any = self.client  # imaplib's command plumbing is private but stable (imap-tools uses it too)
        self._idle_tag = client._command("IDLE")
        news = False
        while True:
            resp = client._get_response()
            if resp is None:  # "+ idling": IDLE is active
                return not news
            if client.tagged_commands.get(self._idle_tag):
                typ, data = client.tagged_commands.pop(self._idle_tag)
                raise imaplib.IMAP4.error(f"IDLE refused: {typ} {server_text(data)}")
            if b"EXISTS" in resp:
                news = True

    def _take_new_mail(self) -> bool:
        """Pop the EXISTS/RECENT/EXPUNGE notifications imaplib stored; true when an EXISTS came.

        In the selected folder only new mail produces `EXISTS` (our own expunges and moves produce
        `EXPUNGE`), so any `EXISTS` means "fetch again"; a false alarm costs one cheap SEARCH.
        """
        responses = self.client.untagged_responses
        responses.pop("RECENT", None)
        expunged = responses.pop("EXPUNGE", None) or []
        values = responses.pop("EXISTS", None) or []
        counts = [int(v) for v in values if isinstance(v, bytes) and v.isdigit()]
        if counts:
            self.exists = counts[-1]
        else:
            self.exists = max(0, self.exists - len(expunged))
        return bool(counts)

    def _poll_noop(
        self, deadline: float, step: float = _POLL_STEP, sleep: Callable[[float], None] = time.sleep
    ) -> bool:
        while True:
            with self._guard("fetch", "NOOP"):
                self.client.noop()
            if self._take_new_mail():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sleep(min(step, remaining))
