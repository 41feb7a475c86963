"""Fixtures for the receiver tests: a REAL private Postfix, a bounce collector, LMTP client helpers.

``postfix`` (session) starts Debian's Postfix with its own ``config_directory``, ``queue_directory`` and
``data_directory`` in a ``tempfile.mkdtemp()`` directory, an ``inet`` listener on a loopback port free in this
process, and a transport map that sends ``desk.test`` to the receiver over ``lmtp:unix:DIR/lmtp.sock`` and
``client.test`` (where the test senders live, so bounces come back) to an SMTP collector on loopback. It is
stopped with ``postfix -c DIR stop`` and the directory removed at the end; nothing outside it is touched.
Postfix's own programs need root here (the master process, setgid ``postdrop``); a session that cannot run it
fails with a clear message instead of skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiosmtpd.controller import Controller

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.pipeline import Pipeline
from ticketmail.receive import Receiver, ReceiveSettings, RecipientRouter
from ticketmail.sources.config import MailboxConfig

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
# Postfix's master runs as root; without root, passwordless sudo runs the postfix commands.
AS_ROOT: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]

MAILBOXES = (
    MailboxConfig(name="support", protocol="lmtp", address="support@desk.test", department="IT", priority=2),
    MailboxConfig(
        name="sales", protocol="lmtp", addresses=["sales@desk.test", "vertrieb@desk.test"], category="orders"
    ),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def message(i: int = 0, *, subject: str | None = None, sender: str = "alice@client.test", size: int = 0) -> bytes:
    """A small RFC 5322 message with CRLF line ends and a unique Message-ID."""
    body = f"Hello, this is message {i}.\r\n"
    if size:
        body += ("x" * 70 + "\r\n") * (size // 72 + 1)
    return (
        f"From: Alice <{sender}>\r\nTo: support@desk.test\r\nSubject: {subject or f'Question {i}'}\r\n"
        f"Message-ID: <m{i}.{time.monotonic_ns()}@client.test>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
        f"\r\n{body}"
    ).encode()


def lmtp_send(client: smtplib.SMTP, sender: str, recipients: Sequence[str], data: bytes) -> list[tuple[int, bytes]]:
    """One LMTP transaction; the replies per recipient (``550`` at RCPT included, in recipient order).

    smtplib's ``LMTP.sendmail`` reads a single reply after ``DATA``; LMTP sends one per accepted recipient.
    """
    code, resp = client.mail(sender)
    if code != 250:
        return [(code, resp)] * len(recipients)
    results: list[tuple[int, bytes] | None] = []
    accepted = 0
    for rcpt in recipients:
        code, resp = client.rcpt(rcpt)
        if code == 250:
            accepted += 1
            results.append(None)
        else:
            results.append((code, resp))
    if not accepted:
        client.rset()
        return [r for r in results if r is not None]
    client.putcmd("data")
    code, resp = client.getreply()
    if code != 354:
        return [(code, resp)] * len(recipients)
    client.send(smtplib._quote_periods(data) + (b"" if data.endswith(b"\r\n") else b"\r\n") + b".\r\n")  # type: ignore[attr-defined]
    return [r if r is not None else client.getreply() for r in results]


# -- a memory-backed receiver on a unix socket ------------------------------------------------------------------


@attrs.define
class Running:
    receiver: Receiver
    backend: Any
    path: str

    def client(self) -> smtplib.LMTP:
        client = smtplib.LMTP(self.path, timeout=10)
        client.ehlo("client.test")
        return client


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tm-recv-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_receiver(sockdir: Path) -> Iterator[Callable[..., Running]]:
    """``start_receiver(backend=None, mailboxes=MAILBOXES, rules=None, **settings)`` -> a running receiver."""
    started: list[Receiver] = []

    def start(
        backend: Any = None, mailboxes: Sequence[MailboxConfig] = MAILBOXES, rules: Any = None, **kw: Any
    ) -> Running:
        backend = backend if backend is not None else InMemoryBackend()
        path = str(sockdir / f"lmtp{len(started)}.sock")
        kw.setdefault("lmtp", f"unix:{path}")
        settings = ReceiveSettings(**kw)
        if settings.lmtp is not None and settings.lmtp.path:
            path = settings.lmtp.path
        receiver = Receiver(Pipeline(backend, rules=rules), RecipientRouter(mailboxes), settings)
        receiver.start()
        started.append(receiver)
        return Running(receiver, backend, path)

    yield start
    for receiver in started:
        receiver.stop()


# -- Postfix ------------------------------------------------------------------------------------------------------


class Collector:
    """Mail Postfix sends to ``client.test`` (bounces): kept as (sender, recipients, bytes)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 OK"

    def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for _, _, data in self.messages:
                    if predicate(data):
                        return data
            time.sleep(0.05)
        raise AssertionError("no such message arrived at the collector")


