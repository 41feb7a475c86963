"""An mbox file as a mailbox source (stdlib `mailbox`), acknowledging after commit.

An mbox is one file that an MTA (or procmail) appends to. Removing or changing a message means rewriting
the file, so the session holds the mailbox lock for its whole duration, as mail clients do: `lockf` plus a
`.lock` dot file (the stdlib's `mailbox.mbox.lock()`, the convention of Debian's `/var/mail`). An MTA
delivering meanwhile waits or retries; the poller's per-visit cap and time budget keep that short. We write
our pid into the dot lock; a dot lock whose pid is dead (a run killed by `SIGKILL`), or older than
`stale_lock_after` seconds (default 300, as procmail/mutt assume), is stale and removed.

Semantics (`after`):

`delete`
    the message is removed from the file.
`seen`
    the message keeps its place and gets `Status: RO` (the mbox status header of mutt/Thunderbird/
    Dovecot); unseen fetching (the default for `seen`) skips messages whose `Status` has `R`.
`move:NAME`
    the message is appended to the sibling mbox `<file>.<NAME>` (created if missing), then removed.

All changes are written by one rewrite when the session ends (also when it ends by an error: every change
recorded belongs to a committed item): the kept messages, byte for byte (`seen` ones with their new
`Status` header), go to a temporary file in the same directory, which is fsynced and renamed over the old
one. Nothing is written to the live file before that rename (the stdlib's `mbox[key] = msg` would append a
copy at once, which a crash would leave behind), so a crash, even `SIGKILL`, leaves either the old or the
new file. A crash before the rename only loses the session's acknowledgements: the items are fetched again,
`skip(provenance)` or the pipeline's ledger recognises them, and each still has exactly one effect. Bytes
that a writer ignoring the lock appended meanwhile are carried over.

Provenance: mbox keys are positions and change on rewrite, so the key is a content hash: the SHA-256 of the
message without its `Status`/`X-Status` headers (which `seen` changes), plus `#n` for the n-th
byte-identical copy in the file.

There is deliberately no `wait_for_changes`: a session holds the lock, and waiting with it would keep the
MTA from delivering. A worker polls mbox mailboxes every `poll_interval`.

Failures are counted in the same retry file as Maildir's; after `max_retries` the item is moved to the
sibling mbox `<file>.<quarantine_folder>`.
"""

from __future__ import annotations

import contextlib
import hashlib
import mailbox
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ticketmail.errors import SourceError
from ticketmail.model import Provenance
from ticketmail.sources.base import OversizeNotice, RawItem, SkipCallback, headers_only_message
from ticketmail.sources.maildir import LocalFolderSource, RetryCounter

__all__ = ["MboxSession", "MboxSource", "mbox_key"]

_STATUS_LINE = re.compile(rb"^(?:X-)?Status:[^\n]*\n", re.IGNORECASE | re.MULTILINE)


def mbox_key(data: bytes) -> str:
    """The content key of a message: SHA-256 (32 hex digits) of its header block without status headers."""
    head, sep, body = data.partition(b"\n\n")
    head = _STATUS_LINE.sub(b"", head + b"\n")
    return hashlib.sha256(head + sep + body).hexdigest()[:32]


def _status(data: bytes) -> str:
    head = data.partition(b"\n\n")[0]
    for match in re.finditer(rb"^Status:([^\n]*)", head, re.IGNORECASE | re.MULTILINE):
        return match.group(1).decode("ascii", "replace").strip()
    return ""



_EMPTY_DOT_GRACE = 2.0
"""Seconds an empty dot lock may be young before it counts as left by a killed run."""


