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
from typing import TYPE_CHECKING, Any, Literal

import attrs
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from ticketmail.errors import (
    BackendError,
    ConfigError,
    InputError,
    LimitExceededError,
    PolicyRejectedError,
)
from ticketmail.model import Provenance
from ticketmail.pipeline import Outcome
from ticketmail.receive.config import ListenAddress, ReceiveSettings
from ticketmail.receive.router import RecipientRouter, Route
from ticketmail.sources.config import MailboxConfig, SourcesConfig
from ticketmail.sources.poller import ProcessesEmail

__all__ = ["Delivery", "Receiver", "Reply", "reply_for", "sender_verified", "tls_context"]

log = logging.getLogger("ticketmail.receive")

Protocol_ = Literal["lmtp", "smtp"]
_IDENT = "ticketmail"


@attrs.frozen
class Reply:
    """One SMTP/LMTP reply: `code` (`250`), enhanced `status` (`2.0.0`, RFC 3463) and `text`."""

    code: int
    status: str
    text: str

    @property
    def temporary(self) -> bool:
        """A 4xx reply: the client keeps the message and retries."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """A 5xx reply: the client bounces the message."""
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


@attrs.frozen
class Delivery:
    """What happened to one recipient's copy: the `reply` sent and the pipeline `outcome` (if it ran)."""

    recipient: str
    reply: Reply
    outcome: Outcome | None = None
    mailbox: str | None = None


def _clean(text: str, limit: int = 200) -> str:
    """Reply text: printable ASCII on one line, bounded (it ends up in bounce messages and logs)."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text.replace("\r", " ").replace("\n", " "))
    return out[:limit].strip() or "-"


def reply_for(outcome: Outcome, *, policy_refusal: str = "reject") -> Reply:
    """The reply for one copy's pipeline outcome (see the module table)."""
    ticket = f" ticket {outcome.ticket}" if outcome.ticket else ""
    if outcome.action in ("created", "appended"):
        return Reply(250, "2.0.0", f"Ok: {outcome.action}{ticket}")
    if outcome.action == "ignored":
        return Reply(250, "2.0.0", "Ok: accepted")
    if outcome.action == "duplicate":
        first = outcome.reasons[0].value if outcome.already_processed and outcome.reasons else None
        if first == "rejected" and policy_refusal == "reject":
            return Reply(550, "5.7.1", "Refused by policy (already decided)")
        return Reply(250, "2.0.0", f"Ok: already delivered{ticket}")
    if outcome.action == "rejected":
        if any(reason.code == "identity.missing" for reason in outcome.reasons):
            return Reply(554, "5.6.0", "Message has no usable sender")
        if policy_refusal == "accept":
            return Reply(250, "2.0.0", "Ok: accepted")
        why = outcome.error.message if outcome.error else "refused by a rule"
        return Reply(550, "5.7.1", _clean(f"Refused by policy: {why}"))
    # failed: quarantined with its bytes; a bounce only for what no retry can fix.
    error = outcome.error
    if isinstance(error, LimitExceededError):
        return Reply(552, "5.3.4", _clean(f"Message exceeds a limit: {error.message}"))
    if isinstance(error, InputError):
        return Reply(554, "5.6.0", _clean(f"Message cannot be used: {error.message}"))
    if isinstance(error, PolicyRejectedError):
        return Reply(550, "5.7.1", _clean(f"Refused by policy: {error.message}"))
    return Reply(451, "4.3.0", "Processing failed, try again later")


def _header_block(raw: bytes, limit: int = 256 * 1024) -> list[str]:
    """The unfolded header fields of `raw` (bounded), decoded leniently."""
    end = raw.find(b"\r\n\r\n", 0, limit)
    if end < 0:
        end = raw.find(b"\n\n", 0, limit)
    head = raw[: end if end >= 0 else limit].decode("utf-8", "replace")
    fields: list[str] = []
    for line in head.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += " " + line.strip()
        elif line:
            fields.append(line)
    return fields


def sender_verified(raw: bytes, trusted_authserv_ids: Iterable[str]) -> bool:
    """Whether a trusted `Authentication-Results` header (RFC 8601) says `spf`, `dkim` or `dmarc` passed.

    Only headers whose authserv-id is in `trusted_authserv_ids` count (your own servers add them and
    remove look-alikes that came from outside, as RFC 8601 section 5 requires of them).
    """
    trusted = {t.lower() for t in trusted_authserv_ids}
    if not trusted:
        return False
    for field in _header_block(raw):
        name, sep, value = field.partition(":")
        if not sep or name.strip().lower() != "authentication-results":
            continue
        parts = [p.strip() for p in value.split(";")]
        authserv = parts[0].split()[0].lower() if parts and parts[0].split() else ""
        if authserv not in trusted:
            continue
        for part in parts[1:]:
            method, eq, result = part.partition("=")
            words = result.split()
            if eq and method.strip().lower() in ("spf", "dkim", "dmarc") and words and words[0].lower() == "pass":
                return True
    return False


def _multi(replies: Sequence[Reply]) -> Reply:
    """The one SMTP reply for several copies: temporary wins (a retry is harmless), then success."""
    for reply in replies:
        if reply.temporary:
            return reply
    for reply in replies:
        if reply.code < 300:
            return reply
    return replies[0]


def _header_value(text: str) -> bytes:
    return "".join(c for c in text if c >= " " and c != "\x7f").encode("utf-8", "replace")


# -- the protocol sessions -----------------------------------------------------------------------------------


