"""The LMTP and SMTP protocol sessions: greeting extensions, `MAIL`/`RCPT` checks, limits and the `DATA` phase.

Built on aiosmtpd's engines; the reply to the end of `DATA` is written only after the receiver's pipeline
returned (see `ticketmail.receive.server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from ticketmail.receive._replies import Reply, clean, one_reply

if TYPE_CHECKING:
    from ticketmail.receive.server import Receiver

__all__ = ["LMTPSession", "SMTPSession", "SessionMixin", "SmtpHandler"]

log = logging.getLogger("ticketmail.receive")


class SmtpHandler:
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
        if settings.require_tls and isinstance(server, SessionMixin) and server.tcp and session.ssl is None:
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
            return f"550 5.1.1 <{clean(address, 100)}>: Recipient address rejected: unknown recipient"
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


class SessionMixin(_Base):
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
        if not await self._data_allowed(arg):
            return
        envelope = self.envelope
        assert envelope is not None  # noqa: S101 - checked by _data_allowed
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self.receiver.settings.max_message_size
        complete, raw = await self._read_data(limit)
        if not complete:
            return
        mail_from = envelope.mail_from or "<>"
        recipients = list(envelope.rcpt_tos)
        self.envelope = self._create_envelope()
        if raw is None:
            reply = Reply(552, "5.3.4", f"Message exceeds the fixed limit of {limit} bytes")
            for _ in range(len(recipients) if self.lmtp else 1):
                await self.push(str(reply))
            return
        await self._deliver(raw, mail_from, recipients)

    async def _data_allowed(self, arg: str | None) -> bool:
        """The checks before `354`: greeting, recipients, no argument (replying to the client when one fails)."""
        if await self.check_helo_needed("LHLO" if self.lmtp else "EHLO"):
            return False
        envelope = self.envelope
        assert envelope is not None  # noqa: S101 - set by aiosmtpd for every session
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return False
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return False
        return True

    async def _read_data(self, limit: int) -> tuple[bool, bytes | None]:
        """Read the data up to the final `.`: `(complete, bytes)`, bytes `None` when over `limit`.

        Not complete when the connection closed first (then nothing was processed, nothing is stored).
        Over the limit, the rest is read and dropped, so the reply still comes in order.
        """
        chunks: list[bytes] = []
        size = 0
        line_start = True
        last_reset = self.loop.time()
        while True:
            # A connection that closes here cancels this coroutine (aiosmtpd's eof handling).
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:  # a long line: take it in pieces, the size limit bounds it
                line = await self._reader.read(exc.consumed)
            except asyncio.IncompleteReadError:
                if self.transport is not None:
                    self.transport.close()
                return False, None
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
            if size <= limit:
                chunks.append(line)
            elif chunks:
                chunks.clear()
        return True, (b"".join(chunks) if size <= limit else None)

    async def _deliver(self, raw: bytes, mail_from: str, recipients: list[str]) -> None:
        """Hand the message to the receiver and write the replies once its unit of work committed."""
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
            await self.push(str(one_reply(replies)))
        if self.expired:
            self._close_with("421 4.4.2 Session time limit reached, closing connection")
        else:
            self._reset_timeout()


class LMTPSession(SessionMixin, LMTP):
    lmtp = True


class SMTPSession(SessionMixin, SMTP):
    lmtp = False
