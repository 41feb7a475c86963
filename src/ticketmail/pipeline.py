"""The ingestion pipeline: parse -> decide -> thread -> store, exactly once.

Sources (IMAP, POP3, local files) call `Pipeline.process_email()`; the HTTP API calls
`Pipeline.process_request()`. Both return an `Outcome`; a source acknowledges a mailbox item only
when `outcome.acknowledge` is true.

Exactly once, spelled out (see `docs/pipeline.md`). For each message the pipeline opens ONE unit of work
(transaction) in which it

1. checks the ledger for the item's provenance key (`"<mailbox>/<kind>/<key>"`): a hit means the item was
   committed before and this is a redelivery (say, after a crash between commit and acknowledgement); the
   outcome is `duplicate` with `already_processed=True` and the original ticket, and nothing is written;
2. checks the ledger for the message's duplicate keys (scoped Message-ID, fingerprint; from
   `ticketmail.rules.duplicate_keys()`): the same message arriving by another route is a `duplicate`;
3. evaluates the rules (the unit of work serves their lookups, e.g. the per-sender rate limit);
4. threads the message (`ticketmail.threading.resolve_thread()`, lookups again through the unit);
5. creates the ticket or appends the entry (the backend stores attachments content-addressed), records the
   message's id on the thread, writes ledger rows for the provenance key and every duplicate key, and one
   audit record;

and commits. Only then do hooks run and may the caller acknowledge. Parsing and the duplicate keys are
computed before the transaction (pure CPU work; holding the write lock during it would serialize workers for
nothing). `Pipeline.process_batch()` applies several messages in one unit of work (one commit, the
dominant cost on SQLite) with the same per-message guarantees, redoing them one by one if any fails.

Failure handling: a `BackendError` propagates (storage is down: the caller must
not acknowledge and retries later). Any other exception while processing one message rolls that unit back,
then a separate unit quarantines the raw bytes with the reason and writes an audit record, and the outcome
is `failed` (`acknowledge` false: the source leaves the item). A message is quarantined at most once per
provenance and content (the backend counts the attempts). Nothing but `BackendError` ever escapes (and
`TypeMismatchError` for arguments of the wrong type, a programming error).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import attrs

from ticketmail import tokens
from ticketmail.attachments import AttachmentPolicy, PolicyResult
from ticketmail.audit import describe_message
from ticketmail.backends.base import (
    AuditRecord,
    Backend,
    Entry,
    NewEntry,
    NewTicket,
    ProcessedRecord,
    QuarantineAdmin,
    QuarantineRecord,
    Ticket,
    UnitOfWork,
)
from ticketmail.decision import Decision, Reason
from ticketmail.errors import (
    BackendError,
    ConfigError,
    InvalidValueError,
    NotFoundError,
    PolicyRejectedError,
    TicketmailError,
    TypeMismatchError,
)
from ticketmail.hooks import HookEvent, HookKind, Hooks
from ticketmail.model import Address, Attachment, InboundEmail, MailboxContext, Provenance, TicketRequest
from ticketmail.numbers import TicketNumberGenerator, TicketNumbersExhaustedError, generate_number
from ticketmail.parsing.html import html_to_text
from ticketmail.parsing.mime import EmailOptions, parse_email
from ticketmail.rules import RuleSet, duplicate_keys, evaluate, load_rules, outgoing_headers
from ticketmail.threading import (
    ThreadCandidates,
    ThreadingOptions,
    UntrustedReplyError,
    prefilter_candidates,
    resolve_thread,
    thread_candidates,
)

__all__ = [
    "DuplicateScope",
    "NumberGenerator",
    "Outcome",
    "OutcomeAction",
    "Pipeline",
    "ProcessingError",
    "ledger_key",
    "unexpected_error",
]

OutcomeAction = Literal["created", "appended", "ignored", "duplicate", "rejected", "failed"]
DuplicateScope = Literal["global", "mailbox", "destination"]
NumberGenerator = TicketNumberGenerator
"""Returns a fresh candidate ticket number; the pipeline checks it against the backend and retries."""

_NUMBER_ATTEMPTS = 32
_MAX_RECIPIENT_PARTICIPANTS = 50
"""With `recipients_as_participants`, at most this many recipients of one message join its ticket."""
_log = logging.getLogger("ticketmail.pipeline")


class ProcessingError(TicketmailError):
    """An unexpected error while processing one message; the message was quarantined."""

    code = "processing_failed"
    status = 500


@attrs.frozen
class Outcome:
    """What processing one message did.

    Attributes:
        action: `created` a ticket, `appended` an entry, `ignored` by a filter/policy,
            `duplicate` of a message already processed (including a redelivery after a crash),
            `rejected` by a rule, or `failed` (quarantined with its raw bytes; nothing else changed).
        ticket: The ticket number concerned, if any.
        entry_id: The thread entry created, if any.
        message_id: The message's (possibly generated) Message-ID.
        reasons: Everything that fired, from rules, threading and duplicate checks.
        alert: Whether the application should alert staff.
        autorespond: Whether the application may send an auto-response.
        already_processed: True when this exact mailbox item was processed before (a redelivery).
        provenance: Where the message came from.
        error: The error behind a `failed` (or `rejected`) outcome.
    """

    action: OutcomeAction
    ticket: str | None = None
    entry_id: int | None = None
    message_id: str | None = None
    reasons: tuple[Reason, ...] = ()
    alert: bool = False
    autorespond: bool = False
    already_processed: bool = False
    provenance: Provenance | None = None
    error: TicketmailError | None = attrs.field(default=None, eq=False)

    @property
    def acknowledge(self) -> bool:
        """Whether the source may now delete/move/flag the item: every committed action but `failed`."""
        return self.action != "failed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (used by the CLI's one-line-per-message output)."""
        return {
            "action": self.action,
            "ticket": self.ticket,
            "entry": self.entry_id,
            "message_id": self.message_id,
            "reasons": [attrs.asdict(r) for r in self.reasons],
            "alert": self.alert,
            "autorespond": self.autorespond,
            "already_processed": self.already_processed,
            "error": self.error.to_dict() if self.error else None,
        }


