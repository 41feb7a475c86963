"""A Maildir folder as a mailbox source, with the same acknowledge-after-commit contract as IMAP.

Maildir (https://cr.yp.to/proto/maildir.html) delivers each message as one file: written to `tmp/`, then
renamed into `new/`; a reader moves it to `cur/` and records flags after `:2,` in the file name
(`S` seen, `T` trashed, ...). Renames within one file system are atomic, which is exactly what
exactly-once needs: a message is either still waiting or acknowledged, never half of each.

Semantics (`after` of the mailbox configuration):

`seen`
    rename to `cur/<unique>:2,<flags>S`; unseen fetching (the default for `seen`) skips it from then on.
`delete`
    unlink the file.
`move:NAME`
    rename into the Maildir++ sub-folder `.NAME/cur/` (created with `maildirfolder` if missing),
    flagged `S`.

The provenance key is the file's unique name (the part before `:2,`): it survives the `new/` -> `cur/`
move and flag changes, so a redelivery after a crash is recognised by the pipeline's ledger.

Failures: an item whose processing failed stays where it is and its failure is counted in a small JSON
retry file (`retries-<mailbox>.json` in the poller's state directory; in memory without one). After
`max_retries` failures it is moved to the `.<quarantine_folder>/new/` sub-folder (unseen, so a human
notices it) and no longer fetched. We never write into the user's Maildir anything but standard folders.

Waiting for mail: `MaildirSession.wait_for_changes()` (used by the poller's worker with `idle`) watches
the modification times of `new/` and `cur/`; there is no notification protocol for Maildir, and polling
two `stat` calls a few times a second costs nothing.

Oversize messages (`max_message_size`) are never read whole: with `oversize = "skip"` they are left in
place and reported in `session.oversized`; with `"headers"` only the header block is read and the item is
marked `truncated` with a note.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from ticketmail.errors import ConfigError, SourceError
from ticketmail.model import Provenance
from ticketmail.sources.base import OversizeNotice, RawItem, SkipCallback, headers_only_message

__all__ = ["LocalFolderSource", "MaildirSession", "MaildirSource", "RetryCounter", "read_headers"]

AfterAction = Literal["delete", "seen", "move"]
_HEADER_READ_LIMIT = 256 * 1024


class RetryCounter:
    """Processing failures per item key, optionally persisted as JSON (atomic replace).

    Used by the local sources (Maildir, mbox) that, unlike IMAP, have no server-side keyword to count
    retries with. Thread-safe; single writer per mailbox is guaranteed by the poller's mailbox lock.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._mutex = threading.Lock()
        self._counts: dict[str, int] = self._load()

    def _load(self) -> dict[str, int]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}

    def get(self, key: str) -> int:
        """Failures recorded for `key`."""
        with self._mutex:
            return self._counts.get(key, 0)

    def increment(self, key: str) -> int:
        """Count one more failure of `key`; returns the new count."""
        with self._mutex:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._save()
            return self._counts[key]

    def clear(self, key: str) -> None:
        """Forget `key` (after it was acknowledged or quarantined)."""
        with self._mutex:
            if self._counts.pop(key, None) is not None:
                self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".retries-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._counts, fh, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise SourceError(f"cannot write retry counters {self.path}: {exc.strerror}", stage="ack") from exc


def read_headers(fh: Any, limit: int = _HEADER_READ_LIMIT) -> bytes:
    """Read a message's header block (up to and including the empty line), at most `limit` bytes."""
    out = bytearray()
    while len(out) < limit:
        line = fh.readline(limit - len(out))
        if not line:
            break
        out += line
        if line in (b"\n", b"\r\n"):
            break
    return bytes(out)


def _split_name(name: str) -> tuple[str, str]:
    """`"123.abc:2,RS"` -> (`"123.abc"`, `"RS"`); names without info have no flags."""
    unique, sep, info = name.partition(":2,")
    return unique, info if sep else ""


_LocalT = TypeVar("_LocalT", bound="LocalFolderSource")