class _Handler:
    """aiosmtpd hooks: greeting extensions, `MAIL` checks, recipient routing."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        settings = self.receiver.settings
        # Rebuilt: PIPELINING (RFC 2033 requires it; aiosmtpd reads commands in order from a buffer, so a
        # pipelined client is served correctly), SIZE (RFC 1870), ENHANCEDSTATUSCODES; no AUTH (nothing to log in to).
        lines = [responses[0][4:], "PIPELINING", f"SIZE {settings.max_message_size}", "ENHANCEDSTATUSCODES"]
        lines += [r[4:] for r in responses[1:-1] if not r[4:].upper().startswith("AUTH")]
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        settings = self.receiver.settings
        if settings.require_tls and isinstance(server, _SessionMixin) and server.tcp and session.ssl is None:
            return "530 5.7.0 Must issue a STARTTLS command first"
        for option in mail_options:
            name, _, value = option.partition("=")
            if name.upper() == "SIZE" and value.isdigit() and int(value) > settings.max_message_size:
                return f"552 5.3.4 Message size exceeds the fixed limit of {settings.max_message_size} bytes"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.receiver.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        route = self.receiver.router.route(address)
        if route is None:
            return f"550 5.1.1 <{_clean(address, 100)}>: Recipient address rejected: unknown recipient"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_exception(self, error: Exception) -> str:
        log.error("unexpected error in a receiver session: %s", type(error).__name__, exc_info=error)
        return "451 4.3.0 Internal error, try again later"


if TYPE_CHECKING:
    _Base = SMTP
else:
    _Base = object


class _SessionMixin(_Base):
    """Session limits, timeouts and the `DATA` phase, shared by the LMTP and SMTP sessions."""

    lmtp: bool = False

    def _init_session(self, receiver: Receiver, tcp: bool) -> None:
        self.receiver = receiver
        self.tcp = tcp
        self.busy = False
        self.expired = False
        self._deadline: asyncio.TimerHandle | None = None

    def _close_with(self, line: str) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(Exception):
            self._writer.write(line.encode("ascii") + b"\r\n")
        transport.close()

    def _timeout_cb(self) -> None:
        if self.busy:  # never while a delivery is being committed: its reply comes first
            return
        self._close_with("421 4.4.2 Idle timeout, closing connection")

    def _session_expired(self) -> None:
        self.expired = True
        if not self.busy:
            self._close_with("421 4.4.2 Session time limit reached, closing connection")

    async def _handle_client(self) -> None:
        receiver = self.receiver
        if receiver.stopping or receiver.sessions >= receiver.settings.max_sessions:
            why = "Service shutting down" if receiver.stopping else "Too many connections"
            await self.push(f"421 4.3.2 {why}, try again later")
            if self.transport is not None:
                self.transport.close()
            return
        receiver.sessions += 1
        receiver.protocols.add(self)
        self._deadline = self.loop.call_later(receiver.settings.session_timeout, self._session_expired)
        try:
            await super()._handle_client()
        finally:
            receiver.sessions -= 1
            receiver.protocols.discard(self)
            self._deadline.cancel()

    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed("LHLO" if self.lmtp else "EHLO"):
            return
        envelope = self.envelope
        assert envelope is not None  # noqa: S101 - set by aiosmtpd for every session
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self.receiver.settings.max_message_size
        chunks: list[bytes] = []
        size = 0
        too_big = False
        line_start = True
        last_reset = self.loop.time()
        while True:
            # A connection that closes here cancels this coroutine (aiosmtpd's eof handling): nothing was
            # processed, nothing is stored.
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:  # a long line: take it in pieces, the size limit bounds it
                line = await self._reader.read(exc.consumed)
            except asyncio.IncompleteReadError:
                if self.transport is not None:
                    self.transport.close()
                return
            now = self.loop.time()
            if now - last_reset > 1.0:  # data keeps the session alive (not every line: timers cost)
                self._reset_timeout()
                last_reset = now
            if line_start:
                if line == b".\r\n":
                    break
                if line.startswith(b"."):
                    line = line[1:]  # RFC 5321 section 4.5.2: dot-stuffing
            line_start = line.endswith(b"\r\n")
            size += len(line)
            if too_big:
                continue
            if size > limit:
                too_big = True
                chunks.clear()
                continue
            chunks.append(line)
        mail_from = envelope.mail_from or "<>"
        recipients = list(envelope.rcpt_tos)
        self.envelope = self._create_envelope()
        count = len(recipients) if self.lmtp else 1
        if too_big:
            reply = Reply(552, "5.3.4", f"Message exceeds the fixed limit of {limit} bytes")
            for _ in range(count):
                await self.push(str(reply))
            return
        raw = b"".join(chunks)
        del chunks
        self.busy = True
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        try:
            deliveries = await self.receiver.deliver_async(
                raw, mail_from=mail_from, recipients=recipients, protocol="lmtp" if self.lmtp else "smtp"
            )
        finally:
            self.busy = False
        replies = [d.reply for d in deliveries]
        if self.lmtp:
            for reply in replies:
                await self.push(str(reply))
        else:
            await self.push(str(_multi(replies)))
        if self.expired:
            self._close_with("421 4.4.2 Session time limit reached, closing connection")
        else:
            self._reset_timeout()


class _LMTPSession(_SessionMixin, LMTP):
    lmtp = True


class _SMTPSession(_SessionMixin, SMTP):
    lmtp = False


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
        self.protocols: set[_SessionMixin] = set()
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
                reply = Reply(550, "5.1.1", f"<{_clean(recipient, 100)}>: unknown recipient")
                results.append(Delivery(recipient, reply))
                continue
            copy = (
                b"Return-Path: <" + _header_value(sender) + b">\r\n"
                b"Delivered-To: " + _header_value(recipient) + b"\r\n" + raw
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
        handler = _Handler(self)
        cls = _LMTPSession if kind == "lmtp" else _SMTPSession

        def make() -> _SessionMixin:
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
