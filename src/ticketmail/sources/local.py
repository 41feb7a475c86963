"""Read-only local inputs for `ticketmail ingest`: .eml files, Maildir folders, mbox files, JSON/XML payloads.

Nothing here writes to the inputs: a Maildir message is not moved to `cur/`, an mbox is not rewritten. Being
read-only is what makes re-running `ingest` safe: exactly-once rests on each item's `Provenance`
being stable across runs, so the pipeline's ledger recognises what it already committed.

Provenance per input:

* a single file (`.eml`, `.json`, `.xml`): `kind="file"`, `mailbox="file"`, `key` = the sha256 of
  its bytes. The same message copied under another name is the same item; an edited file is a new one.
* a Maildir (a directory holding `cur/`, `new/` and `tmp/`): `kind="maildir"`, `key` = the Maildir
  unique name (the file name without the `:2,FLAGS` info part, which changes when a mail client sets
  flags).
* an mbox: `kind="mbox"`, `key` = `ticketmail.sources.mbox.mbox_key()` of the message (a hash of
  the message without its `Status`/`X-Status` headers, which mail clients rewrite), with `#1`,
  `#2`... appended for further identical copies in the same file. Python's mbox keys are positions,
  which shift when messages are removed, so they cannot identify a message.

For Maildir and mbox, `mailbox` is the `mailbox` argument when given (the CLI passes its `--mailbox`
name), else the resolved path. These keys are the ones the Maildir and mbox sources of the poller use, so a
folder ingested once with `ticketmail ingest --mailbox NAME` and later polled as mailbox `NAME` is not
processed twice.

A directory that is not a Maildir is walked (sorted by name, so numbered example files are read in order):
`*.eml` are messages, `*.json`/`*.xml` payloads, `*.mbox` and files named `mbox` are
mboxes, and nested Maildirs are read as such. Hidden files and symlinked folders (cycles) are skipped.

An input that cannot be read (permission denied, a broken symlink, a FIFO or device named like a mail
file, a folder that cannot be listed, an mbox that does not open) does not end the walk: it is yielded
as a `LocalItem` with empty `data` and `error` set to a `SourceError` saying why, and the walk goes
on. Its provenance key is derived from its path (`unreadable:` and the path's sha256), since there are
no bytes to hash. Only a path given explicitly that does not exist raises.
"""

from __future__ import annotations

import hashlib
import mailbox
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import attrs

from ticketmail.errors import SourceError
from ticketmail.model import Provenance
from ticketmail.sources.base import RawItem
from ticketmail.sources.mbox import mbox_key

__all__ = ["LocalItem", "LocalItemKind", "count_local", "iter_local", "local_kind"]

LocalItemKind = Literal["email", "json", "xml"]

_EMAIL_SUFFIXES = (".eml",)
_PAYLOAD_SUFFIXES = {".json": "json", ".xml": "xml"}


@attrs.frozen
class LocalItem:
    """One input item: its bytes, what it is, where it came from.

    Attributes:
        data: The raw bytes (an RFC 5322 message or an API payload); empty when `error` is set.
        kind: `email` (for `Pipeline.process_email()`) or `json`/`xml` (an API payload).
        provenance: Stable identity of the item (see the module docstring).
        source: A human-readable location: `path` or `path#key` for folder/mbox members.
        error: Why the item could not be read (`None` when it was): record it as failed
            (`Pipeline.quarantine(b"", provenance=item.provenance, error=item.error)`) and go on.
    """

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    kind: LocalItemKind
    provenance: Provenance
    source: str
    error: SourceError | None = None

    def raw_item(self) -> RawItem:
        """The item as a source's `RawItem`."""
        return RawItem(self.data, self.provenance, size=len(self.data))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def local_kind(path: Path) -> Literal["maildir", "mbox", "email", "json", "xml", "directory"] | None:
    """What `path` looks like to `ingest`, or `None` when it is not an input."""
    if path.is_dir():
        return "maildir" if _is_maildir(path) else "directory"
    name = path.name.lower()
    if name.endswith(".mbox") or name == "mbox":
        return "mbox"
    for suffix, kind in _PAYLOAD_SUFFIXES.items():
        if name.endswith(suffix):
            return "json" if kind == "json" else "xml"
    if name.endswith(_EMAIL_SUFFIXES):
        return "email"
    return None


def _read(path: Path, mailbox_name: str | None = None) -> bytes:
    """The bytes of the regular file `path`; `SourceError` (stage `fetch`) when it cannot be read.

    The file is opened without blocking and checked to be a regular file before it is read, so that a
    FIFO or a device named like a mail file is refused instead of waiting forever.
    """
    where = mailbox_name or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}", stage="fetch", mailbox=where) from exc
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SourceError(f"cannot read {path}: not a regular file", stage="fetch", mailbox=where)
        try:
            return handle.read()
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}", stage="fetch", mailbox=where) from exc


def _unreadable(path: Path, kind: LocalItemKind, error: SourceError, provenance: Provenance | None = None) -> LocalItem:
    """The item standing for an input that could not be read (see the module docstring)."""
    if provenance is None:
        key = "unreadable:" + _sha256(str(path).encode("utf-8", "surrogateescape"))
        provenance = Provenance("file", "file", key, label=str(path))
    return LocalItem(b"", kind, provenance, str(path), error=error)


