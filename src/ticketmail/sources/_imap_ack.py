r"""The acknowledging half of an IMAP session: `after` actions, keeping truncated items, failure counting.

`ImapSession` (in `ticketmail.sources.imap`) builds on `ImapSessionBase`, which holds the connection
state and every command that changes the mailbox after a commit (see the module docstring there for the
rules: `seen`, `move:F`, `delete` with batched `UID EXPUNGE`, `$TmFailN` counting and quarantine).
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
from typing import Any

from ticketmail.errors import SourceError
from ticketmail.model import Provenance
from ticketmail.sources import _imap_wire as wire
from ticketmail.sources._imap_login import list_folders
from ticketmail.sources._net import server_text, translate
from ticketmail.sources.base import RawItem, SkipCallback
from ticketmail.sources.config import MailboxConfig

__all__ = ["ImapSessionBase"]

log = logging.getLogger("ticketmail.sources.imap")

_EXPUNGE_EVERY = 50


class ImapSessionBase:
    """Connection state and the commands run after a commit (internal base of `ImapSession`)."""

    def __init__(self, config: MailboxConfig, *, skip: SkipCallback | None, ack_batch: int, readonly: bool) -> None:
        self.config = config
        self.skip = skip
        self.ack_batch = max(1, ack_batch)
        self.readonly = readonly
        self.capabilities: frozenset[str] = frozenset()
        self.uidvalidity = 0
        self._client: imaplib.IMAP4 | None = None
        self._secrets: tuple[str, ...] = ()
        self._keywords_ok = True
        self._pending_expunge: list[int] = []
        self._pending_ack: list[int] = []
        self._created: set[str] = set()
        self._committed: set[int] = set()  # UIDs known committed in this session (saves ledger lookups)

    @property
    def client(self) -> imaplib.IMAP4:
        """The underlying imaplib client (for diagnostics; do not change the selected folder)."""
        if self._client is None:
            raise SourceError("IMAP session is not open", stage="fetch", mailbox=self.config.name)
        return self._client

    def _guard(self, stage: str, what: str) -> contextlib.AbstractContextManager[None]:
        return translate(self.config, stage, what, self._secrets)

    def _uid(self, *args: str) -> list[Any]:
        typ, data = self.client.uid(*args)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID {args[0]} answered {typ}: {server_text(data)}")
        return data

    def _store(self, uids: list[int] | int, change: str, flags: str) -> None:
        target = str(uids) if isinstance(uids, int) else wire.uid_set(uids)
        self._uid("STORE", target, change, f"({flags})")

    def _provenance(self, uid: int) -> Provenance:
        return Provenance(mailbox=self.config.name, kind="imap", key=f"{self.uidvalidity}:{uid}")

    def list_folders(self) -> list[str]:
        """Names of the folders on the server (raw modified-UTF-7 names)."""
        return list_folders(self.client)

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
            for chunk in wire.uid_chunks(uids):
                if action == "seen":
                    self._store(chunk, "+FLAGS.SILENT", "\\Seen")
                elif action == "move":
                    self._move(chunk, self.config.move_folder or "")
                else:
                    self._store(chunk, "+FLAGS.SILENT", "\\Deleted")
                    self._pending_expunge.extend(chunk)
                    if len(self._pending_expunge) >= _EXPUNGE_EVERY:
                        self._expunge()

    def _keep_uids(self, uids: list[int]) -> None:
        r"""Acknowledge truncated items without losing the original (see the module docstring)."""
        if not uids:
            return
        cfg = self.config
        with self._guard("ack", "keep a truncated message"):
            if cfg.after_action == "seen":
                self._store(uids, "+FLAGS.SILENT", "\\Seen")
                return
            try:
                self._move(uids, cfg.quarantine_folder)
            except imaplib.IMAP4.error:
                log.warning(
                    "mailbox %s: cannot move truncated UIDs %s to %r; flagging them",
                    cfg.name,
                    wire.uid_set(uids),
                    cfg.quarantine_folder,
                )
                self._store(uids, "+FLAGS.SILENT", f"\\Seen {wire.QUARANTINE_KEYWORD}")
                return
        log.info("mailbox %s: truncated UIDs %s kept in %r", cfg.name, wire.uid_set(uids), cfg.quarantine_folder)

    def _ensure_folder(self, folder: str) -> None:
        if folder in self._created:
            return
        typ, data = self.client.create(wire.quote_folder(folder))
        if typ != "OK" and b"ALREADYEXISTS" not in (data[0] or b"").upper() and folder not in self.list_folders():
            raise imaplib.IMAP4.error(f"cannot create folder {folder!r}: {server_text(data)}")
        self._created.add(folder)

    def _move(self, uids: list[int], folder: str) -> None:
        self._ensure_folder(folder)
        if "MOVE" in self.capabilities:
            self._uid("MOVE", wire.uid_set(uids), wire.quote_folder(folder))
            return
        self._uid("COPY", wire.uid_set(uids), wire.quote_folder(folder))
        self._store(uids, "+FLAGS.SILENT", "\\Deleted")
        self._pending_expunge.extend(uids)
        self._expunge()

    def _expunge(self) -> None:
        uids, self._pending_expunge = self._pending_expunge, []
        if not uids:
            return
        if "UIDPLUS" in self.capabilities:
            for chunk in wire.uid_chunks(uids):
                self._uid("EXPUNGE", wire.uid_set(chunk))
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
        count = wire.fail_count(item.flags) + 1
        cfg = self.config
        with self._guard("ack", "record failure"):
            if count >= cfg.max_retries or not self._keywords_ok:
                self._quarantine(uid, count)
                return
            old = [f for f in item.flags if wire.FAIL_RE.match(f)]
            if old:
                self._store(uid, "-FLAGS.SILENT", " ".join(old))
            self._store(uid, "+FLAGS.SILENT", f"{wire.FAIL_KEYWORD_PREFIX}{count}")
        log.info("mailbox %s: message %s failed (%d/%d)", cfg.name, item.provenance.key, count, cfg.max_retries)

    def _quarantine(self, uid: int, count: int) -> None:
        """Move a message to `quarantine_folder` (flag it `$TmQuarantined` where that fails)."""
        cfg = self.config
        if self._keywords_ok:
            self._store(uid, "+FLAGS.SILENT", f"{wire.FAIL_KEYWORD_PREFIX}{count}")
        try:
            self._move([uid], cfg.quarantine_folder)
        except imaplib.IMAP4.error:
            log.warning("mailbox %s: cannot move UID %d to %r; flagging it", cfg.name, uid, cfg.quarantine_folder)
            self._store(uid, "+FLAGS.SILENT", wire.QUARANTINE_KEYWORD)
            return
        log.warning(
            "mailbox %s: UID %d quarantined in %r after %d failures", cfg.name, uid, cfg.quarantine_folder, count
        )
