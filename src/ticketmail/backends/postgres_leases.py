"""Mailbox leases in PostgreSQL: fetch workers on any number of machines share the configured mailboxes.

A `flock` (`ticketmail.sources.lock`) means nothing to a second machine; these leases live in the
database every worker already writes to. The guarantees:

* **At most one worker polls a mailbox at a time.** A lease is a row `(mailbox, holder, token, expires)`.
  A worker takes it only when it is free or expired, in one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`
  statement, which gets a new, larger `token` from a sequence each time (a fencing token).
* **Fencing.** While a worker holds a lease, every unit of work its poller thread commits first checks, in
  the same transaction and under a row lock, that the lease row still names this worker and this token and
  has not expired (`ticketmail.backends.postgres`). A worker that was paused or partitioned past its lease
  and then wakes up cannot commit anything, so it cannot acknowledge anything either (the poller
  acknowledges an item only after its commit); it gets `LeaseLostError`
  and leaves the item in the mailbox. A takeover (an `UPDATE` of the row) waits for a commit that holds
  the row lock, so the old and new holder's commits never interleave.
* **Takeover within the lease timeout.** A heartbeat thread renews the worker's leases every `ttl / 3`
  seconds. A worker that dies (`SIGKILL`, power loss, a network partition) stops renewing; its leases
  expire after at most `ttl` seconds and the other workers take its mailboxes at their next try (the
  mailbox's `interval`).
* **Even spread.** Workers register in `workers` with the same heartbeat. With `N` live workers and
  `M` mailboxes each worker holds at most its fair share (`M // N`, plus one for the first `M % N`
  workers in id order); a worker above its share after another one joined gives the extra mailboxes up at
  its next heartbeat (an idling IMAP session ends, the lease is released, another worker takes it).

Clocks: expiry is decided by the database server's clock only (`clock_timestamp()`), never by comparing
clocks of different machines. Locally a lease is treated as lost a little *before* the server would expire it
(`ttl` minus a margin from the last successful renewal), so a stalled heartbeat stops the worker first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg

from ticketmail.backends.postgres import PostgresBackend, set_fence
from ticketmail.backends.postgres_schema import translate_all
from ticketmail.errors import BackendError, InvalidValueError

__all__ = ["DEFAULT_LEASE_TTL", "LeaseManager", "MailboxLease"]

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 30.0
"""Seconds a lease lasts without renewal: the longest a dead worker's mailboxes wait for a new worker."""

_ACQUIRE = (
    "INSERT INTO leases (mailbox, holder, token, acquired, expires)"
    " VALUES (%(mailbox)s, %(holder)s, nextval('lease_tokens'), clock_timestamp(),"
    " clock_timestamp() + make_interval(secs => %(ttl)s))"
    " ON CONFLICT (mailbox) DO UPDATE SET holder = EXCLUDED.holder, token = EXCLUDED.token,"
    " acquired = EXCLUDED.acquired, expires = EXCLUDED.expires"
    " WHERE leases.expires <= clock_timestamp() OR leases.holder = EXCLUDED.holder"
    " RETURNING token"
)


