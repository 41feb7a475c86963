"""Connecting to a mail server stage by stage, so every failure names its stage.

Why not just `imaplib.IMAP4_SSL(host, port)`: that one call resolves, connects, handshakes and reads the
greeting, and its exceptions (`gaierror`, `ConnectionRefusedError`, `SSLCertVerificationError`,
`SSLError: wrong version number`, a bare timeout) tell an operator little. Here each step is separate and
translated into a `SourceError` with `stage` one of:

`dns`      the host name does not resolve;
`connect`  TCP connect refused (nothing listens: wrong port) or timed out (firewall, wrong host);
`tls`      certificate verification failed, or the port speaks a different security than configured
             (`ssl` against a plaintext port, or plaintext/STARTTLS against an implicit-TLS port, RFC 8314);
`protocol` the server's greeting is not IMAP/POP3.

The adapters hand the prepared socket to `imaplib`/`poplib` through their `_create_socket` hook.
Messages never contain credentials.
"""

from __future__ import annotations

import imaplib
import poplib
import select
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from ticketmail.errors import SourceError
from ticketmail.sources.config import MailboxConfig

__all__ = ["classify_tls_error", "make_ssl_context", "open_socket", "scrub", "server_text", "translate"]

_MAX_REPLY = 300  # characters of a server reply quoted in an error

_GREETING_WAIT = 5.0  # seconds to wait for a plaintext greeting before suspecting an implicit-TLS port


def make_ssl_context(config: MailboxConfig) -> ssl.SSLContext:
    """The TLS context for `config`: system CAs or `ca_file`; no verification only when `verify=False`."""
    try:
        ctx = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise SourceError(
            f"cannot load ca_file {config.ca_file}: {type(exc).__name__}: {exc}",
            stage="tls",
            mailbox=config.name,
        ) from exc
    if not config.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _where(config: MailboxConfig) -> str:
    return f"{config.host}:{config.effective_port}"


def classify_tls_error(exc: BaseException, config: MailboxConfig) -> SourceError:
    """A SourceError(stage="tls") with an actionable message for a handshake failure."""
    where = _where(config)
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "mismatch" in (exc.verify_message or "").lower():
            return SourceError(
                f"TLS certificate verification failed for {where}: {exc.verify_message}; the certificate was "
                f"issued for another name: set host to a name the certificate lists (not {config.host!r})",
                stage="tls",
                mailbox=config.name,
            )
        hint = (
            f"set ca_file to the CA that signed the server certificate (now: {config.ca_file})"
            if config.ca_file
            else "set ca_file to the server's CA bundle"
        )
        return SourceError(
            f"TLS certificate verification failed for {where}: {exc.verify_message}; {hint}, "
            "or (test servers only) verify = false",
            stage="tls",
            mailbox=config.name,
        )
    text = str(exc).lower()
    markers = ("wrong version number", "record layer failure", "packet length too long", "unknown protocol", "eof")
    if isinstance(exc, (ssl.SSLError, ConnectionResetError)) and any(m in text for m in markers):
        return SourceError(
            f"TLS handshake failed at {where}: the port does not speak implicit TLS (it is probably a plaintext "
            f"or STARTTLS port); use security = 'starttls' or 'none' here, or the implicit-TLS port "
            f"({993 if config.protocol == 'imap' else 995})",
            stage="tls",
            mailbox=config.name,
        )
    if isinstance(exc, TimeoutError):
        return SourceError(
            f"TLS handshake with {where} timed out after {config.timeout:g} s: the port may not speak TLS",
            stage="tls",
            mailbox=config.name,
        )
    return SourceError(
        f"TLS handshake with {where} failed: {type(exc).__name__}: {exc}", stage="tls", mailbox=config.name
    )


def _resolve(config: MailboxConfig) -> list[tuple[int, tuple[str, int]]]:
    host, port = config.host or "", config.effective_port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = (exc.strerror if isinstance(exc, OSError) else None) or exc
        raise SourceError(
            f"cannot resolve host {host!r}: {why}; check the host name and DNS",
            stage="dns",
            mailbox=config.name,
        ) from exc
    return [(family, addr[:2]) for family, _, _, _, addr in infos]  # type: ignore[misc]