def ledger_key(provenance: Provenance) -> str:
    """The ledger key of a mailbox item: `"<mailbox>/<kind>/<key>"`."""
    return f"{provenance.mailbox}/{provenance.kind}/{provenance.key}"


def _system_clock() -> _dt.datetime:
    # The only wall-clock read in the pipeline, used when the application injects no clock.
    return _dt.datetime.now(_dt.timezone.utc)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


def _tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(str(v) for v in value)
    return (str(value),)


def _request_text(request: TicketRequest) -> str:
    """The plain-text body of an API request: an HTML message (sanitized by the parser) as text, as mail."""
    if request.message.content_type == "text/html":
        return html_to_text(request.message.text)
    return request.message.text


def _audit_reasons(reasons: tuple[Reason, ...]) -> tuple[tuple[str, str, str | None], ...]:
    return tuple((r.code, r.message, r.value) for r in reasons)


@attrs.frozen
class _Prepared:
    """A parsed message ready for its unit of work."""

    raw: bytes
    provenance: Provenance
    key: str
    email: InboundEmail
    dup_keys: tuple[str, ...]
    candidates: ThreadCandidates | None = None
    notes: tuple[Reason, ...] = ()


def _present(outcome: Outcome | None) -> Outcome:
    if outcome is None:  # pragma: no cover - every index is filled above
        raise ProcessingError("a message of the batch has no outcome")
    return outcome


@attrs.frozen
class _Result:
    """An outcome plus what the hooks need, produced inside the unit of work."""

    outcome: Outcome
    hook: HookKind | None = None
    entry: Entry | None = None


