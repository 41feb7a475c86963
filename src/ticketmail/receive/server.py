"""The LMTP/SMTP receiver: the mail server hands a message over and learns at once whether it was taken.

Built on aiosmtpd's protocol engine (`aiosmtpd.lmtp.LMTP`, `aiosmtpd.smtp.SMTP`); this module adds
what delivery into a ticket store needs:

* **Reply after commit.** The reply to the end of `DATA` is written only after the pipeline returned, that
  is after the message's unit of work committed (or was refused on purpose). The pipeline runs in a worker
  thread (`workers` at a time), so the event loop keeps serving other sessions meanwhile.
* **One reply per recipient in LMTP** (RFC 2033 section 4.2): each recipient's copy is processed with its
  own mailbox context (department, category, priority) and gets its own status. SMTP has one reply for all
  recipients: temporary if any copy failed temporarily (the retry is harmless, see below).
* **Redelivery is harmless.** A copy's provenance is `(<mailbox>, lmtp|smtp, <sha256 of the data>:<recipient>)`,
  deterministic from what the mail server sends, so a retry after a lost reply is found in the ledger and
  answered `250` again (`550` again when it was refused). A connection that drops before the end of the
  data leaves nothing behind: nothing is processed before the final `.`.
* **Routing at RCPT.** Unknown recipients get `550 5.1.1` at `RCPT`, so an SMTP listener is never an open
  relay and no message is accepted for nobody.
* **Limits.** Size (`SIZE` announced and checked at `MAIL`, counted while reading: `552 5.3.4`),
  recipients per message (`452 4.5.3`), concurrent sessions (`421 4.3.2`), idle and whole-session timeouts
  (`421 4.4.2`), `STARTTLS` with a certificate.

Replies:

| what happened to a copy | reply |
| --- | --- |
| committed: created, appended, ignored (filter, auto-reply), duplicate, redelivery | `250 2.0.0` |
| refused by a rule, `policy_refusal = "reject"` | `550 5.7.1` (bounced by the client) |
| refused by a rule, `policy_refusal = "verified"` | `550 5.7.1` if the sender is authenticated, else `250` |
| refused by a rule, `policy_refusal = "accept"` | `250 2.0.0` (recorded, dropped) |
| no sender at all / unusable bytes | `554 5.6.0` |
| too large (limits of the parser or the receiver) | `552 5.3.4` |
| storage unavailable, any unexpected failure | `451 4.3.0` (the client keeps it, retries) |
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hashlib
import logging
import os
import signal
import ssl
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from ticketmail.errors import (
    BackendError,
    ConfigError,
)
from ticketmail.model import Provenance
from ticketmail.receive._replies import Delivery, Reply, clean, header_value, reply_for, sender_verified
from ticketmail.receive._session import LMTPSession, SessionMixin, SmtpHandler, SMTPSession
from ticketmail.receive.config import ListenAddress, ReceiveSettings
from ticketmail.receive.router import RecipientRouter, Route
from ticketmail.sources.config import MailboxConfig, SourcesConfig
from ticketmail.sources.poller import ProcessesEmail

__all__ = ["Delivery", "Receiver", "Reply", "reply_for", "sender_verified", "tls_context"]

log = logging.getLogger("ticketmail.receive")

Protocol_ = Literal["lmtp", "smtp"]
_IDENT = "ticketmail"


# -- the receiver ---------------------------------------------------------------------------------------------


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or newer) from a PEM certificate chain and key.

    Raises:
        ConfigError: The files cannot be read or do not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load tls_cert/tls_key ({cert}): {type(exc).__name__}: {exc}", field="tls_cert"
        ) from exc
    return context


class Receiver:
    """An LMTP and/or SMTP server delivering each recipient's copy through a pipeline.

    Args:
        pipeline: The pipeline (anything with `process_email`); shared by the worker threads, so its
            backend must allow use from several threads (the shipped ones do).
        router: Maps recipients to mailbox contexts (see `from_config` for the usual construction).
        settings: Listeners and limits; at least one of `lmtp`/`smtp` must be set to `start`.

    Use `start`/`stop` (a background thread, e.g. inside an application or a test),
    `serve_forever` (the foreground, until SIGTERM/SIGINT), or `deliver` without any network.
    """

    def __init__(self, pipeline: ProcessesEmail, router: RecipientRouter, settings: ReceiveSettings) -> None:
        self.pipeline = pipeline
        self.router = router
        self.settings = settings
        self.sessions = 0
        self.protocols: set[SessionMixin] = set()
        self.stopping = False
        self.bound: dict[str, ListenAddress] = {}
        self._tls = tls_context(settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None
        self._executor: ThreadPoolExecutor | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._sockets: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @classmethod
    def from_config(cls, pipeline: ProcessesEmail, config: SourcesConfig, settings: ReceiveSettings) -> Receiver:
        """A receiver for a loaded configuration: every enabled mailbox with an address, or `settings.mailboxes`.

        Raises:
            ConfigError: A mailbox named in `settings.mailboxes` does not exist, or no mailbox has an address.
        """
        mailboxes: Iterable[MailboxConfig]
        if settings.mailboxes is not None:
            mailboxes = [config.mailbox(name) for name in settings.mailboxes]
        else:
            mailboxes = [m for m in config.mailboxes if m.enabled]
        router = RecipientRouter(mailboxes, plus_separator=settings.plus_separator)
        if not router.addresses:
            raise ConfigError(
                f"{config.path}: no mailbox to receive for: give [[mailboxes]] an address (or addresses)",
                field="address",
            )
        return cls(pipeline, router, settings)

    # -- delivery (no network) ------------------------------------------------------------------------------

    def provenance(self, raw: bytes, route: Route, protocol: Protocol_, digest: str | None = None) -> Provenance:
        """The deterministic provenance of one recipient's copy (its ledger key makes a retry a redelivery)."""
        digest = digest or hashlib.sha256(raw).hexdigest()
        return Provenance(mailbox=route.mailbox, kind=protocol, key=f"{digest}:{route.recipient}")

    def deliver(
        self, raw: bytes, *, mail_from: str, recipients: Sequence[str], protocol: Protocol_ = "lmtp"
    ) -> list[Delivery]:
        """Process one message for each recipient, in order; one `Delivery` each. Never raises.

        Each copy gets `Return-Path` and `Delivered-To` headers on top (as a local delivery agent adds
        them), so the threading sees the envelope recipient (subaddress tokens included) and the
        `destination` duplicate scope works.
        """
        digest = hashlib.sha256(raw).hexdigest()
        sender = mail_from.strip()
        sender = "" if sender in ("<>", "") else sender.strip("<>")
        results: list[Delivery] = []
        for recipient in recipients:
            route = self.router.route(recipient)
            if route is None:  # routed at RCPT; a Python caller may pass anything
                reply = Reply(550, "5.1.1", f"<{clean(recipient, 100)}>: unknown recipient")
                results.append(Delivery(recipient, reply))
                continue
            copy = (
                b"Return-Path: <" + header_value(sender) + b">\r\n"
                b"Delivered-To: " + header_value(recipient) + b"\r\n" + raw
            )
            provenance = self.provenance(raw, route, protocol, digest)
            try:
                outcome = self.pipeline.process_email(copy, provenance=provenance, context=route.context)
            except BackendError as exc:
                log.warning(
                    "storage unavailable, deferring a message for %s: %s [%s]", route.mailbox, exc.message, exc.code
                )
                results.append(
                    Delivery(
                        recipient, Reply(451, "4.3.0", "Storage unavailable, try again later"), None, route.mailbox
                    )
                )
                continue
            except Exception as exc:
                log.error("unexpected error delivering to %s: %s", route.mailbox, type(exc).__name__, exc_info=exc)
                results.append(
                    Delivery(recipient, Reply(451, "4.3.0", "Processing failed, try again later"), None, route.mailbox)
                )
                continue
            refusal = self.settings.policy_refusal
            if refusal == "verified":
                refusal = "reject" if sender_verified(raw, self.settings.trusted_authserv_ids) else "accept"
            reply = reply_for(outcome, policy_refusal=refusal)
            log.info(
                "%s %s: %s%s -> %d %s",
                protocol,
                route.mailbox,
                outcome.action,
                f" ticket {outcome.ticket}" if outcome.ticket else "",
                reply.code,
                reply.status,
            )
            results.append(Delivery(recipient, reply, outcome, route.mailbox))
        return results

    async def deliver_async(
        self, raw: bytes, *, mail_from: str, recipients: Sequence[str], protocol: Protocol_ = "lmtp"
    ) -> list[Delivery]:
        """`deliver` in a worker thread (at most `workers` at a time)."""
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="ticketmail-receive")
        future = self._executor.submit(self.deliver, raw, mail_from=mail_from, recipients=recipients, protocol=protocol)
        # If the session is cancelled (the client went away), the worker still finishes its unit of work;
        # the client, having seen no reply, retries, and the ledger answers that retry.
        return await asyncio.wrap_future(future, loop=loop)

    # -- serving -----------------------------------------------------------------------------------------------

    def _factory(self, kind: Protocol_, tcp: bool) -> Any:
        settings = self.settings
        handler = SmtpHandler(self)
        cls = LMTPSession if kind == "lmtp" else SMTPSession

        def make() -> SessionMixin:
            session = cls(
                handler,
                data_size_limit=None,  # checked here, with enhanced status codes and per-recipient replies
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=settings.hostname,
                ident=_IDENT,
                tls_context=self._tls if tcp else None,
                timeout=settings.idle_timeout,
                auth_exclude_mechanism=["LOGIN", "PLAIN"],
                loop=self._loop,
            )
            session._init_session(self, tcp)
            return session

        return make

    async def _listen(self, kind: Protocol_, address: ListenAddress) -> None:
        try:
            await self._bind(kind, address)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror or exc}") from exc
        log.info("%s listening on %s", kind.upper(), self.bound[kind])

    async def _bind(self, kind: Protocol_, address: ListenAddress) -> None:
        assert self._loop is not None  # noqa: S101
        if address.path is None:
            server = await self._loop.create_server(
                self._factory(kind, True), address.host, address.port or 0, reuse_address=True
            )
            self._servers.append(server)
            sock = server.sockets[0].getsockname()
            host, port = sock[0], sock[1]
            text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self.bound[kind] = ListenAddress(text=text, host=host, port=port)
            return
        path = Path(address.path)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ConfigError(f"{kind}: {path} exists and is not a socket; not replacing it", field=kind)
            path.unlink()  # a stale socket of an earlier run
        gid = -1
        if self.settings.socket_group:
            try:
                gid = grp.getgrnam(self.settings.socket_group).gr_gid
            except KeyError as exc:
                raise ConfigError(
                    f"socket_group: no group {self.settings.socket_group!r}", field="socket_group"
                ) from exc
        old_umask = os.umask(0o177)  # never more open than the owner, not even between bind and chmod
        try:
            server = await self._loop.create_unix_server(self._factory(kind, False), str(path))
        finally:
            os.umask(old_umask)
        self._servers.append(server)
        self._sockets.append(str(path))  # removed again by the shutdown, also when the next steps fail
        if gid != -1:
            try:
                os.chown(path, -1, gid)
            except PermissionError as exc:
                raise ConfigError(
                    f"socket_group: cannot give the socket to group {self.settings.socket_group!r}; the user "
                    "running the receiver must be a member of it",
                    field="socket_group",
                ) from exc
        os.chmod(path, self.settings.socket_mode)
        self.bound[kind] = address

    async def _serve(self, on_ready: Callable[[], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.stopping = False
        self.bound = {}
        try:
            if self.settings.lmtp is None and self.settings.smtp is None:
                raise ConfigError("receive: no listener: set lmtp and/or smtp", field="lmtp")
            if self.settings.lmtp is not None:
                await self._listen("lmtp", self.settings.lmtp)
            if self.settings.smtp is not None:
                await self._listen("smtp", self.settings.smtp)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            await self._shutdown(0.0)
            raise
        self._ready.set()
        if on_ready is not None:
            on_ready()
        await self._stop.wait()
        await self._shutdown(30.0)

    async def _shutdown(self, grace: float) -> None:
        self.stopping = True
        for server in self._servers:
            server.close()
        # Let deliveries in progress commit and send their replies; then close every session.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(p.busy for p in self.protocols) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for proto in list(self.protocols):
            if not proto.busy:
                proto._close_with("421 4.3.2 Service shutting down, try again later")
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await loop.run_in_executor(None, executor.shutdown)
        for path in self._sockets:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._sockets.clear()
        self._servers.clear()

    def start(self, timeout: float = 10.0) -> None:
        """Start listening in a background thread; returns once the listeners are bound (see `bound`).

        Raises:
            ConfigError: A listener cannot be set up (the message says which and why).
            OSError: Binding failed (address in use, permission denied).
        """
        if self._thread is not None:
            raise RuntimeError("the receiver is already running")
        self._ready.clear()
        self._error = None

        def run() -> None:
            with contextlib.suppress(BaseException):
                asyncio.run(self._serve())

        self._thread = threading.Thread(target=run, name="ticketmail-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the receiver did not start in time")
        error = self._take_error()
        if error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise error

    def _take_error(self) -> BaseException | None:
        error, self._error = self._error, None
        return error

    def stop(self, timeout: float = 35.0) -> None:
        """Stop accepting, let deliveries in progress finish and reply, close the sessions and the listeners."""
        thread, loop, event = self._thread, self._loop, self._stop
        if thread is None or loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, *, handle_signals: bool = True, on_ready: Callable[[], None] | None = None) -> None:
        """Serve in the foreground until SIGTERM/SIGINT (or `stop` from another thread).

        `on_ready` is called once the listeners are bound (see `bound`).

        Raises:
            ConfigError: A listener cannot be set up.
            OSError: Binding failed (address in use, permission denied).
        """

        async def main() -> None:
            loop = asyncio.get_running_loop()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, lambda: self._stop.set() if self._stop else None)
            await self._serve(on_ready)

        self._ready.clear()
        self._thread = threading.current_thread()
        try:
            asyncio.run(main())
        finally:
            self._thread = None

    @property
    def ready(self) -> bool:
        """Whether the listeners are bound."""
        return self._ready.is_set() and self._error is None