def _connect(config: MailboxConfig, addresses: list[tuple[int, tuple[str, int]]]) -> socket.socket:
    where = _where(config)
    last: OSError | None = None
    for family, addr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(config.timeout)
        try:
            sock.connect(addr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    if isinstance(last, ConnectionRefusedError):
        raise SourceError(
            f"connection refused by {where}: nothing listens on port {config.effective_port}; check the port "
            f"(IMAP 143/993, POP3 110/995) and that the server runs",
            stage="connect",
            mailbox=config.name,
        ) from last
    if isinstance(last, TimeoutError):
        raise SourceError(
            f"connecting to {where} timed out after {config.timeout:g} s: a firewall drops the packets or the host "
            "is wrong",
            stage="connect",
            mailbox=config.name,
        ) from last
    raise SourceError(
        f"cannot connect to {where}: {type(last).__name__}: {last}", stage="connect", mailbox=config.name
    ) from last


def _looks_like_tls_port(config: MailboxConfig, addr: tuple[int, tuple[str, int]]) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.socket(addr[0], socket.SOCK_STREAM) as raw:
            raw.settimeout(min(config.timeout, _GREETING_WAIT))
            raw.connect(addr[1])
            with ctx.wrap_socket(raw, server_hostname=config.host):
                return True
    except (OSError, ssl.SSLError):
        return False


def _check_greeting(config: MailboxConfig, sock: socket.socket, addr: tuple[int, tuple[str, int]]) -> None:
    """For plaintext/STARTTLS: the server must greet in clear text; detect an implicit-TLS port instead."""
    wait = min(config.timeout, _GREETING_WAIT)
    readable, _, _ = select.select([sock], [], [], wait)
    first = b""
    if readable:
        try:
            first = sock.recv(8, socket.MSG_PEEK)
        except OSError:
            first = b""
    expected = b"* " if config.protocol == "imap" else b"+OK"
    if first.startswith(expected[:1]) and first:
        return
    if first[:1] in (b"\x15", b"\x16") or _looks_like_tls_port(config, addr):
        sock.close()
        raise SourceError(
            f"{_where(config)} speaks implicit TLS, but security is {config.security!r}: use security = 'ssl' for "
            "this port, or the plaintext/STARTTLS port "
            f"({143 if config.protocol == 'imap' else 110})",
            stage="tls",
            mailbox=config.name,
        )
    sock.close()
    if not first:
        raise SourceError(
            f"{_where(config)} accepted the connection but sent no {config.protocol.upper()} greeting within "
            f"{wait:g} s; is this the right port?",
            stage="protocol",
            mailbox=config.name,
        )
    raise SourceError(
        f"{_where(config)} does not greet like an {config.protocol.upper()} server "
        f"(got {server_text(first)!r}); check the port",
        stage="protocol",
        mailbox=config.name,
    )


def open_socket(config: MailboxConfig, ctx: ssl.SSLContext | None = None) -> socket.socket:
    """Resolve, connect and (for `security = "ssl"`) handshake; the socket is ready for the greeting.

    Raises:
        SourceError: With stage `dns`, `connect`, `tls` or `protocol`.
    """
    addresses = _resolve(config)
    sock = _connect(config, addresses)
    if config.security == "ssl":
        context = ctx or make_ssl_context(config)
        try:
            return context.wrap_socket(sock, server_hostname=config.host)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise classify_tls_error(exc, config) from exc
    peer = sock.getpeername()
    _check_greeting(config, sock, (sock.family, (peer[0], peer[1])))
    return sock


@contextmanager
def translate(config: MailboxConfig, stage: str, what: str, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Turn imaplib/poplib/ssl/socket errors raised inside into SourceError(stage), secrets scrubbed."""
    try:
        yield
    except SourceError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise classify_tls_error(exc, config) from exc
    except TimeoutError as exc:
        raise SourceError(
            f"{what}: {_where(config)} did not answer within {config.timeout:g} s", stage=stage, mailbox=config.name
        ) from exc
    except Exception as exc:
        if not _is_translatable(exc):
            raise
        text = scrub(f"{type(exc).__name__}: {server_text(exc)}", secrets)
        raise SourceError(f"{what} failed at {_where(config)}: {text}", stage=stage, mailbox=config.name) from exc


def _is_translatable(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, ssl.SSLError, imaplib.IMAP4.error, poplib.error_proto, EOFError, ValueError))


def server_text(value: object) -> str:
    """A server reply (or an exception carrying one) as readable text, never a Python `b'...'` literal.

    imaplib and poplib put the server's raw reply bytes into their exceptions and responses; this decodes
    them (UTF-8, else Latin-1), joins lists of reply lines with spaces, drops control characters and cuts
    the result to a few hundred characters.
    """
    if isinstance(value, BaseException):
        args = value.args
        if any(isinstance(arg, (bytes, bytearray, list, tuple)) for arg in args):
            value = args[0] if len(args) == 1 else list(args)
        else:  # e.g. OSError's "[Errno 111] Connection refused": its own text reads best
            value = str(value)
    if isinstance(value, (list, tuple)):
        text = " ".join(server_text(item) for item in value if item is not None)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    else:
        text = str(value)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REPLY else text[: _MAX_REPLY - 1] + "\u2026"


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret (and its obvious encodings) replaced by `********`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text