class Pipeline:
    """Ties parsing, rules, threading and a backend together; one unit of work per message.

    Args:
        backend: Where tickets are stored.
        rules: The rule set (`ticketmail.rules.load_rules()`); `None` means the built-in defaults
            (automatic-mail detection, loop protection, no filters).
        threading: Threading options (tag format, policies).
        clock: Returns the current time as an aware datetime. Inject one in tests; the default reads
            the system clock in UTC.
        hooks: Callables to run after each commit.
        email_options: Options and limits for `ticketmail.parsing.mime.parse_email()`.
        duplicate_scope: Default: the rules' `settings.duplicate_scope`, else `global`.
            `global` (the same Message-ID is a duplicate whichever mailbox it arrives at) or
            `mailbox` (only within one mailbox) or `destination` (per envelope recipient; see
            `ticketmail.rules.duplicates`).
        number_generator: Returns candidate ticket numbers (e.g. a
            `RandomTicketNumbers`); collisions are checked and retried.
            Default: `ticketmail.numbers.generate_number()`.
        token_keys: Keys for signed outbound Message-IDs (`ticketmail.tokens`; the first one signs,
            all of them verify, so a secret can be rotated). Without keys the token route of threading and
            the own-message loop check are off, and `outbound_message_id()` refuses.
        context: The default mailbox context when a call passes none.
        parser: Replaces the email parser (bytes -> `InboundEmail`).
        logger: Where failures and hook errors are logged.
        attachments: The attachment policy (`AttachmentPolicy`) applied to
            mail and API requests alike: a refused file is dropped with a note in the entry's text and an
            `attachment.*` reason; the ticket is still created. `None` (default) keeps every file.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        rules: RuleSet | None = None,
        threading: ThreadingOptions | None = None,
        clock: Callable[[], _dt.datetime] | None = None,
        hooks: Hooks | None = None,
        email_options: EmailOptions | None = None,
        duplicate_scope: DuplicateScope | None = None,
        number_generator: NumberGenerator | None = None,
        token_keys: tokens.Keys | None = None,
        context: MailboxContext | None = None,
        parser: Callable[[bytes], InboundEmail] | None = None,
        logger: logging.Logger | None = None,
        attachments: AttachmentPolicy | None = None,
    ) -> None:
        if duplicate_scope is None:
            duplicate_scope = getattr(rules, "duplicate_scope", "global")
        if duplicate_scope not in ("global", "mailbox", "destination"):
            raise ConfigError(
                f"duplicate_scope must be global, mailbox or destination, got {duplicate_scope!r}",
                field="duplicate_scope",
            )
        self._backend = backend
        self._rules = rules
        self._threading = threading or ThreadingOptions()
        self._clock = clock or _system_clock
        if self._clock().tzinfo is None:
            raise ConfigError("clock must return an aware datetime (with tzinfo), got a naive one", field="clock")
        self._hooks = hooks or Hooks()
        self._email_options = email_options
        self._duplicate_scope: DuplicateScope = duplicate_scope
        self._numbers = number_generator or generate_number
        self._token_keys = tokens.signing_keys(token_keys) if token_keys is not None else ()
        self._context = context or MailboxContext()
        self._parser = parser
        self._log = logger or _log
        self._attachments = attachments

    # -- public entry points -------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The backend this pipeline stores into."""
        return self._backend

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        """Process one raw message; never raises for a bad message, only `BackendError`.

        Raises `TypeMismatchError` when `raw` is not bytes or `provenance` not
        a `Provenance` (a programming error, not a bad message).
        """
        ctx = context or self._context
        prepared = self._prepare(raw, provenance, ctx)
        if isinstance(prepared, Outcome):
            return prepared
        return self._commit_one(prepared, ctx)

    def process_batch(
        self, items: Iterable[tuple[bytes, Provenance]], *, context: MailboxContext | None = None
    ) -> list[Outcome]:
        """Process several raw messages in ONE unit of work (group commit); outcomes in input order.

        Every message still has all of its effects or none, and the caller acknowledges the items only after
        this returns, exactly as with `process_email()`; what changes is that one commit covers the whole
        batch, which is several times faster on SQLite, where the commit dominates. Messages see the effects
        of earlier ones in the batch (a reply threads onto a ticket opened just before it).

        A message that cannot be parsed is quarantined on its own before the batch. If any message fails
        while the batch is being applied, the whole unit is rolled back and every message of the batch is
        processed again on its own, so one bad message never costs the others. `BackendError`
        propagates (nothing of the unit committed; acknowledge nothing).
        """
        ctx = context or self._context
        outcomes: list[Outcome | None] = []
        pending: list[tuple[int, _Prepared]] = []
        for index, pair in enumerate(items):
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeMismatchError(
                    f"items[{index}] must be a (raw, provenance) pair, got {type(pair).__name__}", field="items"
                )
            prepared = self._prepare(pair[0], pair[1], ctx)
            if isinstance(prepared, Outcome):
                outcomes.append(prepared)
            else:
                outcomes.append(None)
                pending.append((index, prepared))
        results: list[tuple[int, _Result]] = []
        try:
            with self._backend.unit_of_work() as uow:
                for index, item in pending:
                    with _auditing(item.email):
                        results.append((index, self._email_effect(uow, item, ctx)))
        except BackendError:
            raise
        except Exception:
            self._log.info("a message failed inside a batch of %d; processing them one by one", len(pending))
            for index, item in pending:
                outcomes[index] = self._commit_one(item, ctx)
        else:
            for index, result in results:
                self._fire(result)
                outcomes[index] = result.outcome
        return [_present(outcome) for outcome in outcomes]

    def _prepare(self, raw: bytes, provenance: Provenance, ctx: MailboxContext) -> _Prepared | Outcome:
        """Check the arguments, parse and compute duplicate keys (pure work, outside any transaction)."""
        data: object = raw
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise TypeMismatchError(f"raw must be bytes, got {type(data).__name__}", field="raw")
        if not isinstance(provenance, Provenance):
            raise TypeMismatchError(
                f"provenance must be a Provenance, got {type(provenance).__name__}", field="provenance"
            )
        key = ledger_key(provenance)
        try:
            email = self._parse(data)
        except BackendError:
            raise
        except TicketmailError as exc:
            return self._fail(data, provenance, key, exc, None)
        except Exception as exc:
            self._log.exception("parsing %s failed unexpectedly", key)
            return self._fail(data, provenance, key, _unexpected(exc, "parsing"), None)
        try:
            dup_keys = self._duplicate_keys(email, ctx)
            candidates = self._thread_candidates(email, ctx)
        except BackendError:
            raise
        except TicketmailError as exc:
            return self._fail(data, provenance, key, exc, email.message_id)
        except Exception as exc:
            self._log.exception("duplicate keys of %s failed unexpectedly", key)
            return self._fail(data, provenance, key, _unexpected(exc, "processing"), email.message_id)
        try:
            email, notes = self._attachment_policy(email)
        except Exception as exc:  # a policy must not cost the message: keep it, unprocessed, in quarantine
            self._log.exception("the attachment policy failed on %s", key)
            return self._fail(data, provenance, key, _unexpected(exc, "checking the attachments of"), email.message_id)
        return _Prepared(data, provenance, key, email, dup_keys, candidates, notes)

    def _thread_candidates(self, email: InboundEmail, ctx: MailboxContext) -> ThreadCandidates:
        """The capped threading candidates, ticket numbers checked with a read-only lookup (no write lock)."""
        candidates = thread_candidates(email, self._threading, ctx.addresses)
        if not (candidates.subject_numbers or candidates.plus_tokens):
            return candidates
        backend = self._backend
        return prefilter_candidates(candidates, lambda number: backend.get_ticket(number) is not None)

    def _commit_one(
        self, item: _Prepared, ctx: MailboxContext, *, then: Callable[[UnitOfWork], None] | None = None
    ) -> Outcome:
        """One message in its own unit of work; failures quarantined, BackendError raised.

        `then` runs in the same unit of work after the effect (a retried message leaves the quarantine there).
        """
        try:
            with self._backend.unit_of_work() as uow, _auditing(item.email):
                result = self._email_effect(uow, item, ctx)
                if then is not None:
                    then(uow)
        except BackendError:
            raise
        except TicketmailError as exc:
            return self._fail(item.raw, item.provenance, item.key, exc, item.email.message_id)
        except Exception as exc:
            self._log.exception("processing %s failed unexpectedly; rolled back", item.key)
            return self._fail(
                item.raw, item.provenance, item.key, _unexpected(exc, "processing"), item.email.message_id
            )
        self._fire(result)
        return result.outcome

    def process_request(
        self, request: TicketRequest, *, context: MailboxContext | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        """Process one API ticket request.

        With an `idempotency_key`, a retried request (same key, same context name) returns the first
        outcome as `duplicate` with `already_processed` instead of opening a second ticket.
        """
        ctx = context or self._context
        provenance = Provenance(ctx.name, "api", idempotency_key) if idempotency_key else None
        key = ledger_key(provenance) if provenance else None
        try:
            with self._backend.unit_of_work() as uow, _auditing(request):
                result = self._request_effect(uow, request, provenance, key, ctx)
        except BackendError:
            raise
        except TicketmailError as exc:
            return self._fail_request(request, provenance, key, exc)
        except Exception as exc:
            self._log.exception("processing API request failed unexpectedly; rolled back")
            return self._fail_request(request, provenance, key, _unexpected(exc, "processing"))
        self._fire(result)
        return result.outcome

    def quarantine(
        self, raw: bytes, *, provenance: Provenance, error: TicketmailError, message_id: str | None = None
    ) -> Outcome:
        """Keep `raw` in the backend's quarantine with `error` as the reason; return a `failed` outcome.

        For callers that found an item unprocessable before it reached the pipeline (an API payload that
        does not parse, a message a source could not fetch whole). Like every failure it is audited and
        fires the `message_failed` hook; an item already committed is reported as `duplicate` instead.
        """
        return self._fail(bytes(raw), provenance, ledger_key(provenance), error, message_id)

    def retry_quarantined(self, record: QuarantineRecord, *, context: MailboxContext | None = None) -> Outcome:
        """Run a quarantined message through the current rules and threading again, exactly once.

        When it now succeeds (any outcome but `failed`), its row leaves the quarantine in the same unit of work
        as its effect, so a crash can neither lose the message nor apply it twice; a message the ledger already
        has (its mailbox copy was processed meanwhile) is a `duplicate` and leaves the quarantine too. When it
        fails again it stays, with one more attempt counted. Raises `InvalidValueError` for a record that was
        not read from the backend (no `id` or provenance) and `ConfigError` when the backend's units of work
        cannot remove quarantined messages (`QuarantineAdmin`).
        """
        if record.id is None or record.provenance is None:
            raise InvalidValueError("only a stored quarantine record (with id and provenance) can be retried")
        quarantine_id = record.id
        with self._backend.unit_of_work() as probe:
            self._quarantine_admin(probe)

        def leave_quarantine(uow: UnitOfWork) -> None:
            self._quarantine_admin(uow).remove_quarantined(quarantine_id)

        ctx = context or self._context
        provenance = record.provenance
        if record.reason_code == PolicyRejectedError.code:
            # A refused mail was committed (its ledger row says `rejected`) and kept here for review: its retry
            # is a new decision under a key of its own, or it would only find that row and leave as a duplicate.
            provenance = attrs.evolve(provenance, key=f"{provenance.key}#retry-{quarantine_id}")
        prepared = self._prepare(record.raw, provenance, ctx)
        if isinstance(prepared, Outcome):
            if prepared.action == "duplicate":
                with self._backend.unit_of_work() as uow:
                    leave_quarantine(uow)
            return prepared
        return self._commit_one(prepared, ctx, then=leave_quarantine)

    def discard_quarantined(self, quarantine_id: int, *, note: str = "discarded by an operator") -> bool:
        """Delete a quarantined message for good, with an audit record saying so; `False` if there is none."""
        with self._backend.unit_of_work() as uow:
            removed = self._quarantine_admin(uow).remove_quarantined(quarantine_id)
            if removed is None:
                return False
            reason = ("quarantine.discarded", note, f"{removed.reason_code} after {removed.attempts} attempt(s)")
            record = AuditRecord(self._now(), "discarded", None, removed.provenance, None, (reason,))
            uow.record_audit(describe_message(record, None))
        return True

    def _quarantine_admin(self, uow: UnitOfWork) -> QuarantineAdmin:
        if not isinstance(uow, QuarantineAdmin):
            raise ConfigError(
                f"{type(self._backend).__name__} cannot remove quarantined messages (QuarantineAdmin)",
                field="backend",
            )
        return uow

    def is_processed(self, provenance: Provenance) -> bool:
        """Whether this mailbox item was already committed (a source may then just acknowledge it).

        Uses the backend's own `is_processed` when it has one (SQLite reads the ledger without taking the
        write lock, so concurrent pollers do not serialize on this check); otherwise a short unit of work.
        """
        key = ledger_key(provenance)
        reader = getattr(self._backend, "is_processed", None)
        if callable(reader):
            return bool(reader(key))
        with self._backend.unit_of_work() as uow:
            return uow.processed(key) is not None

    def verify_token(self, message_id: str) -> str | None:
        """The ticket number a signed Message-ID of ours was made for, or `None`."""
        if not self._token_keys:
            return None
        info = tokens.verify_message_id(message_id, self._token_keys)
        return None if info is None else info.ticket

    def outbound_message_id(self, ticket: str, entry: int, *, domain: str) -> str:
        """A signed Message-ID (with angle brackets) for a mail the application sends about `entry`.

        The id is recorded on the ticket's thread (`outbound`) in its own unit of work, so replies thread
        by `References` even without the keys. Raises `ConfigError` when the
        pipeline has no `token_keys`.
        """
        if not self._token_keys:
            raise ConfigError("outbound Message-IDs need token_keys on the pipeline", field="token_keys")
        message_id = tokens.make_message_id(ticket, entry, keys=self._token_keys, domain=domain)
        with self._backend.unit_of_work() as uow:
            uow.record_message_id(ticket, message_id, "outbound")
        return message_id

    def notification_headers(
        self,
        ticket: str,
        entry: int,
        *,
        domain: str,
        kind: Literal["auto-replied", "auto-generated"] | None = "auto-generated",
    ) -> dict[str, str]:
        """The threading headers for a mail the application sends about `entry` of `ticket`.

        `Message-ID` (signed and recorded, see `outbound_message_id()`), `In-Reply-To` (the
        entry's own Message-ID, when it has one) and `References` (the thread's message ids, oldest
        first, the last ten: RFC 5322 section 3.6.4 lets a writer trim them). With `kind`, also the
        headers that stop auto-responders and loops (`ticketmail.rules.outgoing_headers()`):
        `auto-replied` for an auto-response to the requester, `auto-generated` (default) for other
        notifications; `None` for a reply written by staff. Put the subject tag
        (`ticketmail.threading.subject_tag()`) in the subject yourself.

        Raises `NotFoundError` for an unknown ticket or an entry that is not one
        of its own (no Message-ID is signed or recorded then) and `ConfigError`
        without `token_keys`.
        """
        thread = self._backend.entries(ticket)
        if not thread and self._backend.get_ticket(ticket) is None:
            raise NotFoundError(f"no ticket {ticket!r}", field="ticket")
        parent = tokens.entry_of(thread, ticket, entry).message_id  # an entry of this ticket, or NotFoundError
        headers: dict[str, str] = {"Message-ID": self.outbound_message_id(ticket, entry, domain=domain)}
        ids = [f"<{e.message_id}>" for e in thread if e.message_id]
        if parent is not None:
            headers["In-Reply-To"] = f"<{parent}>"
        if ids:
            headers["References"] = " ".join(ids[-10:])
        if kind is not None:
            headers.update(outgoing_headers(kind))
        return headers

    # -- steps ---------------------------------------------------------------------------------------

    def _apply_policy(self, attachments: tuple[Attachment, ...]) -> PolicyResult:
        if self._attachments is None or not attachments:
            return PolicyResult(attachments)
        return self._attachments.apply(attachments)

    def _attachment_policy(self, email: InboundEmail) -> tuple[InboundEmail, tuple[Reason, ...]]:
        """Drop the files the attachment policy refuses; the note goes into the text the ticket shows."""
        files = self._apply_policy(email.attachments)
        if not files.rejected:
            return email, ()
        note = files.note()
        dropped = {r.filename for r in files.rejected if r.inline}
        html = email.html
        if html is not None and dropped:
            for attachment in email.attachments:
                if attachment.content_id and attachment.filename in dropped and attachment not in files.kept:
                    html = html.replace(f"cid:{attachment.content_id}", "about:blank")
        email = attrs.evolve(
            email,
            attachments=files.kept,
            text=_with_note(email.text, note),
            new_text=_with_note(email.new_text, note),
            html=_with_html_note(html, note),
        )
        return email, files.reasons()

    def _parse(self, raw: bytes) -> InboundEmail:
        if self._parser is not None:
            return self._parser(raw)
        return parse_email(raw, options=self._email_options)

    def _now(self) -> _dt.datetime:
        return self._clock()

    def _rule_set(self) -> RuleSet:
        if self._rules is None:
            self._rules = load_rules({}, source="<defaults>")
        return self._rules

    def _duplicate_keys(self, message: InboundEmail | TicketRequest, ctx: MailboxContext) -> tuple[str, ...]:
        keys = duplicate_keys(message, scope=self._duplicate_scope, context=ctx)
        return tuple(dict.fromkeys(keys))

    def _evaluate(
        self, message: InboundEmail | TicketRequest, ctx: MailboxContext, uow: UnitOfWork, now: _dt.datetime
    ) -> Decision:
        return evaluate(message, self._rule_set(), context=ctx, now=now, lookups=uow)

    def _new_number(self, uow: UnitOfWork) -> str:
        for _ in range(_NUMBER_ATTEMPTS):
            number = self._numbers()
            if not uow.number_exists(number):
                return number
        raise TicketNumbersExhaustedError(
            f"no free ticket number in {_NUMBER_ATTEMPTS} draws from the number generator; widen its format",
            field="number_generator",
        )

    def _redelivery(self, record: ProcessedRecord, provenance: Provenance | None) -> _Result:
        outcome = Outcome(
            "duplicate",
            ticket=record.ticket,
            entry_id=record.entry_id,
            message_id=record.message_id,
            reasons=(
                Reason(
                    "duplicate.redelivery",
                    f"this item was already processed (first outcome: {record.action})",
                    value=record.action,
                ),
            ),
            already_processed=True,
            provenance=provenance,
        )
        return _Result(outcome)

    def _finish(
        self,
        uow: UnitOfWork,
        outcome: Outcome,
        key: str | None,
        dup_keys: tuple[str, ...],
        now: _dt.datetime,
        *,
        raw: bytes | None = None,
    ) -> None:
        """Ledger rows and the audit record, the last writes of every committed message.

        A `rejected` mail keeps its raw bytes in the quarantine (`raw`), in the same unit of work, so the
        source may acknowledge (even delete) it: nothing refused is lost, and the operator can review it.
        """
        if raw is not None and outcome.action == "rejected":
            error = outcome.error or PolicyRejectedError("refused by a rule")
            uow.quarantine(QuarantineRecord(now, raw, error.code, error.message, outcome.provenance))
        if key is not None:
            uow.record_processed(
                ProcessedRecord(key, outcome.action, now, outcome.ticket, outcome.entry_id, outcome.message_id)
            )
        if outcome.action in ("created", "appended"):
            for dup in dup_keys:
                uow.record_processed(
                    ProcessedRecord(dup, outcome.action, now, outcome.ticket, outcome.entry_id, outcome.message_id)
                )
        record = AuditRecord(
            now,
            outcome.action,
            outcome.message_id,
            outcome.provenance,
            outcome.ticket,
            _audit_reasons(outcome.reasons),
            outcome.entry_id,
        )
        uow.record_audit(describe_message(record, _AUDITED.get()))

    def _duplicate_of(
        self, uow: UnitOfWork, dup_keys: tuple[str, ...], provenance: Provenance | None, message_id: str | None
    ) -> Outcome | None:
        for dup in dup_keys:
            record = uow.processed(dup)
            if record is not None:
                return Outcome(
                    "duplicate",
                    ticket=record.ticket,
                    entry_id=record.entry_id,
                    message_id=message_id,
                    reasons=(Reason("duplicate.key", "the same message was processed before", value=dup),),
                    provenance=provenance,
                )
        return None

    def _verdict(self, decision: Decision, base: Outcome) -> Outcome | None:
        """An `ignored`/`rejected` outcome when the rules say so, else `None`."""
        reasons = base.reasons + decision.reasons
        if decision.action == "ignore":
            return attrs.evolve(base, action="ignored", reasons=reasons)
        if decision.action == "reject":
            why = decision.reasons[-1].message if decision.reasons else "refused by a rule"
            return attrs.evolve(base, action="rejected", reasons=reasons, error=PolicyRejectedError(why))
        return None

    def _email_effect(self, uow: UnitOfWork, item: _Prepared, ctx: MailboxContext) -> _Result:
        email, provenance, key, dup_keys = item.email, item.provenance, item.key, item.dup_keys
        now = self._now()
        previous = uow.processed(key)
        if previous is not None:
            return self._redelivery(previous, provenance)
        base = Outcome("ignored", message_id=email.message_id, provenance=provenance)
        duplicate = self._duplicate_of(uow, dup_keys, provenance, email.message_id)
        if duplicate is not None:
            self._finish(uow, duplicate, key, (), now)
            return _Result(duplicate)

        if self.verify_token(email.message_id) is not None:
            outcome = attrs.evolve(
                base, reasons=(Reason("loop.own_message_id", "this is a message we sent", value=email.message_id),)
            )
            self._finish(uow, outcome, key, (), now)
            return _Result(outcome, "message_ignored")

        decision = self._evaluate(email, ctx, uow, now)
        verdict = self._verdict(decision, base)
        if verdict is not None:
            self._finish(uow, verdict, key, (), now, raw=item.raw)
            return _Result(verdict, "message_ignored" if verdict.action == "ignored" else "message_rejected")

        automatic = decision.automatic is not None
        thread = resolve_thread(
            email,
            uow,
            options=self._threading,
            verify_token=self.verify_token if self._token_keys else None,
            own_addresses=ctx.addresses,
            automatic=automatic,
            may_open_ticket=decision.may_open_ticket,
            candidates=item.candidates,
        )
        reasons = decision.reasons + thread.reasons + item.notes
        if thread.action == "quarantine":  # rolled back and kept in the quarantine (raw bytes) for an operator
            raise UntrustedReplyError(thread.reasons[-1].message, field="threading.untrusted_match")
        if thread.action in ("ignore", "reject"):
            outcome = attrs.evolve(
                base,
                action="ignored" if thread.action == "ignore" else "rejected",
                ticket=thread.ticket.number if thread.ticket else None,
                reasons=reasons,
                error=PolicyRejectedError(thread.reasons[-1].message) if thread.action == "reject" else None,
            )
            self._finish(uow, outcome, key, (), now, raw=item.raw)
            return _Result(outcome, "message_ignored" if thread.action == "ignore" else "message_rejected")

        requester = thread.requester
        if requester is None:
            outcome = attrs.evolve(
                base,
                action="rejected",
                reasons=reasons,
                error=PolicyRejectedError("the message names no sender, so it cannot be threaded or open a ticket"),
            )
            self._finish(uow, outcome, key, (), now, raw=item.raw)
            return _Result(outcome, "message_rejected")
        autorespond = decision.autorespond and not automatic
        if thread.action in ("new", "new_linked"):
            linked = thread.ticket.number if thread.action == "new_linked" and thread.ticket else None
            ticket = self._create(uow, email, requester, decision, ctx, now, linked)
            entry = uow.append_entry(ticket.number, self._email_entry(email, requester, "message", now))
            action: OutcomeAction = "created"
            alert = True  # a new ticket always concerns staff
        else:
            if thread.ticket is None:  # pragma: no cover - append/reopen always carry the matched ticket
                raise ProcessingError("threading chose to append without naming a ticket")
            ticket = thread.ticket
            if thread.action == "reopen":
                uow.set_status(ticket.number, "open", at=now)
            if thread.add_participant:
                uow.add_participant(ticket.number, requester.email)
            entry = uow.append_entry(ticket.number, self._email_entry(email, requester, "reply", now))
            action = "appended"
            alert = not automatic  # staff need no alert for an auto-reply on a thread
        if self._threading.recipients_as_participants and not automatic:
            reasons += self._add_recipients(uow, email, ticket, requester, ctx)
        if item.notes and self._attachments is not None and self._attachments.keep_raw:
            # A file was dropped: keep the original bytes where raw mail is kept, so a false positive can be
            # recovered by an administrator (the ticket itself never carries the refused file).
            why = "; ".join(f"{r.value}: {r.message}" for r in item.notes)[:1000]
            uow.quarantine(QuarantineRecord(now, item.raw, "attachment_dropped", why, provenance))
        outcome = Outcome(
            action,
            ticket=ticket.number,
            entry_id=entry.id,
            message_id=email.message_id,
            reasons=reasons,
            alert=alert,
            autorespond=autorespond,
            provenance=provenance,
        )
        self._finish(uow, outcome, key, dup_keys, now)
        return _Result(outcome, "ticket_created" if action == "created" else "entry_appended", entry)

    def _add_recipients(
        self, uow: UnitOfWork, email: InboundEmail, ticket: Ticket, requester: Address, ctx: MailboxContext
    ) -> tuple[Reason, ...]:
        """Add the message's To/Cc people (not the desk, not the requester) as participants."""
        own = {a.lower() for a in ctx.addresses} | {a.lower() for a in getattr(self._rules, "own_addresses", ())}
        sep = self._threading.plus_separator
        skip = {requester.email.lower(), ticket.requester.email.lower(), *(p.lower() for p in ticket.participants)}
        added: list[Reason] = []
        for address in (*email.to, *email.cc):
            if len(added) >= _MAX_RECIPIENT_PARTICIPANTS:  # a hostile Cc list must not stall the transaction
                added.append(
                    Reason(
                        "thread.recipients_capped",
                        f"only the first {_MAX_RECIPIENT_PARTICIPANTS} recipients join the ticket",
                        value=str(_MAX_RECIPIENT_PARTICIPANTS),
                    )
                )
                break
            lowered = address.email.lower()
            local, _, domain = lowered.rpartition("@")
            if lowered in skip or lowered in own or f"{local.partition(sep)[0]}@{domain}" in own:
                continue
            skip.add(lowered)
            uow.add_participant(ticket.number, address.email)
            added.append(Reason("thread.recipient_participant", "a recipient joins the ticket", value=address.email))
        return tuple(added)

    def _email_entry(
        self, email: InboundEmail, author: Address | None, kind: Literal["message", "reply"], now: _dt.datetime
    ) -> NewEntry:
        # A reply stores what the writer added (quoted history removed); the first message keeps all of it.
        body = (email.new_text or email.text) if kind == "reply" else email.text
        return NewEntry(
            kind=kind,
            author=author,
            body=body,
            created=now,
            html=email.html,
            message_id=email.message_id,
            attachments=email.attachments,
        )

    def _create(
        self,
        uow: UnitOfWork,
        message: InboundEmail | TicketRequest,
        requester: Address,
        decision: Decision,
        ctx: MailboxContext,
        now: _dt.datetime,
        linked: str | None = None,
    ) -> Ticket:
        attributes = decision.attributes
        # Typed values (numbers, booleans, choices, datetimes) are kept: NewTicket stores them as JSON values.
        custom: dict[str, object] = {}
        if isinstance(message, TicketRequest):
            subject = message.subject
            source = message.source
            priority = _opt_int(attributes.get("priority")) or message.priority or ctx.priority
            topic_id = _opt_int(attributes.get("topic_id")) or message.topic_id
            custom.update((name, value) for name, value in message.custom_fields.items() if value is not None)
            if message.phone is not None:
                custom.setdefault("phone", message.phone)
            if message.ip is not None:
                custom.setdefault("ip", message.ip)
        else:
            subject = message.subject
            source = "email"
            priority = _opt_int(attributes.get("priority")) or ctx.priority
            topic_id = _opt_int(attributes.get("topic_id"))
        # Values set by rules win over the caller's.
        custom.update(
            (name[len("custom.") :], value)
            for name, value in attributes.items()
            if name.startswith("custom.") and value is not None
        )
        if linked is not None:
            custom["linked_ticket"] = linked
        return uow.create_ticket(
            NewTicket(
                number=self._new_number(uow),
                subject=subject.strip() or "(no subject)",
                requester=requester,
                created=now,
                source=source,
                mailbox=ctx.name,
                department=_opt_str(attributes.get("department")) or ctx.department,
                team=_opt_str(attributes.get("team")),
                category=_opt_str(attributes.get("category")) or ctx.category,
                priority=priority,
                topic_id=topic_id,
                assignee=_opt_str(attributes.get("assignee")),
                tags=_tags(attributes.get("tags")),
                custom_fields=tuple(custom.items()),
            )
        )

    def _request_effect(
        self,
        uow: UnitOfWork,
        request: TicketRequest,
        provenance: Provenance | None,
        key: str | None,
        ctx: MailboxContext,
    ) -> _Result:
        now = self._now()
        if key is not None:
            previous = uow.processed(key)
            if previous is not None:
                return self._redelivery(previous, provenance)
        base = Outcome("ignored", provenance=provenance)
        decision = self._evaluate(request, ctx, uow, now)
        verdict = self._verdict(decision, base)
        if verdict is not None:
            self._finish(uow, verdict, key, (), now)
            return _Result(verdict, "message_ignored" if verdict.action == "ignored" else "message_rejected")
        if not decision.may_open_ticket:  # e.g. the sender is over the rate limit
            outcome = attrs.evolve(
                base,
                reasons=(*decision.reasons, Reason("request.no_ticket", "the rules allow no new ticket for it")),
            )
            self._finish(uow, outcome, key, (), now)
            return _Result(outcome, "message_ignored")
        ticket = self._create(uow, request, request.email, decision, ctx, now)
        files = self._apply_policy(request.attachments)
        html = request.message.text if request.message.content_type == "text/html" else None
        body = _request_text(request)
        if files.rejected:
            body, html = _with_note(body, files.note()), _with_html_note(html, files.note())
        entry = uow.append_entry(
            ticket.number,
            NewEntry(
                kind="message",
                author=request.email,
                body=body,
                created=now,
                html=html,
                attachments=files.kept,
            ),
        )
        outcome = Outcome(
            "created",
            ticket=ticket.number,
            entry_id=entry.id,
            reasons=decision.reasons + files.reasons(),
            alert=request.alert,
            autorespond=request.autorespond and decision.autorespond,
            provenance=provenance,
        )
        self._finish(uow, outcome, key, (), now)
        return _Result(outcome, "ticket_created", entry)

    # -- failures and hooks --------------------------------------------------------------------------

    def _fail(
        self, raw: bytes, provenance: Provenance, key: str, error: TicketmailError, message_id: str | None
    ) -> Outcome:
        """Quarantine `raw` in its own unit of work and report `failed`."""
        now = self._now()
        reasons = (Reason(f"failed.{error.code}", error.message),)
        outcome = Outcome("failed", message_id=message_id, reasons=reasons, provenance=provenance, error=error)
        with _quarantine_errors(), self._backend.unit_of_work() as uow:
            previous = uow.processed(key)
            if previous is not None:  # committed by an earlier attempt: acknowledge, do not quarantine
                return self._redelivery(previous, provenance).outcome
            # The backend keeps one row per provenance and content and counts attempts.
            uow.quarantine(QuarantineRecord(now, raw, error.code, error.message, provenance))
            record = AuditRecord(now, "failed", message_id, provenance, None, _audit_reasons(reasons))
            uow.record_audit(describe_message(record, None))
        self._fire(_Result(outcome, "message_failed"))
        return outcome

    def _fail_request(
        self, request: TicketRequest, provenance: Provenance | None, key: str | None, error: TicketmailError
    ) -> Outcome:
        """An API request has no raw bytes worth keeping; record the failure in the audit log only."""
        now = self._now()
        reasons = (Reason(f"failed.{error.code}", error.message),)
        outcome = Outcome("failed", reasons=reasons, provenance=provenance, error=error)
        with _quarantine_errors(), self._backend.unit_of_work() as uow:
            if key is not None:
                previous = uow.processed(key)
                if previous is not None:
                    return self._redelivery(previous, provenance).outcome
            record = AuditRecord(now, "failed", None, provenance, None, _audit_reasons(reasons))
            uow.record_audit(describe_message(record, request))
        self._fire(_Result(outcome, "message_failed"))
        return outcome

    def _fire(self, result: _Result) -> None:
        if result.hook is None:
            return
        hooks: tuple[object, ...] = getattr(self._hooks, result.hook)
        if not hooks:
            return
        ticket: Ticket | None = None
        if result.outcome.ticket is not None and result.hook in ("ticket_created", "entry_appended"):
            try:
                ticket = self._backend.get_ticket(result.outcome.ticket)
            except Exception:  # the commit stands; hooks then get the outcome without the ticket
                self._log.exception("could not re-read ticket %s for hooks", result.outcome.ticket)
        self._hooks.dispatch(HookEvent(result.hook, result.outcome, ticket, result.entry), logger=self._log)


def _with_note(text: str, note: str) -> str:
    return f"{text.rstrip()}\n\n{note}" if text.strip() else note


def _with_html_note(html: str | None, note: str) -> str | None:
    if html is None:
        return None
    import html as _html

    return f'{html}<pre class="ticketmail-note">{_html.escape(note)}</pre>'


# The message whose effect is being applied, for its audit record. Set around each effect (one message at a
# time per thread or task, also inside a group commit), so the audit record carries the sender, subject and
# headers without every decision path having to pass the message along.
_AUDITED: contextvars.ContextVar[InboundEmail | TicketRequest | None] = contextvars.ContextVar(
    "ticketmail_audited_message", default=None
)


@contextlib.contextmanager
def _auditing(message: InboundEmail | TicketRequest) -> Iterator[None]:
    token = _AUDITED.set(message)
    try:
        yield
    finally:
        _AUDITED.reset(token)


@contextlib.contextmanager
def _quarantine_errors() -> Iterator[None]:
    """Recording a failure must not fail quietly: anything but a BackendError becomes one (do not ack)."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"could not record a failed message ({type(exc).__name__}); retry later") from exc


def _unexpected(exc: BaseException, stage: str) -> ProcessingError:
    # The message names the exception type only: its text may quote the input (or worse, a secret).
    error = ProcessingError(f"unexpected {type(exc).__name__} while {stage} the message; see the log")
    error.__cause__ = exc
    return error


def unexpected_error(exc: BaseException, stage: str = "processing") -> ProcessingError:
    """A `ProcessingError` (code `processing_failed`) for an exception that is not a ticketmail error.

    For callers that parse input themselves (`ticketmail ingest` parsing a payload file) and then keep it
    with `Pipeline.quarantine()`. The message names the exception type only, never its text (which may
    quote the input); the exception is chained as `__cause__` for the log.
    """
    return _unexpected(exc, stage)