class LocalFolderSource:
    """What Maildir and mbox sources share: the `after`/`fetch`/`oversize` options, retries, `from_config`.

    Args are those of `MaildirSource` (see there). `_dot_folders_ok` is false for Maildir, where a
    folder whose name starts with a dot is a Maildir++ sub-folder of its own.
    """

    _dot_folders_ok = True

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
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.after: AfterAction
        self.move_folder: str | None
        if after.startswith("move:"):
            folder = after[5:].strip()
            if not folder or "/" in folder or (folder.startswith(".") and not self._dot_folders_ok):
                raise ConfigError(f"after: expected move:NAME with a plain folder name, got {after!r}", field="after")
            self.after, self.move_folder = "move", folder
        elif after in ("seen", "delete"):
            self.after, self.move_folder = ("seen" if after == "seen" else "delete"), None
        else:
            raise ConfigError(f"after: expected delete, seen or move:NAME, got {after!r}", field="after")
        if fetch not in ("auto", "unseen", "all"):
            raise ConfigError(f"fetch: expected auto, unseen or all, got {fetch!r}", field="fetch")
        self.fetch_mode = ("unseen" if self.after == "seen" else "all") if fetch == "auto" else fetch
        if oversize not in ("skip", "headers"):
            raise ConfigError(f"oversize: expected skip or headers, got {oversize!r}", field="oversize")
        self.skip = skip
        self.max_retries = max_retries
        self.quarantine_folder = quarantine_folder
        self.retries = retries if retries is not None else RetryCounter()
        self.max_message_size = max_message_size
        self.oversize = oversize

    @classmethod
    def from_config(
        cls: type[_LocalT],
        config: Any,
        *,
        skip: SkipCallback | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> _LocalT:
        """Build from a `MailboxConfig` (`protocol` maildir or mbox)."""
        retries = RetryCounter(Path(state_dir) / f"retries-{config.name}.json" if state_dir is not None else None)
        return cls(
            config.name,
            config.path,
            after=config.after,
            fetch=config.fetch,
            skip=skip,
            max_retries=config.max_retries,
            quarantine_folder=config.quarantine_folder,
            retries=retries,
            max_message_size=config.max_message_size,
            oversize=config.oversize,
        )


class MaildirSource(LocalFolderSource):
    """A Maildir folder (`cur/`, `new/`, `tmp/`) read as a mailbox.

    Args:
        name: The mailbox name (provenance, health, locks).
        path: The Maildir directory.
        after: `seen`, `delete` or `move:NAME` (see the module docstring).
        fetch: `unseen` skips messages flagged `S`; `all` takes every message not yet acknowledged
            (`auto`: `unseen` when `after` is `seen`, else `all`).
        skip: `skip(provenance)` true means committed already: acknowledge without yielding.
        max_retries: Failures before an item is quarantined.
        quarantine_folder: Sub-folder receiving items that failed `max_retries` times.
        retries: Where failures are counted (default: in memory).
        max_message_size: Bytes above which the `oversize` policy applies (`None`: no limit).
        oversize: `skip` (leave and report) or `headers` (yield the header block only).
    """

    _dot_folders_ok = False

    @contextlib.contextmanager
    def session(self) -> Iterator[MaildirSession]:
        """Check the folder and open a session (raises `SourceError` with stage `folder`)."""
        for sub in ("cur", "new", "tmp"):
            if not (self.path / sub).is_dir():
                raise SourceError(
                    f"{self.path} is not a Maildir (no {sub}/ directory)", stage="folder", mailbox=self.name
                )
        yield MaildirSession(self)

    def __repr__(self) -> str:
        return f"MaildirSource(name={self.name!r}, path={str(self.path)!r}, after={self.after!r})"


class MaildirSession:
    """An open Maildir: yields waiting messages, acknowledges by rename/unlink."""

    poll_step = 0.25
    """Seconds between two checks of the directories in `wait_for_changes()`."""

    def __init__(self, source: MaildirSource) -> None:
        self.source = source
        self.oversized: list[OversizeNotice] = []
        self._paths: dict[str, Path] = {}
        self._listed_stamp: tuple[int, ...] | None = None

    # -- listing ----------------------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[float, str, Path]]:
        src = self.source
        self._listed_stamp = self._stamp()
        found: list[tuple[float, str, Path]] = []
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(src.path / sub))
            except OSError as exc:
                raise SourceError(
                    f"cannot list {src.path / sub}: {exc.strerror}", stage="fetch", mailbox=src.name
                ) from exc
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                _unique, flags = _split_name(entry.name)
                if "T" in flags or (src.fetch_mode == "unseen" and "S" in flags):
                    continue
                if src.after == "seen" and "S" in flags:
                    continue  # already acknowledged (seen is the acknowledgement)
                try:
                    mtime = entry.stat().st_mtime
                except FileNotFoundError:
                    continue
                found.append((mtime, entry.name, Path(entry.path)))
        found.sort()
        return found

    def pending(self) -> int:
        """Messages still waiting (not acknowledged, not quarantined)."""
        return len(self._candidates())

    def _stamp(self) -> tuple[int, ...]:
        try:
            return tuple(os.stat(self.source.path / sub).st_mtime_ns for sub in ("new", "cur"))
        except OSError:
            return ()

    def wait_for_changes(self, timeout: float) -> bool:
        """Block up to `timeout` seconds until a message is delivered (`new/` or `cur/` changes).

        Maildir has no notification protocol; this checks the directories' modification times every
        `poll_step` seconds, which a delivery (a rename into `new/`) always updates. True when they changed
        since the last listing (or when messages are already waiting).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if self._listed_stamp is None or self._stamp() != self._listed_stamp:
            return True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.poll_step, remaining))
            if self._stamp() != self._listed_stamp:
                return True

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        """Yield waiting messages, oldest first; items already committed are acknowledged silently."""
        src = self.source
        count = 0
        for _mtime, name, path in self._candidates():
            if limit is not None and count >= limit:
                return
            unique, _flags = _split_name(name)
            provenance = Provenance(mailbox=src.name, kind="maildir", key=unique)
            self._paths[unique] = path
            if src.skip is not None and src.skip(provenance):
                self._ack_path(unique, path)
                continue
            item = self._read(path, provenance)
            if item is None:
                continue
            count += 1
            yield item

    def _read(self, path: Path, provenance: Provenance) -> RawItem | None:
        src = self.source
        try:
            size = path.stat().st_size
            limit = src.max_message_size
            with open(path, "rb") as fh:
                if limit is not None and size > limit:
                    if src.oversize == "skip":
                        self.oversized.append(OversizeNotice(provenance=provenance, size=size, limit=limit))
                        return None
                    head = read_headers(fh)
                    note = (
                        f"This message was {size} bytes, over this mailbox's limit of {limit} bytes; only its "
                        "headers were read. "
                        + (
                            f"The original stays in the Maildir of mailbox {src.name}, marked seen ({path.name})."
                            if src.after == "seen"
                            else f"The original is kept, not deleted: it moves to the Maildir folder "
                            f"{src.quarantine_folder!r} of mailbox {src.name} ({provenance.key})."
                        )
                    )
                    data = headers_only_message(head, note, size)  # the ticket says what was left out and where
                    return RawItem(data=data, provenance=provenance, size=size, truncated=True, note=note)
                data = fh.read()
        except FileNotFoundError:
            return None  # taken by someone else meanwhile
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}", stage="fetch", mailbox=src.name) from exc
        return RawItem(data=data, provenance=provenance, size=len(data))

    # -- acknowledgement --------------------------------------------------------------------------------

    def _current(self, unique: str) -> Path | None:
        """Where the message is now (it may have moved new/ -> cur/ since listing)."""
        known = self._paths.get(unique)
        if known is not None and known.exists():
            return known
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(self.source.path / sub))
            except OSError as exc:
                raise SourceError(
                    f"cannot list {self.source.path / sub}: {exc.strerror}", stage="ack", mailbox=self.source.name
                ) from exc
            for entry in entries:
                if _split_name(entry.name)[0] == unique:
                    return Path(entry.path)
        return None

    def _ensure_folder(self, folder: str) -> Path:
        root = self.source.path / f".{folder}"
        for sub in ("cur", "new", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "maildirfolder").touch(exist_ok=True)
        return root

    def _ack_path(self, unique: str, path: Path) -> None:
        src = self.source
        _u, flags = _split_name(path.name)
        seen_flags = "".join(sorted(set(flags) | {"S"}))
        try:
            if src.after != "seen" and self._truncated(path):
                # Ingested headers-only: the file is the only full copy, never deleted or moved as processed.
                target = self._ensure_folder(src.quarantine_folder)
                os.rename(path, target / "cur" / f"{unique}:2,{seen_flags}")
            elif src.after == "delete":
                path.unlink()
            elif src.after == "seen":
                os.rename(path, src.path / "cur" / f"{unique}:2,{seen_flags}")
            else:
                target = self._ensure_folder(src.move_folder or "Processed")
                os.rename(path, target / "cur" / f"{unique}:2,{seen_flags}")
        except FileNotFoundError:
            pass  # already gone: nothing left to acknowledge
        except OSError as exc:
            raise SourceError(
                f"cannot acknowledge {path.name} ({src.after}): {exc.strerror}", stage="ack", mailbox=src.name
            ) from exc
        src.retries.clear(unique)

    def _truncated(self, path: Path) -> bool:
        """Whether this message is ingested headers-only (`oversize = "headers"` and over the limit)."""
        src = self.source
        if src.oversize != "headers" or src.max_message_size is None:
            return False
        try:
            return path.stat().st_size > src.max_message_size
        except FileNotFoundError:
            return False

    def acknowledge(self, item: RawItem) -> None:
        """Apply `after` to a committed item (a truncated one moves to the quarantine folder instead)."""
        unique = item.provenance.key
        path = self._current(unique)
        if path is None:
            return
        self._ack_path(unique, path)

    def release(self, item: RawItem, *, failed: bool) -> None:
        """Leave the item; count a failure and quarantine after `max_retries`."""
        if not failed:
            return
        src = self.source
        unique = item.provenance.key
        count = src.retries.increment(unique)
        if count < src.max_retries:
            return
        path = self._current(unique)
        if path is None:
            return
        try:
            target = self._ensure_folder(src.quarantine_folder)
            os.rename(path, target / "new" / unique)  # new/ names carry no flags (unseen for the human)
        except OSError as exc:
            raise SourceError(f"cannot quarantine {path.name}: {exc.strerror}", stage="ack", mailbox=src.name) from exc
        src.retries.clear(unique)
