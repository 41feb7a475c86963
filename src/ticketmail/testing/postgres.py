"""A private, throw-away PostgreSQL server for tests and benchmarks (Debian's or any local installation).

Usage::

    from ticketmail.testing.postgres import PostgresServer

    server = PostgresServer.shared()          # one per process, stopped at exit
    url = server.create_database()            # a fresh, empty database
    backend = PostgresBackend(url)

or in a test module, `postgres = pytest.fixture(scope="session")(postgres_fixture)`.

How it runs: `initdb` into a `tempfile.mkdtemp()` directory (`trust` authentication, UTF-8), then
`postgres` listening on `127.0.0.1` on a free port chosen per process, with its Unix socket inside the
same directory, so parallel test runs never meet. `initdb` refuses to run as root: as root the cluster
belongs to the unprivileged `postgres` system user (or `nobody`) and the server runs as that user.
The binaries come from `TICKETMAIL_PG_BIN` or the newest `/usr/lib/postgresql/*/bin`, else `PATH`.
`fsync` is off by default (test data only; several times faster); pass `fsync=True` to measure.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir", "postgres_fixture"]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (install Debian's `postgresql`)."""


def find_bindir() -> Path:
    """The directory holding `initdb` and `postgres`: `$TICKETMAIL_PG_BIN`, the newest Debian one, or PATH."""
    env = os.environ.get("TICKETMAIL_PG_BIN")
    if env:
        return Path(env)

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin", path)
        return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb) found; install the postgresql package")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One private PostgreSQL cluster; `stop()` (or process exit for `shared()`) removes it."""

    _shared: PostgresServer | None = None
    _shared_lock = threading.Lock()

    def __init__(self, *, fsync: bool = False, max_connections: int = 300) -> None:
        self.bindir = find_bindir()
        self.directory = Path(tempfile.mkdtemp(prefix="tm-pg-"))
        self.data = self.directory / "data"
        self.user = "ticketmail"
        self._process: subprocess.Popen[bytes] | None = None
        self._run_as: tuple[int, int] | None = None
        if os.geteuid() == 0:
            account = None
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    account = pwd.getpwnam(name)
                    break
            if account is None:  # pragma: no cover - every Debian system has nobody
                raise PostgresUnavailable("running as root and no unprivileged user (postgres, nobody) to run initdb")
            self._run_as = (account.pw_uid, account.pw_gid)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        self.directory.chmod(0o755)  # the socket directory must be reachable by clients of any user
        self.port = 0
        try:
            self._initdb()
            self._start(fsync=fsync, max_connections=max_connections)
        except BaseException:
            self.stop()
            raise

    # -- lifecycle --

    def _popen(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs = {"user": self._run_as[0], "group": self._run_as[1], "extra_groups": []}
        with open(log, "ab") as out:
            if self._run_as is not None:
                os.chown(log, *self._run_as)
            proc: subprocess.Popen[bytes] = subprocess.Popen(  # noqa: S603 - fixed binaries, arguments built here
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
                **kwargs,  # type: ignore[call-overload]
            )
            return proc

    def _initdb(self) -> None:
        log = self.directory / "initdb.log"
        proc = self._popen(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            log,
        )
        if proc.wait(timeout=120) != 0:
            raise PostgresUnavailable(f"initdb failed: {log.read_text(errors='replace')[-2000:]}")

    def _start(self, *, fsync: bool, max_connections: int) -> None:
        log = self.directory / "postgres.log"
        for _ in range(5):
            self.port = _free_port()
            self._process = self._popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.directory),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"max_connections={max_connections}",
                    "-c",
                    f"fsync={'on' if fsync else 'off'}",
                    "-c",
                    f"synchronous_commit={'on' if fsync else 'off'}",
                    "-c",
                    f"full_page_writes={'on' if fsync else 'off'}",
                    "-c",
                    "shared_buffers=64MB",
                    "-c",
                    "log_min_messages=warning",
                ],
                log,
            )
            if self._wait_ready(log):
                return
            self._terminate()
        raise PostgresUnavailable(f"postgres did not start: {log.read_text(errors='replace')[-2000:]}")

    def _wait_ready(self, log: Path) -> bool:
        import psycopg

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        proc = self._process
        self._process = None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back sessions, checkpoint, exit
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server and delete its directory (idempotent)."""
        self._terminate()
        shutil.rmtree(self.directory, ignore_errors=True)

    @classmethod
    def shared(cls) -> PostgresServer:
        """The process-wide server, started on first use and stopped when the process exits."""
        with cls._shared_lock:
            if cls._shared is None or cls._shared._process is None:
                cls._shared = cls()
                atexit.register(cls._shared.stop)
            return cls._shared

    # -- databases --

    def url(self, database: str = "postgres") -> str:
        """A `postgresql://` URL for `database` on this server (TCP on loopback)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a random name by default) and return its URL."""
        import psycopg
        from psycopg import sql

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url` (connections to it are terminated first)."""
        import psycopg
        from psycopg import sql

        name = url.rsplit("/", 1)[-1]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postgres_fixture() -> Iterator[PostgresServer]:
    """A fixture body: the shared server (wrap with `pytest.fixture(scope="session")`)."""
    yield PostgresServer.shared()