_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix instance (see the module docstring)."""

    def __init__(self, root: Path, collector_port: int) -> None:
        self.root = root
        self.etc = root / "etc"
        self.port = free_port()
        self.socket = str(root / "lmtp.sock")
        self.lmtp_port = free_port()  # tcp.test is delivered over lmtp:inet: to this loopback port
        self.log = root / "maillog"
        for sub in ("etc", "spool", "data"):
            (root / sub).mkdir()
        subprocess.run([*AS_ROOT, "chown", "postfix", str(root / "data")], check=True, timeout=30)
        main_cf = f"""\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.log}
maillog_file_prefixes = {root}
myhostname = mx.test.invalid
mydomain = test.invalid
myorigin = test.invalid
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = desk.test, tcp.test
transport_maps = inline:{{ desk.test=lmtp:unix:{self.socket}, tcp.test=lmtp:inet:127.0.0.1:{self.lmtp_port},
    client.test=smtp:[127.0.0.1]:{collector_port} }}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
local_recipient_maps =
alias_maps =
alias_database =
in_flow_delay = 0
smtputf8_enable = no
biff = no
"""
        (self.etc / "main.cf").write_text(main_cf)
        (self.etc / "master.cf").write_text(_MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*AS_ROOT, *argv], capture_output=True, text=True, timeout=60, check=check)

    def start(self) -> None:
        result = self._run(POSTFIX, "-c", str(self.etc), "start", check=False)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            pytest.fail(f"postfix did not start (rc {result.returncode}): {result.stderr}\n{log[-2000:]}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        pytest.fail("postfix is not listening")

    def stop(self) -> None:
        self._run(POSTFIX, "-c", str(self.etc), "stop", check=False)
        pid_file = self.root / "spool" / "pid" / "master.pid"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_file.exists():
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, 0)
            except (OSError, ValueError, IndexError):
                break
            time.sleep(0.05)

    def submit(self, sender: str, recipients: Sequence[str], data: bytes) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as client:
            return client.sendmail(sender, list(recipients), data)

    def queue(self) -> list[dict[str, Any]]:
        out = self._run(POSTQUEUE, "-c", str(self.etc), "-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def flush(self) -> None:
        self._run(POSTQUEUE, "-c", str(self.etc), "-f")

    def wait_queue(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            queue = self.queue()
            if predicate(queue):
                return queue
            if time.monotonic() > deadline:
                raise AssertionError(f"postfix queue never matched: {queue}\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def collector() -> Iterator[tuple[Collector, int]]:
    sink = Collector()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def postfix(collector: tuple[Collector, int]) -> Iterator[Postfix]:
    if not os.path.exists(POSTFIX):
        pytest.fail("postfix is not installed; run scripts/system-deps")
    if AS_ROOT and subprocess.run([*AS_ROOT, "true"], capture_output=True, check=False).returncode != 0:
        pytest.fail("the private Postfix instance needs root or passwordless sudo (its master runs as root)")
    root = Path(tempfile.mkdtemp(prefix="tm-postfix-"))
    root.chmod(0o755)  # the lmtp client runs as the postfix user and must reach the socket inside
    server = Postfix(root, collector[1])
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if AS_ROOT:  # the queue belongs to root and postfix now
            subprocess.run([*AS_ROOT, "rm", "-rf", str(root)], check=False, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="lmtp_send")
def _lmtp_send() -> Callable[..., list[tuple[int, bytes]]]:
    return lmtp_send


@pytest.fixture(name="make_message")
def _make_message() -> Callable[..., bytes]:
    return message