def _file_item(path: Path, kind: LocalItemKind) -> LocalItem:
    try:
        data = _read(path)
    except SourceError as exc:
        return _unreadable(path, kind, exc)
    return LocalItem(data, kind, Provenance("file", "file", _sha256(data), label=str(path)), str(path))


def _maildir_items(path: Path, mailbox_name: str) -> Iterator[LocalItem]:
    names: list[tuple[str, Path]] = []
    for sub in ("new", "cur"):
        try:
            entries = os.listdir(path / sub)
        except OSError as exc:
            error = SourceError(
                f"cannot list {path / sub}: {exc.strerror or exc}", stage="folder", mailbox=mailbox_name
            )
            yield _unreadable(path / sub, "email", error)
            continue
        for name in entries:
            if not name.startswith("."):
                names.append((name.split(":", 1)[0], path / sub / name))
    # Maildir unique names start with the delivery time, so name order is arrival order.
    for key, file in sorted(names):
        provenance = Provenance(mailbox_name, "maildir", key)
        try:
            data = _read(file, mailbox_name)
        except SourceError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):  # moved by a mail client between listing and reading
                continue
            yield _unreadable(file, "email", exc, provenance)
            continue
        yield LocalItem(data, "email", provenance, f"{path}#{key}")


def _mbox_items(path: Path, mailbox_name: str) -> Iterator[LocalItem]:
    seen: dict[str, int] = {}
    try:
        box = mailbox.mbox(str(path), create=False)
        try:
            keys = list(box.iterkeys())
            for index, key in enumerate(keys):
                data = box.get_bytes(key)
                base = mbox_key(data)
                copies = seen.get(base, 0)
                seen[base] = copies + 1
                pkey = base if copies == 0 else f"{base}#{copies}"
                yield LocalItem(data, "email", Provenance(mailbox_name, "mbox", pkey), f"{path}#{index + 1}")
        finally:
            box.close()
    except (OSError, mailbox.Error) as exc:
        yield _unreadable(
            path, "email", SourceError(f"cannot read mbox {path}: {exc}", stage="fetch", mailbox=mailbox_name)
        )


def _walkable(child: Path) -> bool:
    """Whether a directory entry is read: not hidden, a known input, not a symlinked folder (no cycles)."""
    if child.name.startswith(".") or local_kind(child) is None:
        return False
    return not (child.is_symlink() and child.is_dir())


def _walk(path: Path, mailbox_name: str | None) -> Iterator[LocalItem]:
    kind = local_kind(path)
    if kind == "maildir":
        yield from _maildir_items(path, mailbox_name or str(path.resolve()))
    elif kind == "directory":
        try:
            children = sorted(path.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            error = SourceError(f"cannot list {path}: {exc.strerror or exc}", stage="folder", mailbox=str(path))
            yield _unreadable(path, "email", error)
            return
        for child in children:
            if _walkable(child):
                yield from _walk(child, mailbox_name)
    elif kind == "mbox":
        yield from _mbox_items(path, mailbox_name or str(path.resolve()))
    elif kind in ("email", "json", "xml"):
        yield _file_item(path, kind)


def iter_local(paths: Sequence[str | os.PathLike[str]], *, mailbox: str | None = None) -> Iterator[LocalItem]:
    """Yield every item under `paths`, in the order given (directories sorted by name).

    `mailbox` names the mailbox in the provenance of Maildir and mbox items (default: their path).

    A path given explicitly is read even when its name has no known suffix (as an email). Raises
    `SourceError` (stage `folder`) for a path that does not exist; an input that exists but cannot be
    read is yielded with `LocalItem.error` set.
    """
    for raw_path in paths:
        path = Path(raw_path)
        if not path.exists():
            raise SourceError(f"no such file or directory: {path}", stage="folder", mailbox=str(path))
        if path.is_file() and local_kind(path) is None:
            yield _file_item(path, "email")
        else:
            yield from _walk(path, mailbox)


def _count(path: Path) -> int:
    """How many items `_walk(path)` yields: an input that cannot be read counts as the one item standing for it."""
    kind = local_kind(path)
    try:
        if kind == "maildir":
            return sum(_count_maildir_sub(path / sub) for sub in ("new", "cur"))
        if kind == "directory":
            return sum(_count(child) for child in path.iterdir() if _walkable(child))
        if kind == "mbox":
            box = mailbox.mbox(str(path), create=False)
            try:
                return len(box)
            finally:
                box.close()
    except (OSError, mailbox.Error):
        return 1
    return 1 if kind is not None else 0


def _count_maildir_sub(sub: Path) -> int:
    try:
        return sum(1 for name in os.listdir(sub) if not name.startswith("."))
    except OSError:
        return 1


def count_local(paths: Sequence[str | os.PathLike[str]]) -> int:
    """How many items `iter_local()` will yield, without reading message contents (for progress bars).

    Raises `SourceError` like `iter_local()`.
    """
    total = 0
    for raw_path in paths:
        path = Path(raw_path)
        if not path.exists():
            raise SourceError(f"no such file or directory: {path}", stage="folder", mailbox=str(path))
        try:
            total += 1 if path.is_file() and local_kind(path) is None else _count(path)
        except (OSError, mailbox.Error) as exc:
            raise SourceError(f"cannot read {path}: {exc}", stage="folder", mailbox=str(path)) from exc
    return total
