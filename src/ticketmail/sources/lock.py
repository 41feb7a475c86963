"""One fetch per mailbox at a time, across threads and processes on one machine.

Two fetches of the same mailbox at once would not lose mail (the pipeline's ledger makes a second
delivery a no-op), but they would double the work, race on the post-fetch action (a `MOVE` of a message
the other run already expunged) and make health reports flap. Cron makes the overlap likely: a run that
takes longer than the cron period meets the next one.

The lock is an advisory `flock(2)` on a lock file per mailbox (`<state>/locks/<name>.lock`):

* `flock` belongs to the open file description, so two opens of the same file conflict even inside one
  process (two threads of a worker), not only across processes;
* the kernel drops it when the process dies, even by `SIGKILL`: a crashed run never leaves a stale lock
  that an operator has to delete by hand (the file itself stays and is reused);
* it is non-blocking: a run that finds the mailbox busy gets `LockResult.BUSY` and skips it, which is
  what a cron job wants ("already running, skip").

`flock` is not reliable over NFS; keep the state directory on a local disk. The file records the pid
and start time of the holder for humans (`cat` it); the lock itself is the only thing that counts.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
from pathlib import Path
from types import TracebackType

from ticketmail.errors import ConfigError, SourceError

__all__ = ["LockBusyError", "MailboxLock", "lock_path"]

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class LockBusyError(SourceError):
    """Another run (thread or process) is already fetching this mailbox."""

    code = "mailbox_busy"
    status = 409


def lock_path(state_dir: str | os.PathLike[str], mailbox: str) -> Path:
    """The lock file of `mailbox` under `state_dir` (names are made file-system safe)."""
    if not mailbox:
        raise ConfigError("mailbox name must not be empty for a lock file", field="name")
    safe = _SAFE_NAME.sub("_", mailbox)
    if safe != mailbox or safe.startswith("."):
        # Keep distinct names distinct after sanitising: append a short stable hash.
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(mailbox.encode()).hexdigest()[:8]}"
    return Path(state_dir) / "locks" / f"{safe}.lock"


class MailboxLock:
    """A non-blocking, cross-process exclusive lock for one mailbox.

    Usage::

        lock = MailboxLock(state_dir, "support")
        if not lock.acquire():
            ...  # already running elsewhere: skip this mailbox
        try:
            ...
        finally:
            lock.release()

    or `with MailboxLock(state_dir, "support"):` which raises `LockBusyError` when busy.
    With `state_dir=None` the lock is only process-local (a `threading.Lock` per name kept by
    the caller's `MailboxLock` object), which suits tests and apps that run one worker per machine.
    """

    def __init__(self, state_dir: str | os.PathLike[str] | None, mailbox: str) -> None:
        self.mailbox = mailbox
        self.path = lock_path(state_dir, mailbox) if state_dir is not None else None
        self._fd: int | None = None
        self._local = threading.Lock()
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._held

    def acquire(self) -> bool:
        """Try to take the lock without waiting; `False` means another run holds it."""
        if not self._local.acquire(blocking=False):
            return False
        if self.path is None:
            self._held = True
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._local.release()
            raise SourceError(
                f"cannot open lock file {self.path}: {exc.strerror}", stage="lock", mailbox=self.mailbox
            ) from exc
        try:
            import fcntl  # POSIX only: imported where used, so the package imports anywhere

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            self._local.release()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise SourceError(f"cannot lock {self.path}: {exc.strerror}", stage="lock", mailbox=self.mailbox) from exc
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # informational only
        self._fd = fd
        self._held = True
        return True

    def release(self) -> None:
        """Give the lock up (a no-op when not held)."""
        if not self._held:
            return
        self._held = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                import fcntl  # POSIX only: imported where used, so the package imports anywhere

                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._local.release()

    def __enter__(self) -> MailboxLock:
        if not self.acquire():
            raise LockBusyError(
                f"mailbox {self.mailbox!r} is already being fetched by another run", stage="lock", mailbox=self.mailbox
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"MailboxLock(mailbox={self.mailbox!r}, path={str(self.path)!r}, held={self._held})"
