"""Threading under attack: a subject full of guessed ticket tags against a benign mail of the same size.

For 1,000, 10,000 and 29,999 guessed tags (plus one real tag, first or last), on a SQLite file, prints the
time of ``Pipeline.process_email`` and how long the write transaction (``BEGIN IMMEDIATE``) was held,
beside a benign mail of the same size (the same bytes as body text) processed in the same run. Target:
the attack within 3x the benign mail's time, the write lock held for milliseconds, and the attacker never
on the real ticket.

    .venv/bin/python benchmarks/bench_threading.py
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ticketmail.backends.base import UnitOfWork
from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.model import Provenance
from ticketmail.pipeline import Pipeline
from ticketmail.testing.pipeline_suite import build_mail

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class _Timed:
    """Wraps a backend's unit_of_work to record how long each write transaction stays open."""

    def __init__(self, backend: SQLiteBackend) -> None:
        self.backend = backend
        self.held: list[float] = []
        self._inner = backend.unit_of_work
        backend.unit_of_work = self._unit  # type: ignore[method-assign]

    @contextmanager
    def _unit(self) -> Iterator[UnitOfWork]:
        with self._inner() as uow:
            started = time.perf_counter()
            try:
                yield uow
            finally:
                self.held.append(time.perf_counter() - started)


def _run(count: int, position: str, rnd: random.Random) -> tuple[float, float, float, float, bool]:
    folder = Path(tempfile.mkdtemp(prefix="tm-bench-thread-"))
    backend = SQLiteBackend(folder / "t.sqlite3")
    try:
        pipe = Pipeline(backend)
        real = pipe.process_email(build_mail(), provenance=Provenance("INBOX", "imap", "0")).ticket
        assert real is not None
        tags = [f"[#{''.join(rnd.choice(_ALPHABET) for _ in range(8))}]" for _ in range(count)]
        tags.insert(0 if position == "first" else len(tags), f"[#{real}]")
        attack = build_mail(
            subject="Re: " + " ".join(tags), sender="mallory@evil.example", message_id=f"a{count}@evil.example"
        )
        benign = build_mail(
            subject="Printer question",
            sender="bob@example.org",
            message_id=f"b{count}@example.org",
            body="word " * (len(attack) // 5),
        )
        timed = _Timed(backend)
        results = []
        for key, raw in (("attack", attack), ("benign", benign)):
            timed.held.clear()
            started = time.perf_counter()
            pipe.process_email(raw, provenance=Provenance("INBOX", "imap", key))
            results.append((time.perf_counter() - started, max(timed.held)))
        ticket = backend.get_ticket(real)
        joined = ticket is not None and "mallory@evil.example" in ticket.participants
        return results[0][0], results[0][1], results[1][0], results[1][1], joined
    finally:
        backend.close()


def main() -> None:
    rnd = random.Random(11)
    head = f"{'tags':>7} {'real':>6} {'attack ms':>10} {'lock ms':>8} {'benign ms':>10} {'lock ms':>8} {'ratio':>6}"
    print(head + "  joined  (best of 3)")
    for count in (1_000, 10_000, 29_999):
        for position in ("first", "last"):
            runs = [_run(count, position, rnd) for _ in range(3)]
            attack, attack_lock, benign, benign_lock = (min(r[i] for r in runs) for i in range(4))
            joined = any(r[4] for r in runs)
            print(
                f"{count:>7} {position:>6} {attack * 1000:>10.1f} {attack_lock * 1000:>8.2f} "
                f"{benign * 1000:>10.1f} {benign_lock * 1000:>8.2f} {attack / benign:>6.2f}  {joined}"
            )


if __name__ == "__main__":
    main()