class MailboxLease:
    """The lease on one mailbox, used by the poller like a `MailboxLock`.

    `acquire()` is non-blocking (`False`: another worker holds it, or this worker already holds its
    fair share); while held, commits in the acquiring thread are fenced by the lease's token.
    """

    def __init__(self, manager: LeaseManager, mailbox: str) -> None:
        self.manager = manager
        self.mailbox = mailbox
        self.token: int | None = None
        self._deadline = 0.0  # time.monotonic() after which the lease counts as lost locally
        self._yield = False
        self._local = threading.Lock()

    def __repr__(self) -> str:
        return f"MailboxLease({self.mailbox!r}, token={self.token!r})"

    @property
    def held(self) -> bool:
        """Whether this worker believes it holds the lease (acquired, not released, not known lost)."""
        return self.token is not None

    @property
    def valid(self) -> bool:
        """Held, renewed recently enough, and not asked to move to another worker (the poller checks this)."""
        return self.token is not None and not self._yield and time.monotonic() < self._deadline

    def acquire(self) -> bool:
        """Take the lease if it is free or expired; `True` when taken (commits in this thread are fenced)."""
        if not self._local.acquire(blocking=False):
            return False
        try:
            started = time.monotonic()
            row = None
            with self.manager.connection() as conn, translate_all(f"take the lease on {self.mailbox!r}"):
                if self.manager.fair_share:
                    self.manager.update_share(conn)  # the share as of now, not as of the last heartbeat
                if self.manager.may_take_more():
                    row = conn.execute(
                        _ACQUIRE, {"mailbox": self.mailbox, "holder": self.manager.worker, "ttl": self.manager.ttl}
                    ).fetchone()
        except BaseException:
            self._local.release()
            raise
        if row is None:
            self._local.release()
            return False
        self.token = int(row[0])
        self._yield = False
        self._deadline = started + self.manager.ttl - self.manager.margin
        self.manager.held(self)
        set_fence((self.mailbox, self.manager.worker, self.token))
        log.info("lease on mailbox %s taken (token %d) by %s", self.mailbox, self.token, self.manager.worker)
        return True

    def release(self) -> None:
        """Give the lease up (other workers may take it at once) and stop fencing this thread's commits."""
        token = self.token
        set_fence(None)
        if token is None:
            return
        self.token = None
        self.manager.released(self)
        try:
            with self.manager.connection() as conn, translate_all(f"release the lease on {self.mailbox!r}"):
                conn.execute(
                    "DELETE FROM leases WHERE mailbox = %s AND holder = %s AND token = %s",
                    (self.mailbox, self.manager.worker, token),
                )
        except BackendError as exc:  # it expires by itself
            log.warning("could not release the lease on mailbox %s: %s", self.mailbox, exc)
        finally:
            self._local.release()

    def _renewed(self, at: float) -> None:
        self._deadline = at + self.manager.ttl - self.manager.margin

    def _lost(self) -> None:
        log.warning("lease on mailbox %s was lost (expired or taken over)", self.mailbox)
        self._deadline = 0.0

    def _give_up(self) -> None:
        if not self._yield:
            log.info("handing mailbox %s over to another worker (above the fair share)", self.mailbox)
        self._yield = True

    def __enter__(self) -> MailboxLease:
        if not self.acquire():
            raise BackendError(f"mailbox {self.mailbox!r} is leased by another worker", field="mailbox")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class LeaseManager:
    """A fetch worker's mailbox leases and their heartbeat.

    Args:
        backend: The PostgreSQL backend (leases live in its schema).
        mailboxes: The mailbox names this worker serves (every worker should serve the same set; the count
            decides the fair share).
        ttl: Seconds a lease lasts without renewal (default 30). Takeover of a dead worker's mailboxes
            happens within `ttl` plus the mailbox's polling interval.
        fair_share: Hold at most this worker's share of the mailboxes (`fetch --watch`). `False` takes any
            free mailbox (a one-shot `fetch` from cron on several machines).
        worker: This worker's id (default: host, pid and a random suffix).

    Use `lock()` as the poller's lock factory; `close()` (or `with`) releases everything.
    """

    def __init__(
        self,
        backend: PostgresBackend,
        mailboxes: Sequence[str],
        *,
        ttl: float = DEFAULT_LEASE_TTL,
        fair_share: bool = True,
        worker: str | None = None,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0.5 <= ttl <= 3600:
            raise InvalidValueError(f"lease ttl must be between 0.5 and 3600 seconds, got {ttl!r}", field="lease_ttl")
        self.backend = backend
        self.mailboxes = tuple(dict.fromkeys(mailboxes))
        self.ttl = float(ttl)
        self.margin = min(self.ttl / 5, 5.0)
        self.interval = self.ttl / 3
        self.fair_share = fair_share
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leases: dict[str, MailboxLease] = {}
        self._held: set[str] = set()
        self._share = len(self.mailboxes)
        self._guard = threading.Lock()
        self._conn_lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._beat()  # register before the first acquire, so the share counts this worker
        self._thread = threading.Thread(target=self._run, name="ticketmail-lease-heartbeat", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"LeaseManager(worker={self.worker!r}, held={sorted(self._held)!r}, share={self._share})"

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The manager's own connection (never waits for the backend's pool), reopened after a failure."""
        with self._conn_lock:
            if self._conn is None or self._conn.closed:
                self._conn = self.backend.dedicated_connection("ticketmail-leases")
            try:
                yield self._conn
            except BaseException:
                if self._conn.closed or self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    self._conn.close()
                raise

    def lock(self, mailbox: str) -> MailboxLease:
        """The lease object for `mailbox` (one per name; pass this method as the poller's lock factory)."""
        with self._guard:
            lease = self._leases.get(mailbox)
            if lease is None:
                lease = self._leases[mailbox] = MailboxLease(self, mailbox)
            return lease

    @property
    def share(self) -> int:
        """How many mailboxes this worker may hold now."""
        return self._share

    def holding(self) -> frozenset[str]:
        """The mailboxes this worker holds now."""
        with self._guard:
            return frozenset(self._held)

    def may_take_more(self) -> bool:
        """Whether another lease keeps this worker within its fair share."""
        with self._guard:
            return not self.fair_share or len(self._held) < self._share

    def held(self, lease: MailboxLease) -> None:
        """Bookkeeping: `lease` was acquired."""
        with self._guard:
            self._held.add(lease.mailbox)

    def released(self, lease: MailboxLease) -> None:
        """Bookkeeping: `lease` was released."""
        with self._guard:
            self._held.discard(lease.mailbox)

    # -- heartbeat --

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except BackendError as exc:
                log.warning("lease heartbeat failed (%s); leases lapse if this persists", exc)
            except Exception:  # the heartbeat thread must not die
                log.exception("lease heartbeat failed unexpectedly")

    def _beat(self) -> None:
        """Renew this worker's registration and leases, note lost ones, and recompute the fair share."""
        started = time.monotonic()
        with self._guard:
            tokens = {name: lease.token for name, lease in self._leases.items() if lease.token is not None}
        with self.connection() as conn, translate_all("renew mailbox leases"):
            rows = self._renew(conn, tokens)
        renewed = {name for (name,) in rows}
        with self._guard:
            for name, token in tokens.items():
                lease = self._leases[name]
                if lease.token != token:
                    continue  # released meanwhile
                if name in renewed:
                    lease._renewed(started)
                else:
                    lease._lost()
            if self.fair_share:
                excess = len(self._held) - self._share
                for name in sorted(self._held, reverse=True):
                    if excess <= 0:
                        break
                    self._leases[name]._give_up()
                    excess -= 1

    def _renew(self, conn: psycopg.Connection[Any], tokens: dict[str, int]) -> list[Any]:
        conn.execute("BEGIN")
        try:
            conn.execute(
                "INSERT INTO workers (worker, host, pid, started, expires)"
                " VALUES (%s, %s, %s, clock_timestamp(), clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (worker) DO UPDATE SET expires = EXCLUDED.expires",
                (self.worker, socket.gethostname(), os.getpid(), self.ttl),
            )
            rows = (
                conn.execute(
                    "UPDATE leases SET expires = clock_timestamp() + make_interval(secs => %s)"
                    " WHERE holder = %s AND token = ANY(%s) AND expires > clock_timestamp() RETURNING mailbox",
                    (self.ttl, self.worker, list(tokens.values())),
                ).fetchall()
                if tokens
                else []
            )
            self.update_share(conn)
            conn.execute(
                "DELETE FROM workers WHERE expires < clock_timestamp() - make_interval(secs => %s)", (self.ttl * 10,)
            )
            conn.execute("COMMIT")
        except BaseException:
            if not conn.closed:
                conn.execute("ROLLBACK")
            raise
        return rows

    def update_share(self, conn: psycopg.Connection[Any]) -> None:
        """Recompute the fair share from the live workers (this one included)."""
        live = [
            w
            for (w,) in conn.execute(
                "SELECT worker FROM workers WHERE expires > clock_timestamp() ORDER BY worker"
            ).fetchall()
        ]
        if self.worker not in live:
            live.append(self.worker)
            live.sort()
        total = len(self.mailboxes)
        rank = live.index(self.worker)
        self._share = total // len(live) + (1 if rank < total % len(live) else 0)

    # -- shutdown --

    def close(self) -> None:
        """Stop the heartbeat, release every lease and unregister the worker (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        for lease in list(self._leases.values()):
            if lease.token is not None:
                try:
                    lease.release()
                except Exception:
                    log.debug("could not release %s", lease.mailbox, exc_info=True)
        try:
            with self.connection() as conn, translate_all("unregister the worker"):
                conn.execute("DELETE FROM workers WHERE worker = %s", (self.worker,))
        except BackendError as exc:
            log.warning("could not unregister worker %s: %s", self.worker, exc)
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()

    def __enter__(self) -> LeaseManager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
