"""POP3 source (stdlib `poplib`): UIDL-tracked, `DELE` only after commit, STLS and POP3S.

POP3 (RFC 1939) has no flags and no folders, so the contract maps as follows:

* Provenance key = the `UIDL` (RFC 1939 section 7), the only identifier that is stable across sessions;
  message numbers are not.
* `fetch` lists `UIDL` and `LIST` (sizes) once, then `RETR` per message (POP3 has no bulk retrieval;
  pipelining, RFC 2449, is not used because poplib reads strictly request/response). Messages larger than
  `max_message_size` are never downloaded whole: `skip` leaves them (an `OversizeNotice`);
  `headers` fetches `TOP n 0` (headers only) and yields a truncated item with a note. A truncated item is
  never deleted, whatever `after` says: the original on the server is its only full copy. Its UIDL is
  remembered in the `kept` store (persisted in the poller's state directory) before it is processed, so a
  lost acknowledgement cannot turn into a `DELE` either; such messages stay on the server for the operator.
* `acknowledge`: with `after = "delete"` sends `DELE`. The server applies deletions only when the session
  ends with `QUIT` (RFC 1939 section 6, UPDATE state), so a crash before `QUIT` leaves every message in
  place and the processed-message ledger turns the refetch into a duplicate. With `after = "seen"` the
  mail stays on the server ("leave a copy"): the `skip` callable (`Pipeline.is_processed`) keeps it from
  being downloaded again, and the source remembers acknowledged UIDLs for its own lifetime as well.
* `release(failed=True)`: POP3 cannot mark a message, so failures are counted per UIDL in a
  `RetryCounter` (persisted in the poller's state directory, so separate
  cron runs add up); at `max_retries` the message is left on the server and
  ignored by this source from then on (never deleted); the pipeline's quarantine keeps its raw bytes.
* STLS (RFC 2595 section 4) for `security = "starttls"`, implicit TLS on 995 (RFC 8314) for `ssl`;
  `auth = "oauth2"` uses `AUTH XOAUTH2` (RFC 5034 with an initial response).
"""

from __future__ import annotations

import contextlib
import logging
import poplib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from ticketmail.errors import SourceError
from ticketmail.model import Provenance
from ticketmail.sources._net import (
    classify_tls_error,
    make_ssl_context,
    open_socket,
    scrub,
    server_text,
    translate,
)
from ticketmail.sources.base import OversizeNotice, RawItem, SkipCallback, headers_only_message
from ticketmail.sources.config import MailboxConfig
from ticketmail.sources.maildir import RetryCounter
from ticketmail.sources.oauth import xoauth2_base64

__all__ = ["Pop3Session", "Pop3Source"]

log = logging.getLogger("ticketmail.sources.pop3")


class _POP3(poplib.POP3):
    """poplib on a socket that `_net.open_socket` already connected (and maybe TLS-wrapped).

    `_create_socket` is poplib's only hook for the socket it talks on (no public `open()` as in imaplib;
    stable from Python 3.9 to 3.14, and tests/sources/test_pop3.py fails loudly if it goes).
    """

    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float) -> None:
        self._tm_sock = sock
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return self._tm_sock


class Pop3Source:
    """A POP3 mailbox (see the module docstring).

    Args:
        config: The mailbox (`protocol = "pop3"`).
        skip: `skip(provenance) -> True` for items already committed (`Pipeline.is_processed`); they are
            not downloaded again (and are deleted when `after = "delete"`, unless they were truncated).
        retries: Failure counts per UIDL (persist them to add up across runs).
        keep: UIDLs that must never be deleted (messages ingested headers-only); persist it like `retries`.
    """

    def __init__(
        self,
        config: MailboxConfig,
        *,
        skip: SkipCallback | None = None,
        retries: RetryCounter | None = None,
        keep: RetryCounter | None = None,
    ) -> None:
        if config.protocol != "pop3":
            raise ValueError(f"Pop3Source needs protocol 'pop3', got {config.protocol!r}")
        self.config = config
        self.name = config.name
        self.skip = skip
        self.retries = retries if retries is not None else RetryCounter()
        self.keep = keep if keep is not None else RetryCounter()
        self.quarantined: set[str] = set()
        self.kept: set[str] = set()

    def __repr__(self) -> str:
        return f"Pop3Source(name={self.name!r}, host={self.config.host!r})"

    @contextlib.contextmanager
    def session(self) -> Iterator[Pop3Session]:
        """Connect and authenticate; `QUIT` on exit, which applies the `DELE` of acknowledged items."""
        session = Pop3Session(self)
        try:
            session.open()
            yield session
            session.quit()
        finally:
            session.close()


