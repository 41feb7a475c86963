r"""IMAP source: bulk UID fetches of the original bytes, acknowledgement after commit, bounded retries, IDLE.

The protocol work is plain `imaplib` (imap-tools, used for modified UTF-7 folder names, RFC 3501 section
5.1.3, neither keeps the original bytes nor leaves `\Seen` alone by default). The parts live in private
modules: `_imap_wire` (sequence sets, response parsing, IDLE), `_imap_login` (connect, authenticate,
select) and `_imap_ack` (what happens after a commit); this module is the session that ties them together.

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
import logging
import time
from collections.abc import Callable, Iterator

from ticketmail.sources import _imap_wire as wire
from ticketmail.sources._imap_ack import ImapSessionBase
from ticketmail.sources._imap_login import login, select
from ticketmail.sources._imap_wire import (
    FAIL_KEYWORD_PREFIX,
    QUARANTINE_KEYWORD,
    TRUNCATED_KEYWORD,
    fail_count,
    uid_set,
)
from ticketmail.sources.base import OversizeNotice, RawItem, SkipCallback, headers_only_message
from ticketmail.sources.config import MailboxConfig

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

_IDLE_MAX = 25 * 60.0  # RFC 2177: servers may log out an idle client after 29 minutes; re-IDLE well before
_POLL_STEP = 5.0  # polling fallback: NOOP interval


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


class ImapSession(ImapSessionBase):
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
        super().__init__(config, skip=skip, ack_batch=ack_batch, readonly=readonly)
        self.batch_size = max(1, batch_size)
        self.batch_bytes = max(1, batch_bytes)
        self.exists = 0
        self.oversized: list[OversizeNotice] = []
        self.acknowledged_skipped = 0
        self._backlog = False
        self._leftovers_checked = False
        self._last_candidates: list[int] = []  # the last fetch's search result (for pending())

    def __repr__(self) -> str:
        return f"ImapSession(mailbox={self.config.name!r}, uidvalidity={self.uidvalidity})"

    # --- connection -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, STARTTLS if configured, authenticate and select the folder (stage-named errors)."""
        cfg = self.config
        done = login(cfg)
        self._client, self.capabilities, self._secrets = done.client, done.capabilities, done.secrets
        self._select(cfg.folder)

    def _select(self, folder: str) -> None:
        selected = select(self.config, self.client, folder, readonly=self.readonly, secrets=self._secrets)
        self.exists = selected.exists
        self.uidvalidity = selected.uidvalidity
        self._keywords_ok = selected.keywords_ok

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

    def _candidates(self) -> list[int]:
        """Candidates of this fetch; with `oversize = "skip"` the oversize ones are reported and left out."""
        limit = self.config.max_message_size
        if limit is None or self.config.oversize != "skip":
            return self.search()
        big = self.search("LARGER", str(limit))
        if big:
            for uid, (size, flags) in sorted(self._fetch_meta(big).items()):
                self._oversize(uid, size, flags, limit)
        return self.search("SMALLER", str(limit + 1))

    def _select_uids(self, candidates: list[int], cap: int) -> list[int]:
        """Up to `cap` candidates to download; those `skip` reports committed are acknowledged instead."""
        selected: list[int] = []
        already: list[int] = []
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
        return selected

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        """Yield up to `limit` (default `max_per_run`) messages, oldest first, fetched in batches."""
        cap = self.config.max_per_run if limit is None else limit
        if cap <= 0:
            return
        self._queue_committed_leftovers()
        candidates = self._candidates()
        self._last_candidates = candidates
        selected = self._select_uids(candidates, cap)
        if selected:
            yield from self._download(selected)

    def _download(self, selected: list[int]) -> Iterator[RawItem]:
        """The selected messages in batches of `batch_size`/`batch_bytes`; oversize ones on their own."""
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

    def _fetch_meta(self, uids: list[int]) -> wire.Meta:
        data: list[object] = []
        with self._guard("fetch", "UID FETCH (RFC822.SIZE FLAGS)"):
            for chunk in wire.uid_chunks(uids):
                data += self._uid("FETCH", uid_set(chunk), "(UID RFC822.SIZE FLAGS)")
        return wire.parse_meta(data)

    def _fetch_bodies(self, uids: list[int], section: str) -> dict[int, bytes]:
        with self._guard("fetch", f"UID FETCH (BODY.PEEK[{section}])"):
            data = self._uid("FETCH", uid_set(uids), f"(UID BODY.PEEK[{section}])")
        return wire.parse_bodies(data)

    def _flush_batch(self, batch: list[int], meta: wire.Meta) -> Iterator[RawItem]:
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
                self._store(uid, "+FLAGS.SILENT", TRUNCATED_KEYWORD)
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
            for chunk in wire.uid_chunks(uids):
                data = self._uid("SEARCH", "UID", uid_set(chunk), *criteria)
                found.update(int(x) for x in (data[0] or b"").split())
        return found & set(uids)

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
        if "IDLE" not in self.capabilities:
            return self._poll_noop(deadline)
        if self._take_new_mail():  # news that arrived with the answers to earlier commands
            return True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._guard("fetch", "IDLE"):
                seen = wire.idle_wait(self.client, min(remaining, _IDLE_MAX))
            if seen.exists is not None:
                self.exists = seen.exists
            else:
                self.exists = max(0, self.exists - seen.expunged)
            if self._take_new_mail() or seen.exists is not None:
                return True

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
