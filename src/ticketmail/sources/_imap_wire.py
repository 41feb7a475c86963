r"""IMAP on the wire: sequence sets, folder quoting, response parsing and the IDLE exchange.

Everything here is pure (parsing bytes `imaplib` returned) or talks to the server through `imaplib`'s
public methods only (`send`, `readline`, `socket`), so `ticketmail.sources.imap` stays about what a
session does, not how IMAP spells it.
"""

from __future__ import annotations

import imaplib
import io
import re
import select
import socket
import ssl
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from imap_tools.imap_utf7 import utf7_encode

__all__ = [
    "FAIL_KEYWORD_PREFIX",
    "QUARANTINE_KEYWORD",
    "TRUNCATED_KEYWORD",
    "Meta",
    "fail_count",
    "idle_wait",
    "parse_bodies",
    "parse_folders",
    "parse_meta",
    "quote_folder",
    "uid_chunks",
    "uid_set",
]

FAIL_KEYWORD_PREFIX = "$TmFail"
"""Keywords `$TmFail1` .. `$TmFailN` count processing failures on a message."""
QUARANTINE_KEYWORD = "$TmQuarantined"
"""Set on a message that reached `max_retries` but could not be moved to the quarantine folder."""
TRUNCATED_KEYWORD = "$TmTruncated"
"""Set on a message ingested headers-only (`oversize = "headers"`): it is kept, never deleted."""

MAX_UIDS_PER_COMMAND = 500  # worst case "nnnnnnn," x 500 = 4 KB, under the strictest common line limits
_UID_RE = re.compile(rb"UID (\d+)")
_SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")
_FLAGS_RE = re.compile(rb"FLAGS \(([^)]*)\)")
_LIST_RE = re.compile(rb'^\([^)]*\) (?:NIL|"(?:[^"\\]|\\.)*") (.+)$')  # RFC 3501 section 7.2.2
FAIL_RE = re.compile(r"^\$TmFail(\d+)$", re.IGNORECASE)
_EXISTS_RE = re.compile(rb"^\* (\d+) EXISTS", re.IGNORECASE)

Meta = dict[int, tuple[int, tuple[str, ...]]]
"""`uid -> (RFC822.SIZE, flags)` from one `UID FETCH (RFC822.SIZE FLAGS)`."""


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


def uid_chunks(uids: list[int], size: int | None = None) -> Iterator[list[int]]:
    """Slices of `uids`, so no command line outgrows server limits (Dovecot: 64 KiB, others 8 KiB)."""
    size = size or MAX_UIDS_PER_COMMAND
    for start in range(0, len(uids), size):
        yield uids[start : start + size]


def quote_folder(folder: str) -> str:
    """A folder name as an IMAP quoted string, in modified UTF-7 (RFC 3501 section 5.1.3)."""
    encoded = utf7_encode(folder).decode("ascii")
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fail_count(flags: Iterable[str]) -> int:
    """The failure count recorded in `$TmFailN` keywords (the highest N, 0 when none)."""
    best = 0
    for flag in flags:
        m = FAIL_RE.match(flag)
        if m:
            best = max(best, int(m.group(1)))
    return best


def parse_meta(data: list[Any]) -> Meta:
    """Sizes and flags from the answer to `UID FETCH <set> (UID RFC822.SIZE FLAGS)`."""
    meta: Meta = {}
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


def parse_bodies(data: list[Any]) -> dict[int, bytes]:
    """`uid -> literal` from the answer to `UID FETCH <set> (UID BODY.PEEK[...])`.

    Some servers send the `UID` item after the literal; such a literal waits for the line that follows it.
    """
    bodies: dict[int, bytes] = {}
    pending: bytes | None = None
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


def parse_folders(data: list[Any]) -> list[str]:
    """Folder names (raw modified UTF-7) from the answer to `LIST "" *`."""
    names: list[str] = []
    for line in data:
        m = _LIST_RE.match(line) if isinstance(line, bytes) else None
        if m:
            name = m.group(1)
            if name.startswith(b'"'):
                name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
            names.append(name.decode("ascii", "replace"))
    return names


