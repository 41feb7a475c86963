"""Opening an IMAP session: connect, STARTTLS, authenticate, read capabilities, select the folder.

Each step raises a `SourceError` naming its stage (`tls`, `auth`, `protocol`, `folder`); messages never
contain the password or the token (`Login.secrets` lists what to scrub from server replies).
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl

import attrs

from ticketmail.errors import SourceError
from ticketmail.sources._imap_wire import parse_folders, quote_folder
from ticketmail.sources._net import (
    classify_tls_error,
    make_ssl_context,
    open_socket,
    scrub,
    server_text,
    translate,
)
from ticketmail.sources.config import MailboxConfig
from ticketmail.sources.oauth import xoauth2_responder

__all__ = ["Login", "Selected", "list_folders", "login", "select"]


class _IMAP4(imaplib.IMAP4):
    """imaplib on a socket that `_net.open_socket` already connected (and maybe TLS-wrapped).

    `_create_socket` is imaplib's only hook for the socket it talks on (stable from Python 3.9 to 3.14;
    `tests/sources/test_imap.py` fails loudly if it goes). The documented alternative, overriding `open()`,
    would have to set the buffered reader itself, whose attribute changed name in Python 3.14.
    """

    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float) -> None:
        self._tm_sock = sock
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self._tm_sock


@attrs.frozen
class Login:
    """An authenticated client, the server's capabilities (upper case) and the secrets it was given."""

    client: imaplib.IMAP4
    capabilities: frozenset[str]
    secrets: tuple[str, ...]


@attrs.frozen
class Selected:
    """What `SELECT`/`EXAMINE` reported: message count, `UIDVALIDITY`, whether keywords can be stored."""

    exists: int
    uidvalidity: int
    keywords_ok: bool


def login(cfg: MailboxConfig) -> Login:
    """Connect, STARTTLS if configured and authenticate (stage-named errors); the caller logs out."""
    ctx = make_ssl_context(cfg) if cfg.security != "none" else None
    sock = open_socket(cfg, ctx)
    try:
        with translate(cfg, "protocol", "IMAP greeting"):
            client = _IMAP4(sock, cfg.host or "", cfg.effective_port, cfg.timeout)
    except BaseException:
        sock.close()
        raise
    try:
        if cfg.security == "starttls":
            _starttls(cfg, client, ctx)
        secrets = _authenticate(cfg, client)
        with translate(cfg, "protocol", "CAPABILITY", secrets):
            typ, data = client.capability()
            caps = data[0].decode("ascii", "replace").upper().split() if typ == "OK" and data and data[0] else []
    except BaseException:
        with contextlib.suppress(Exception):
            client.logout()
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    capabilities = frozenset(caps) | frozenset(c.upper() for c in client.capabilities)
    return Login(client=client, capabilities=capabilities, secrets=secrets)


def _starttls(cfg: MailboxConfig, client: imaplib.IMAP4, ctx: ssl.SSLContext | None) -> None:
    if "STARTTLS" not in client.capabilities:
        raise SourceError(
            f"{cfg.host}:{cfg.effective_port} does not offer STARTTLS; use security = 'ssl' with port 993, "
            "or 'none' on a trusted network only",
            stage="tls",
            mailbox=cfg.name,
        )
    with translate(cfg, "tls", "STARTTLS"):
        try:
            client.starttls(ssl_context=ctx)
        except ssl.SSLError as exc:
            raise classify_tls_error(exc, cfg) from exc


def _authenticate(cfg: MailboxConfig, client: imaplib.IMAP4) -> tuple[str, ...]:
    """LOGIN (AUTHENTICATE PLAIN for non-ASCII credentials) or XOAUTH2; returns the secrets used."""
    user = cfg.login
    if cfg.auth == "oauth2":
        token = cfg.access_token()
        secrets = (token.reveal(),)
        with translate(cfg, "auth", "XOAUTH2 authentication", secrets):
            try:
                client.authenticate("XOAUTH2", xoauth2_responder(user, token))
            except imaplib.IMAP4.error as exc:
                cfg.token_refused()  # the built-in OAuth2 lifecycle fetches a new token next time
                raise _auth_error(cfg, exc, secrets) from exc
        return secrets
    password = cfg.secret().reveal()
    secrets = (password,)
    if "LOGINDISABLED" in client.capabilities:  # RFC 3501 section 6.2.3
        raise SourceError(
            f"{cfg.host}:{cfg.effective_port} refuses password login on an unencrypted connection: use "
            "security = 'starttls' (or 'ssl' with port 993)",
            stage="auth",
            mailbox=cfg.name,
        )
    with translate(cfg, "auth", "login", secrets):
        try:
            if user.isascii() and password.isascii():
                client.login(user, password)
            else:  # RFC 4616 PLAIN carries UTF-8; LOGIN's quoted strings are ASCII in imaplib
                plain = b"\0" + user.encode() + b"\0" + password.encode()
                client.authenticate("PLAIN", lambda _challenge: plain)
        except imaplib.IMAP4.error as exc:
            raise _auth_error(cfg, exc, secrets) from exc
    return secrets


def _auth_error(cfg: MailboxConfig, exc: imaplib.IMAP4.error, secrets: tuple[str, ...]) -> SourceError:
    server = scrub(server_text(exc), secrets)
    how = "token" if cfg.auth == "oauth2" else "user name or password"
    return SourceError(
        f"authentication as {cfg.login!r} failed at {cfg.host}:{cfg.effective_port}: "
        f"check the {how} (server said: {server})",
        stage="auth",
        mailbox=cfg.name,
    )


def select(
    cfg: MailboxConfig, client: imaplib.IMAP4, folder: str, *, readonly: bool, secrets: tuple[str, ...]
) -> Selected:
    """`SELECT` (`EXAMINE` when `readonly`) the folder; an unknown folder's error lists the server's folders."""
    with translate(cfg, "folder", f"SELECT {folder!r}", secrets):
        typ, data = client.select(quote_folder(folder), readonly=readonly)
        if typ != "OK":
            names = list_folders(client)
            raise SourceError(
                f"cannot select folder {folder!r}: {server_text(data)}; folders on the server: {', '.join(names)}",
                stage="folder",
                mailbox=cfg.name,
            )
        exists = int(data[0] or b"0")
        for name in ("EXISTS", "RECENT"):  # imaplib's select() reads them without popping
            client.untagged_responses.pop(name, None)
        _, uv = client.response("UIDVALIDITY")
        _, perm = client.response("PERMANENTFLAGS")
    keywords_ok = b"\\*" in perm[0] if perm and perm[0] is not None else True
    return Selected(exists=exists, uidvalidity=int(uv[0]) if uv and uv[0] else 0, keywords_ok=keywords_ok)


def list_folders(client: imaplib.IMAP4) -> list[str]:
    """Names of the folders on the server (raw modified-UTF-7 names)."""
    typ, data = client.list()
    return parse_folders(data) if typ == "OK" else []