def _kernel_locked(path: Path) -> bool:
    """Whether another process holds a `lockf` lock on `path` (probed without blocking, then released)."""
    import fcntl  # POSIX only, like the mbox locking itself

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class MboxSource(LocalFolderSource):
    """An mbox file read as a mailbox (see the module docstring for the semantics).

    Args mirror `MaildirSource`, plus `stale_lock_after` and
    `lock_timeout` (seconds to keep retrying a lock held by a delivering MTA).
    """

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        after: str = "seen",
        fetch: str = "auto",
        skip: SkipCallback | None = None,
        max_retries: int = 5,
        quarantine_folder: str = "Quarantine",
        retries: RetryCounter | None = None,
        max_message_size: int | None = None,
        oversize: str = "skip",
        lock_timeout: float = 10.0,
        stale_lock_after: float = 300.0,
    ) -> None:
        super().__init__(
            name,
            path,
            after=after,
            fetch=fetch,
            skip=skip,
            max_retries=max_retries,
            quarantine_folder=quarantine_folder,
            retries=retries,
            max_message_size=max_message_size,
            oversize=oversize,
        )
        self.lock_timeout = lock_timeout
        self.stale_lock_after = stale_lock_after

    def sibling(self, folder: str) -> Path:
        """The mbox file that `move:folder` / quarantine append to."""
        return self.path.with_name(f"{self.path.name}.{folder}")

    def _lock(self, box: mailbox.mbox, path: Path) -> None:
        deadline = time.monotonic() + self.lock_timeout
        dot = Path(f"{path}.lock")
        while True:
            try:
                box.lock()
            except mailbox.ExternalClashError as exc:
                if self._stale(dot, path):
                    with contextlib.suppress(FileNotFoundError):
                        dot.unlink()
                    continue
                if time.monotonic() >= deadline:
                    raise SourceError(
                        f"{path} is locked by another program (an MTA delivering?); try again later",
                        stage="lock",
                        mailbox=self.name,
                    ) from exc
                time.sleep(0.1)
            except OSError as exc:
                raise SourceError(f"cannot lock {path}: {exc.strerror}", stage="lock", mailbox=self.name) from exc
            else:
                # Record our pid in the dot lock (as liblockfile does) so that a run killed with SIGKILL,
                # whose kernel lock vanished with it, does not block the mailbox for stale_lock_after.
                with contextlib.suppress(OSError):
                    dot.write_text(f"{os.getpid()}\n", encoding="ascii")
                return

    def _stale(self, dot: Path, path: Path) -> bool:
        """A dot lock left by a dead process (its pid inside) or older than `stale_lock_after`.

        An empty dot lock is what a run killed between creating it and writing its pid leaves: it is stale
        once it is a few seconds old and nobody holds the mailbox's kernel lock (every locking MTA takes
        both, so a delivery in progress still holds that one).
        """
        try:
            age = time.time() - dot.stat().st_mtime
            text = dot.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return False
        if age > self.stale_lock_after:
            return True
        if not text:
            return age > _EMPTY_DOT_GRACE and not _kernel_locked(path)
        if text.isdigit():
            try:
                os.kill(int(text), 0)
            except ProcessLookupError:
                return True  # its owner is gone
            except OSError:
                return False  # alive (another user's process)
        return False

    @contextlib.contextmanager
    def session(self) -> Iterator[MboxSession]:
        """Open and lock the mbox; flush the acknowledgements and unlock at the end."""
        if not self.path.is_file():
            raise SourceError(f"{self.path} does not exist or is not a file", stage="folder", mailbox=self.name)
        try:
            box = mailbox.mbox(self.path, create=False)
        except OSError as exc:
            raise SourceError(f"cannot open {self.path}: {exc.strerror}", stage="folder", mailbox=self.name) from exc
        try:
            self._lock(box, self.path)
            session = MboxSession(self, box)
            try:
                yield session
            finally:
                session.flush()
        finally:
            with contextlib.suppress(OSError):
                box.unlock()
            box.close()

    def __repr__(self) -> str:
        return f"MboxSource(name={self.name!r}, path={str(self.path)!r}, after={self.after!r})"


