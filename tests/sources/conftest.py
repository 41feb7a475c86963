"""A REAL private Dovecot for the source tests, started once per test session.

Nothing here is mocked: the fixtures start ``dovecot -c DIR/dovecot.conf`` on loopback high ports with a
self-made config, a self-signed certificate made by ``openssl`` at test time (SAN ``localhost`` and
``127.0.0.1``, so hostname checking stays on) and a static passdb, so **every user name is a fresh, empty
mailbox** (per-test isolation without restarts). If ``dovecot`` is missing or is 2.4 (different config
syntax) the session fails with a clear message; it never skips (CI=true turns skips into failures).

Fixtures (use them from any test module in ``tests/sources/``):

``dovecot`` (session)
    A :class:`Dovecot` handle. Useful members:

    * ``host`` (``"127.0.0.1"``), ``ports``: ``{"imap", "imaps", "pop3", "pop3s"}`` -> port (``imap``/``pop3``
      serve plaintext and STARTTLS/STLS), ``closed_port`` (nothing listens there), ``ca_file`` (the cert),
      ``password`` (every user's password), ``dir`` (the server's directory; log in ``dir/dovecot.log``).
      The server also listens on ``127.0.0.2``, an address the certificate does not name (host-name checks).
    * ``new_user(prefix="u")`` -> a fresh user name (empty mailbox).
    * ``config(user, protocol="imap", security="ssl", **overrides)`` -> a ready
      :class:`~ticketmail.sources.config.MailboxConfig` (right port, ``ca_file``, password).
    * ``issue_token(user)`` -> an OAuth2 access token the server accepts for XOAUTH2/OAUTHBEARER
      (validated by a local stdlib HTTP introspection server); ``revoke_token(token)``.
    * ``append(user, raw, folder="INBOX", flags=())`` -> the new UID (creates the folder if needed);
      ``append_many(user, raws, folder="INBOX")``.
    * ``state(user, folder="INBOX")`` -> list of :class:`MessageState` (uid, flags, raw bytes), read without
      changing anything (``BODY.PEEK``); ``folders(user)`` -> folder names; ``uidvalidity(user, folder)``.
    * ``imap(user)`` -> a logged-in plaintext ``imaplib.IMAP4`` (context manager; logs out).

``mail_user`` (function)
    A fresh user name for the test.

``make_message`` (function)
    ``make_message(i=0, subject=None, size=None, sender=None)`` -> RFC 5322 bytes, ``size`` padding the body to
    about that many bytes.
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest

from ticketmail.sources.config import MailboxConfig, mailbox_from_dict

PASSWORD = "s3cret-Pw!"
MAIL_UID = 8  # Debian's "mail" user; Dovecot's first_valid_uid below


@attrs.frozen
class MessageState:
    """One message as it is on the server: UID, flags, raw bytes."""

    uid: int
    flags: tuple[str, ...]
    data: bytes


class _TokenServer:
    """OAuth2 token introspection (RFC 7662 shape) for Dovecot's oauth2 passdb."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        tokens = self.tokens

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                token = (form.get("token") or [""])[0]
                if not token:
                    auth = self.headers.get("Authorization", "")
                    token = auth.removeprefix("Bearer ").strip()
                user = tokens.get(token)
                body = json.dumps({"active": "true", "username": user} if user else {"active": "false"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _free_port_block(base: int, count: int) -> int:
    """First port >= base where ``count`` consecutive ports are bindable on loopback."""
    port = base
    while port < 60000:
        ok = True
        for p in range(port, port + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
        port += count
    raise RuntimeError("no free loopback port block found")


_CONF = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
listen = 127.0.0.1, 127.0.0.2
protocols = imap pop3
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
mail_location = maildir:~/Maildir
mailbox_list_index = no
mail_fsync = never
first_valid_uid = {uid}
mailbox_idle_check_interval = 1 secs
pop3_uidl_format = %08Xv%08Xu
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = static
  args = password={password}
  mechanisms = plain login
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={d}/home/%u
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
"""

_OAUTH_CONF = """\
introspection_mode = post
introspection_url = http://127.0.0.1:{port}/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
"""


class Dovecot:
    """A running private Dovecot instance (see the module docstring for the API)."""

    host = "127.0.0.1"
    password = PASSWORD

    def __init__(self, introspection_url: str | None = None) -> None:
        exe = shutil.which("dovecot") or next(
            (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.path.exists(p)), None
        )
        if exe is None:
            pytest.fail(
                "dovecot is not installed: apt-get install -y dovecot-imapd dovecot-pop3d (scripts/system-deps)",
                pytrace=False,
            )
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        if not version.startswith("2.3"):
            pytest.fail(f"dovecot {version!r} found; these fixtures need Dovecot 2.3 (2.4 config syntax differs)")
        self.exe = exe
        self.dir = Path(tempfile.mkdtemp(prefix="tmdc"))
        self.dir.chmod(0o755)  # mail processes run as uid 8: every parent must be world-executable
        (self.dir / "home").mkdir(mode=0o777)
        (self.dir / "home").chmod(0o777)
        base = _free_port_block(20000 + (os.getpid() % 3000) * 10, 5)
        self.ports = {"imap": base, "imaps": base + 1, "pop3": base + 2, "pop3s": base + 3}
        self.closed_port = base + 4
        self.ca_file = str(self.dir / "cert.pem")
        self._make_cert()
        self.tokens = _TokenServer()
        (self.dir / "oauth2.conf.ext").write_text(_OAUTH_CONF.format(port=self.tokens.port))
        if introspection_url is not None:  # an external OAuth2 server (tests/oauth) validates the tokens
            conf_ext = _OAUTH_CONF.replace("http://127.0.0.1:{port}/introspect", introspection_url)
            (self.dir / "oauth2.conf.ext").write_text(conf_ext)
        conf = _CONF.format(d=self.dir, uid=MAIL_UID, password=PASSWORD, **self.ports)
        (self.dir / "dovecot.conf").write_text(conf)
        check = subprocess.run(
            [exe, "-n", "-c", str(self.dir / "dovecot.conf")], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            pytest.fail(f"dovecot rejected the test config: {check.stderr.strip()}")
        self._counter = itertools.count(1)
        self._start()

    def _make_cert(self) -> None:
        result = subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-subj", "/CN=localhost",
                "-keyout", str(self.dir / "key.pem"), "-out", str(self.dir / "cert.pem"),
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"openssl could not make the test certificate: {result.stderr.strip()}")

    def _start(self) -> None:
        with open(self.dir / "stderr", "ab") as err:
            subprocess.run(
                [self.exe, "-c", str(self.dir / "dovecot.conf")],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, check=False,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.ports["imap"]), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        log = (self.dir / "stderr").read_text(errors="replace")[-2000:]
        pytest.fail(f"dovecot did not start within 10 s; stderr: {log}")

    def stop(self) -> None:
        """SIGTERM the master and wait until it is gone; remove the directory."""
        pidfile = self.dir / "run" / "master.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    break
                if stat.rsplit(")", 1)[1].split()[0] == "Z":
                    break
                time.sleep(0.05)
        self.tokens.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers for tests ----------------------------------------------------------------------------

    def new_user(self, prefix: str = "u") -> str:
        """A fresh user name: its mailbox is empty."""
        return f"{prefix}{os.getpid()}x{next(self._counter)}"

    def config(self, user: str, protocol: str = "imap", security: str = "ssl", **overrides: Any) -> MailboxConfig:
        """A MailboxConfig for ``user`` on this server (``overrides`` are MailboxConfig fields)."""
        if "port" not in overrides:
            kind = protocol + ("s" if security == "ssl" else "")
            overrides["port"] = self.ports[kind]
        data: dict[str, Any] = {
            "name": f"mb-{user}",
            "protocol": protocol,
            "host": self.host,
            "security": security,
            "ca_file": self.ca_file,
            "username": user,
            "address": f"{user}@example.test",
            "timeout": 10.0,
        }
        if overrides.get("auth") != "oauth2" and not {"password_env", "password_file"} & set(overrides):
            data["password"] = PASSWORD
        if overrides.get("verify") is False:
            data.pop("ca_file")
        data.update(overrides)
        return mailbox_from_dict(data)

    def issue_token(self, user: str) -> str:
        """An access token the server accepts for ``user`` (XOAUTH2/OAUTHBEARER)."""
        token = f"tok-{user}-{next(self._counter)}"
        self.tokens.tokens[token] = user
        return token

    def revoke_token(self, token: str) -> None:
        """Make a token invalid."""
        self.tokens.tokens.pop(token, None)

    @contextlib.contextmanager
    def imap(self, user: str) -> Iterator[imaplib.IMAP4]:
        """A logged-in plaintext imaplib client for ``user``."""
        client = imaplib.IMAP4(self.host, self.ports["imap"], timeout=10)
        try:
            client.login(user, PASSWORD)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(self, user: str, raw: bytes, folder: str = "INBOX", flags: Sequence[str] = ()) -> int:
        """APPEND one message; returns its UID (UIDPLUS APPENDUID)."""
        return self.append_many(user, [raw], folder, flags)[0]

    def append_many(
        self, user: str, raws: Sequence[bytes], folder: str = "INBOX", flags: Sequence[str] = ()
    ) -> list[int]:
        """APPEND messages in order; returns their UIDs."""
        uids: list[int] = []
        with self.imap(user) as client:
            if folder != "INBOX":
                client.create(_q(folder))
            flag_list = f"({' '.join(flags)})" if flags else None
            for raw in raws:
                typ, data = client.append(_q(folder), flag_list, None, raw)
                assert typ == "OK", data
                m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
                assert m, data
                uids.append(int(m.group(1)))
        return uids

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        """The folder's UIDVALIDITY."""
        with self.imap(user) as client:
            typ, data = client.status(_q(folder), "(UIDVALIDITY)")
            assert typ == "OK", data
            m = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
            assert m
            return int(m.group(1))

    def folders(self, user: str) -> list[str]:
        """Folder names of the user's mailbox."""
        with self.imap(user) as client:
            typ, data = client.list()
            assert typ == "OK"
            names = []
            for line in data:
                if isinstance(line, bytes):
                    names.append(line.rsplit(b" ", 1)[1].strip(b'"').decode())
            return sorted(names)

    def state(self, user: str, folder: str = "INBOX") -> list[MessageState]:
        """The messages in ``folder``: UID, flags, bytes (read with BODY.PEEK: nothing changes)."""
        with self.imap(user) as client:
            typ, _ = client.select(_q(folder), readonly=True)
            if typ != "OK":
                return []
            typ, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
            assert typ == "OK", data
            out = []
            for part in data:
                if isinstance(part, tuple):
                    head = part[0]
                    uid = int(re.search(rb"UID (\d+)", head).group(1))  # type: ignore[union-attr]
                    flags = re.search(rb"FLAGS \(([^)]*)\)", head)
                    flag_t = tuple(flags.group(1).decode().split()) if flags else ()
                    out.append(MessageState(uid, flag_t, part[1]))
            return sorted(out, key=lambda m: m.uid)


def _q(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """The session's private Dovecot (see the module docstring)."""
    server = Dovecot()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mail_user(dovecot: Dovecot) -> str:
    """A fresh user (empty mailbox) on the session's Dovecot."""
    return dovecot.new_user()


def _make_message(i: int = 0, subject: str | None = None, size: int | None = None, sender: str | None = None) -> bytes:
    subject = subject if subject is not None else f"Test message {i}"
    sender = sender or f"customer{i}@example.org"
    head = (
        f"From: Customer {i} <{sender}>\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
        f"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m{i}.{time.monotonic_ns()}@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    body = f"Hello, this is message {i}.\r\n".encode()
    if size is not None and size > len(head) + len(body):
        line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
        need = size - len(head) - len(body)
        body += (line * (need // len(line) + 1))[:need]
    return head + body


@pytest.fixture
def make_message() -> Callable[..., bytes]:
    """A factory of simple RFC 5322 messages (see the module docstring)."""
    return _make_message