class Pop3Session:
    """One authenticated POP3 connection. Obtain through `Pop3Source.session()`.

    Attributes:
        capabilities: `CAPA` answer (upper case first words), e.g. `{"UIDL", "TOP", "STLS", "SASL"}`.
        count: Messages in the maildrop at login.
        oversized: Messages left on the server by the `skip` oversize policy during this session.
        acknowledged_skipped: Items acknowledged without download because `skip` reported them committed.
    """

    def __init__(self, source: Pop3Source) -> None:
        self.source = source
        self.config = source.config
        self.capabilities: frozenset[str] = frozenset()
        self.count = 0
        self.oversized: list[OversizeNotice] = []
        self.acknowledged_skipped = 0
        self._client: _POP3 | None = None
        self._numbers: dict[str, int] = {}
        self._secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Pop3Session(mailbox={self.config.name!r}, count={self.count})"

    @property
    def client(self) -> poplib.POP3:
        """The underlying poplib client."""
        if self._client is None:
            raise SourceError("POP3 session is not open", stage="fetch", mailbox=self.config.name)
        return self._client

    def _guard(self, stage: str, what: str) -> contextlib.AbstractContextManager[None]:
        return translate(self.config, stage, what, self._secrets)

    def open(self) -> None:
        """Connect, STLS if configured, authenticate, read the maildrop size (stage-named errors)."""
        cfg = self.config
        ctx = make_ssl_context(cfg) if cfg.security != "none" else None
        sock = open_socket(cfg, ctx)
        with self._guard("protocol", "POP3 greeting"):
            self._client = _POP3(sock, cfg.host or "", cfg.effective_port, cfg.timeout)
        client = self._client
        self._read_capa()
        if cfg.security == "starttls":
            if "STLS" not in self.capabilities:
                raise SourceError(
                    f"{cfg.host}:{cfg.effective_port} does not offer STLS; use security = 'ssl' with port 995",
                    stage="tls",
                    mailbox=cfg.name,
                )
            with self._guard("tls", "STLS"):
                try:
                    client.stls(ctx)
                except ssl.SSLError as exc:
                    raise classify_tls_error(exc, cfg) from exc
            self._read_capa()
        self._authenticate(client)
        with self._guard("protocol", "STAT"):
            self.count = client.stat()[0]

    def _read_capa(self) -> None:
        with self._guard("protocol", "CAPA"):
            try:
                capa = self.client.capa()
            except poplib.error_proto:
                capa = {}
        self.capabilities = frozenset(k.upper() for k in capa)

    def _authenticate(self, client: _POP3) -> None:
        cfg = self.config
        user = cfg.login
        try:
            if cfg.auth == "oauth2":
                token = cfg.access_token()
                self._secrets = (token.reveal(), xoauth2_base64(user, token))
                with self._guard("auth", "AUTH XOAUTH2"):
                    # poplib has no AUTH command nor a public way to send one: its private helpers `_shortcmd`,
                    # `_putcmd` and `_getresp` are unchanged from Python 2 to 3.14 (tests/sources/test_pop3.py
                    # fails loudly if they go).
                    raw: Any = client
                    resp = raw._shortcmd("AUTH XOAUTH2 " + xoauth2_base64(user, token))
                    if resp.startswith(b"+ ") or resp == b"+":  # error challenge: answer empty, then -ERR
                        raw._putcmd("")
                        raw._getresp()
                return
            password = cfg.secret().reveal()
            self._secrets = (password,)
            with self._guard("auth", "login"):
                client.user(user)
                client.pass_(password)
        except SourceError as exc:
            if exc.stage != "auth" or not isinstance(exc.__cause__, poplib.error_proto):
                raise
            if cfg.auth == "oauth2":
                cfg.token_refused()  # the built-in OAuth2 lifecycle fetches a new token next time
            how = "token" if cfg.auth == "oauth2" else "user name or password"
            server = scrub(server_text(exc.__cause__), self._secrets)
            raise SourceError(
                f"authentication as {user!r} failed at {cfg.host}:{cfg.effective_port}: check the {how} "
                f"(server said: {server})",
                stage="auth",
                mailbox=cfg.name,
            ) from exc.__cause__

    def quit(self) -> None:
        """End the session with `QUIT`: the server now applies the `DELE` of acknowledged messages."""
        client, self._client = self._client, None
        if client is not None:
            with self._guard("ack", "QUIT (applying deletions)"):
                client.quit()

    def close(self) -> None:
        """Drop the connection without `QUIT` if still open (pending deletions are then not applied)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # --- fetching -------------------------------------------------------------------------------------

    def _provenance(self, uidl: str) -> Provenance:
        return Provenance(mailbox=self.config.name, kind="pop3", key=uidl)

    def listing(self) -> list[tuple[int, str, int]]:
        """`(number, uidl, size)` for every message, in maildrop order (oldest first)."""
        client = self.client
        with self._guard("fetch", "UIDL/LIST"):
            _, uidl_lines, _ = client.uidl()
            _, list_lines, _ = client.list()
        sizes = {}
        for line in list_lines:
            num, _, size = line.partition(b" ")
            sizes[int(num)] = int(size.split()[0]) if size else 0
        out = []
        for line in uidl_lines:
            num, _, uid = line.partition(b" ")
            out.append((int(num), uid.strip().decode("ascii", "replace"), sizes.get(int(num), 0)))
        return out

    def fetch(self, *, limit: int | None = None) -> Iterator[RawItem]:
        """Yield up to `limit` (default `max_per_run`) messages not yet committed, in maildrop order."""
        cap = self.config.max_per_run if limit is None else limit
        src = self.source
        yielded = 0
        for number, uidl, size in self.listing():
            if yielded >= cap:
                return
            self._numbers[uidl] = number
            prov = self._provenance(uidl)
            if uidl in src.quarantined or (uidl in src.kept and self.config.after_action != "delete"):
                continue
            if src.retries.get(uidl) >= self.config.max_retries:  # counted by an earlier run
                src.quarantined.add(uidl)
                continue
            limit_size = self.config.max_message_size
            if self.skip_committed(prov):
                self.acknowledged_skipped += 1
                if self._must_keep(uidl, size):
                    src.kept.add(uidl)
                else:
                    self._ack(uidl)
                continue
            if limit_size is not None and size > limit_size:
                item = self._oversize(number, prov, size, limit_size)
                if item is None:
                    continue
            else:
                with self._guard("fetch", f"RETR {number}"):
                    _, lines, _ = self.client.retr(number)
                data = b"\r\n".join(lines) + b"\r\n"
                item = RawItem(data=data, provenance=prov, size=size)
            yielded += 1
            yield item

    def pending(self) -> int:
        """Messages still waiting to be processed: what the next `fetch()` would download.

        One `UIDL`/`LIST` (messages deleted in this session are no longer listed); not counted: items
        the ledger (`skip`) reports as committed, messages kept on the server (truncated, or kept with
        `after = "seen"`), ones that reached `max_retries`, and oversize ones under `oversize = "skip"`.
        """
        src = self.source
        limit = self.config.max_message_size
        waiting = 0
        for _number, uidl, size in self.listing():
            if uidl in src.quarantined or uidl in src.kept or src.retries.get(uidl) >= self.config.max_retries:
                continue
            if limit is not None and size > limit and self.config.oversize == "skip":
                continue
            if self.skip_committed(self._provenance(uidl)):
                continue
            waiting += 1
        return waiting

    def skip_committed(self, provenance: Provenance) -> bool:
        """Whether the source's `skip` callable reports this item already committed."""
        return self.source.skip is not None and self.source.skip(provenance)

    def _oversize(self, number: int, prov: Provenance, size: int, limit: int) -> RawItem | None:
        log.warning(
            "mailbox %s: message %s is %d bytes, over max_message_size %d", self.config.name, prov.key, size, limit
        )
        if self.config.oversize == "skip":
            self.oversized.append(OversizeNotice(provenance=prov, size=size, limit=limit))
            return None
        with self._guard("fetch", f"TOP {number} 0"):
            _, lines, _ = self.client.top(number, 0)
        header = b"\r\n".join(lines) + b"\r\n"
        if not self.source.keep.get(prov.key):
            self.source.keep.increment(prov.key)  # before processing: a lost acknowledgement must not delete it
        note = (
            f"This message was {size} bytes, over this mailbox's limit of {limit} bytes; only its headers were "
            f"fetched. The original remains on the server in mailbox {self.config.name} (UIDL {prov.key}); "
            "it is not deleted."
        )
        return RawItem(
            data=headers_only_message(header, note, size), provenance=prov, size=size, truncated=True, note=note
        )

    # --- acknowledgement ------------------------------------------------------------------------------

    def _number_of(self, item: RawItem) -> int:
        number = self._numbers.get(item.provenance.key)
        if number is None or item.provenance.mailbox != self.config.name:
            raise SourceError(
                f"item {item.provenance.key} was not fetched in this session; it will be fetched again",
                stage="ack",
                mailbox=self.config.name,
            )
        return number

    def acknowledge(self, item: RawItem) -> None:
        """`DELE` (applied at `QUIT`) for `after = "delete"`; otherwise keep and remember the UIDL.

        A truncated item is never deleted: it is remembered as kept and stays on the server.
        """
        self._number_of(item)
        if item.truncated or self.source.keep.get(item.provenance.key):
            self.source.kept.add(item.provenance.key)
            self.source.retries.clear(item.provenance.key)
            return
        self._ack(item.provenance.key)

    def _must_keep(self, uidl: str, size: int) -> bool:
        """Whether a committed message was ingested truncated (so its original must stay on the server)."""
        if self.source.keep.get(uidl):
            return True
        limit = self.config.max_message_size
        return self.config.oversize == "headers" and limit is not None and size > limit

    def _ack(self, uidl: str) -> None:
        if self.config.after_action == "delete":
            number = self._numbers[uidl]
            with self._guard("ack", f"DELE {number}"):
                self.client.dele(number)
        else:
            self.source.kept.add(uidl)
        self.source.retries.clear(uidl)

    def release(self, item: RawItem, *, failed: bool) -> None:
        """Leave the message; a failure is counted (`retries`) and `max_retries` stops retries."""
        self._number_of(item)
        if not failed:
            return
        src, uidl = self.source, item.provenance.key
        count = src.retries.increment(uidl)
        if count >= self.config.max_retries:
            src.quarantined.add(uidl)
            log.warning(
                "mailbox %s: UIDL %s failed %d times; left on the server and no longer retried",
                self.config.name,
                uidl,
                count,
            )