class IdleResult:
    """What one IDLE round saw: the last `EXISTS` count, if any, and how many `EXPUNGE` lines came."""

    __slots__ = ("exists", "expunged")

    def __init__(self) -> None:
        self.exists: int | None = None
        self.expunged = 0

    def note(self, line: bytes) -> None:
        """Record one untagged line."""
        m = _EXISTS_RE.match(line)
        if m:
            self.exists = int(m.group(1))
        elif line.upper().rstrip().endswith(b" EXPUNGE"):
            self.expunged += 1


class _IdleTags:
    """Tags of our own for IDLE, distinct from imaplib's (four upper-case letters and a number)."""

    counter = 0

    @classmethod
    def next(cls) -> bytes:
        cls.counter += 1
        return b"tmidle%d" % cls.counter


def _readable(sock: socket.socket, timeout: float) -> bool:
    readable, _, _ = select.select([sock], [], [], max(0.0, timeout))
    return bool(readable)


def _buffered(client: imaplib.IMAP4) -> bool:
    """Whether bytes already wait in imaplib's reader or the TLS layer, where `select` cannot see them.

    Peeks with the socket non-blocking for the moment: what is buffered comes back at once, an empty
    buffer reads nothing (and loses nothing: whatever arrives stays in the reader for `readline`).
    """
    reader = client.file
    if not isinstance(reader, io.BufferedReader):
        return False
    sock = client.socket()
    previous = sock.gettimeout()
    sock.settimeout(0)
    try:
        return bool(reader.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(previous)


def idle_wait(client: imaplib.IMAP4, timeout: float) -> IdleResult:
    """One IDLE round (RFC 2177): start it, wait up to `timeout` s for news, end it with `DONE`.

    Returns at the first untagged line after the continuation (or when the server sent news before
    confirming IDLE), after `DONE` was answered. Raises `imaplib.IMAP4.error` when the server refuses or
    ends IDLE with `NO`/`BAD`. Python 3.14 and newer use imaplib's own `idle()`; older ones have none, so
    the exchange is spoken here with a tag of our own through imaplib's public `send` and `readline`
    (imaplib's command bookkeeping never sees it).
    """
    if sys.version_info >= (3, 14):
        return _idle_stdlib(client, timeout)
    tag = _IdleTags.next()
    result = IdleResult()
    client.send(tag + b" IDLE\r\n")
    while True:  # until the continuation "+ idling" (or the tagged refusal)
        line = _read_line(client)
        if line.startswith(b"+"):
            break
        if line.startswith(tag + b" "):
            raise imaplib.IMAP4.error(f"IDLE refused: {_text(line[len(tag) + 1 :])}")
        result.note(line)
    if result.exists is None and (_buffered(client) or _readable(client.socket(), timeout)):
        result.note(_read_line(client))
    client.send(b"DONE\r\n")
    while True:  # until the tagged completion of IDLE
        line = _read_line(client)
        if line.startswith(tag + b" "):
            status = line[len(tag) + 1 :]
            if not status.upper().startswith(b"OK"):
                raise imaplib.IMAP4.error(f"IDLE failed: {_text(status)}")
            return result
        result.note(line)


if sys.version_info >= (3, 14):

    def _idle_stdlib(client: imaplib.IMAP4, timeout: float) -> IdleResult:
        """IDLE through `imaplib.IMAP4.idle()` (Python 3.14+), which ends with `DONE` when the block exits."""
        result = IdleResult()
        with client.idle(duration=timeout) as idler:
            for kind, data in idler:
                if kind == "EXISTS" and data:
                    result.exists = int(data[-1])
                    break
                if kind == "EXPUNGE":
                    result.expunged += len(data)
        return result


def _read_line(client: imaplib.IMAP4) -> bytes:
    line = client.readline()
    if not line:
        raise imaplib.IMAP4.abort("socket error: EOF during IDLE")
    return line


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip()[:300]
