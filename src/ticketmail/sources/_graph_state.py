"""The persisted delta-sync state of a Graph mailbox folder, and the pages of one visit."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from ticketmail.errors import SourceError

__all__ = ["DeltaState", "Page", "safe_name"]

log = logging.getLogger("ticketmail.sources.graph")


class DeltaState:
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


class Page:
    """One delta page of the current visit: its URL, the keys handed over, whether it was read to its end."""

    __slots__ = ("complete", "keys", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: set[str] = set()
        self.complete = True


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"