class MboxSession:
    """A locked mbox: yields waiting messages, records acknowledgements, rewrites the file at the end."""

    def __init__(self, source: MboxSource, box: mailbox.mbox) -> None:
        self.source = source
        self.box = box
        self.oversized: list[OversizeNotice] = []
        # provenance key -> mailbox key. typeshed types mbox keys as str; at run time they are ints, and they must
        # be passed back unchanged (never str()-ed): the stdlib looks them up in a dict.
        self._keys: dict[str, str] = {}
        self._sizes: dict[str, int] = {}  # message sizes by provenance key (truncated items are kept)
        self._moves: dict[str, list[bytes]] = {}  # sibling folder -> messages (with From_ lines) to append
        self._drop: set[str] = set()  # mailbox keys to remove at the rewrite
        self._seen: set[str] = set()  # mailbox keys to mark `Status: RO` at the rewrite
        try:
            self._size = source.path.stat().st_size  # under the lock: what we list is what we rewrite
        except OSError as exc:
            raise SourceError(f"cannot read {source.path}: {exc.strerror}", stage="fetch", mailbox=source.name) from exc

    def _listing(self) -> Iterator[tuple[str, str, bytes]]:
        """(mailbox key, provenance key, bytes) of every message not yet acknowledged, in file order."""
        src = self.source
        seen_keys: dict[str, int] = {}
        try:
            keys = list(self.box.iterkeys())
        except (OSError, mailbox.Error) as exc:
            raise SourceError(f"cannot read {src.path}: {exc}", stage="fetch", mailbox=src.name) from exc
        for key in keys:
            try:
                data = self.box.get_bytes(key)
            except (OSError, mailbox.Error) as exc:
                raise SourceError(f"cannot read {src.path}: {exc}", stage="fetch", mailbox=src.name) from exc
            base = mbox_key(data)
            n = seen_keys.get(base, 0)
            seen_keys[base] = n + 1
            pkey = base if n == 0 else f"{base}#{n}"
            if key in self._drop or key in self._seen:
                continue  # acknowledged in this session
            status = _status(data)
            if src.after == "seen" and "R" in status:
                continue
            if src.fetch_mode == "unseen" and "R" in status:
                continue
            yield key, pkey, data

    def pending(self) -> int:
        """Messages still waiting."""
        return sum(1 for _ in self._listing())

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        """Yield waiting messages in file order; already committed ones are acknowledged silently."""
        src = self.source
        count = 0
        for key, pkey, data in list(self._listing()):
            if limit is not None and count >= limit:
                return
            provenance = Provenance(mailbox=src.name, kind="mbox", key=pkey)
            self._keys[pkey] = key
            self._sizes[pkey] = len(data)
            if src.skip is not None and src.skip(provenance):
                self._ack_key(pkey)
                continue
            size = len(data)
            if src.max_message_size is not None and size > src.max_message_size:
                if src.oversize == "skip":
                    self.oversized.append(OversizeNotice(provenance=provenance, size=size, limit=src.max_message_size))
                    continue
                head = data.partition(b"\n\n")[0] + b"\n\n"
                note = (
                    f"This message was {size} bytes, over this mailbox's limit of {src.max_message_size} bytes; "
                    "only its headers were read. "
                    + (
                        f"The original stays in the mbox file of mailbox {src.name}."
                        if src.after == "seen"
                        else f"The original is kept, not deleted: it moves to the mbox folder "
                        f"{src.quarantine_folder!r} of mailbox {src.name}."
                    )
                )
                count += 1
                data = headers_only_message(head, note, size)  # the ticket says what was left out and where
                yield RawItem(data=data, provenance=provenance, size=size, truncated=True, note=note)
                continue
            count += 1
            yield RawItem(data=data, provenance=provenance, size=size)

    def _from_bytes(self, key: str) -> bytes:
        try:
            return self.box.get_bytes(key, from_=True)
        except (OSError, mailbox.Error) as exc:
            src = self.source
            raise SourceError(f"cannot read {src.path}: {exc}", stage="ack", mailbox=src.name) from exc

    def _ack_key(self, pkey: str) -> None:
        src = self.source
        key = self._keys.get(pkey)
        if key is None:
            return
        limit = src.max_message_size
        truncated = src.oversize == "headers" and limit is not None and self._sizes.get(pkey, 0) > limit
        if src.after == "seen":
            self._seen.add(key)
        else:
            if truncated:  # ingested headers-only: the only full copy goes to the quarantine, never away
                self._moves.setdefault(src.quarantine_folder, []).append(self._from_bytes(key))
            elif src.after == "move":
                self._moves.setdefault(src.move_folder or "Processed", []).append(self._from_bytes(key))
            self._drop.add(key)
        src.retries.clear(pkey)

    def acknowledge(self, item: RawItem) -> None:
        """Record `after` for a committed item (written at the end of the session)."""
        self._ack_key(item.provenance.key)

    def release(self, item: RawItem, *, failed: bool) -> None:
        """Leave the item; count a failure, and quarantine it after `max_retries`."""
        if not failed:
            return
        src = self.source
        pkey = item.provenance.key
        if src.retries.increment(pkey) < src.max_retries:
            return
        key = self._keys.get(pkey)
        if key is None:
            return
        self._moves.setdefault(src.quarantine_folder, []).append(self._from_bytes(key))
        self._drop.add(key)
        src.retries.clear(pkey)

    def flush(self) -> None:
        """Append moved messages to their sibling files, then rewrite this mbox (under its lock)."""
        src = self.source
        try:
            # Copies first: a crash after them but before the rewrite duplicates a moved message in the
            # sibling file (harmless) instead of losing it.
            for folder, messages in self._moves.items():
                target = mailbox.mbox(src.sibling(folder), create=True)
                try:
                    src._lock(target, src.sibling(folder))
                    for raw in messages:
                        target.add(raw)
                    target.flush()
                finally:
                    with contextlib.suppress(OSError):
                        target.unlock()
                    target.close()
            self._moves.clear()
            if self._drop or self._seen:
                self._rewrite()
                self._drop.clear()
                self._seen.clear()
        except (OSError, mailbox.Error) as exc:
            raise SourceError(f"cannot write {src.path}: {exc}", stage="ack", mailbox=src.name) from exc

    def _rewrite(self) -> None:
        """Write the kept messages (`seen` ones with `Status: RO`) to a new file and rename it over the old.

        Unlike the stdlib's `__setitem__`, nothing is appended to the live file before the rename, so a
        crash at any point leaves either the old file or the new one. Bytes a non-locking writer appended
        after we listed the file are carried over verbatim.
        """
        path = self.source.path
        st = os.stat(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for key in self.box.iterkeys():
                    if key in self._drop:
                        continue
                    raw = self.box.get_bytes(key, from_=True)
                    if key in self._seen:
                        raw = _mark_read(raw)
                    out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    out.write(b"\n")
                if st.st_size > self._size:
                    with open(path, "rb") as live:
                        live.seek(self._size)
                        out.write(live.read())
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            with contextlib.suppress(OSError):
                os.chown(tmp, st.st_uid, st.st_gid)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _mark_read(raw: bytes) -> bytes:
    """`raw` (with its From_ line) with `Status: RO` replacing any Status/X-Status header."""
    head, sep, body = raw.partition(b"\n\n")
    head = _STATUS_LINE.sub(b"", head + b"\n").rstrip(b"\n")
    return head + b"\nStatus: RO\n" + (b"\n" + body if sep else b"")
