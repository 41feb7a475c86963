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

This module is the facade; the stages live in the private package `ticketmail._pipeline`, one responsibility
per module (the outcome types, preparing a message, the email and request effects, what is stored, the ledger
and hooks, failures).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable, Iterable
from typing import Literal

import attrs

from ticketmail import tokens
from ticketmail._pipeline.capabilities import LedgerReader
from ticketmail._pipeline.config import Config, NumberGenerator, resolve_scope, system_clock
from ticketmail._pipeline.email_effect import email_effect
from ticketmail._pipeline.failures import applied, fail, fail_request, quarantine_admin
from ticketmail._pipeline.ledger import Result, auditing, fire
from ticketmail._pipeline.outcome import (
    DuplicateScope,
    Outcome,
    OutcomeAction,
    ProcessingError,
    ledger_key,
    unexpected_error,
)
from ticketmail._pipeline.prepare import Prepared, Unprocessable, prepare
from ticketmail._pipeline.request_effect import request_effect
from ticketmail.attachments import AttachmentPolicy
from ticketmail.audit import describe_message
from ticketmail.backends.base import AuditRecord, Backend, QuarantineRecord, UnitOfWork
from ticketmail.errors import (
    BackendError,
    ConfigError,
    InvalidValueError,
    NotFoundError,
    PolicyRejectedError,
    TicketmailError,
    TypeMismatchError,
)
from ticketmail.hooks import Hooks
from ticketmail.model import InboundEmail, MailboxContext, Provenance, TicketRequest
from ticketmail.numbers import generate_number
from ticketmail.parsing.mime import EmailOptions
from ticketmail.rules import RuleSet, outgoing_headers
from ticketmail.threading import ThreadingOptions

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

_log = logging.getLogger("ticketmail.pipeline")


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
        scope = resolve_scope(duplicate_scope, rules)
        clock = clock or system_clock
        if clock().tzinfo is None:
            raise ConfigError("clock must return an aware datetime (with tzinfo), got a naive one", field="clock")
        self._config = Config(
            backend=backend,
            rules=rules,
            threading=threading or ThreadingOptions(),
            clock=clock,
            hooks=hooks or Hooks(),
            email_options=email_options,
            duplicate_scope=scope,
            numbers=number_generator or generate_number,
            token_keys=tokens.signing_keys(token_keys) if token_keys is not None else (),
            context=context or MailboxContext(),
            parser=parser,
            log=logger or _log,
            attachments=attachments,
        )
        self._backend = backend

    @property
    def backend(self) -> Backend:
        """The backend this pipeline stores into."""
        return self._backend

    # -- mail -----------------------------------------------------------------------------------------

    def process_email(self, raw: bytes, *, provenance: Provenance, context: MailboxContext | None = None) -> Outcome:
        """Process one raw message; never raises for a bad message, only `BackendError`.

        Raises `TypeMismatchError` when `raw` is not bytes or `provenance` not
        a `Provenance` (a programming error, not a bad message).
        """
        ctx = context or self._config.context
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
        ctx = context or self._config.context
        outcomes: list[Outcome | None] = []
        pending: list[tuple[int, Prepared]] = []
        for index, pair in enumerate(items):
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeMismatchError(
                    f"items[{index}] must be a (raw, provenance) pair, got {type(pair).__name__}", field="items"
                )
            prepared = self._prepare(pair[0], pair[1], ctx)
            outcomes.append(prepared if isinstance(prepared, Outcome) else None)
            if not isinstance(prepared, Outcome):
                pending.append((index, prepared))
        try:
            results = self._apply_batch(pending, ctx)
        except BackendError:
            raise
        except Exception:
            self._config.log.info("a message failed inside a batch of %d; processing them one by one", len(pending))
            for index, item in pending:
                outcomes[index] = self._commit_one(item, ctx)
        else:
            for index, result in results:  # committed: now the hooks
                fire(self._config, result)
                outcomes[index] = result.outcome
        return [_present(outcome) for outcome in outcomes]

    def _apply_batch(self, pending: list[tuple[int, Prepared]], ctx: MailboxContext) -> list[tuple[int, Result]]:
        """The effects of `pending` in one unit of work (committed when this returns)."""
        results: list[tuple[int, Result]] = []
        with self._backend.unit_of_work() as uow:
            for index, item in pending:
                with auditing(item.email):
                    results.append((index, email_effect(self._config, uow, item, ctx)))
        return results

    def _prepare(self, raw: bytes, provenance: Provenance, ctx: MailboxContext) -> Prepared | Outcome:
        prepared = prepare(self._config, raw, provenance, ctx)
        if isinstance(prepared, Unprocessable):
            return fail(
                self._config, prepared.raw, prepared.provenance, prepared.key, prepared.error, prepared.message_id
            )
        return prepared

    def _commit_one(
        self, item: Prepared, ctx: MailboxContext, *, then: Callable[[UnitOfWork], None] | None = None
    ) -> Outcome:
        """One message in its own unit of work; failures quarantined, BackendError raised.

        `then` runs in the same unit of work after the effect (a retried message leaves the quarantine there).
        """

        def effect() -> Result:
            with self._backend.unit_of_work() as uow, auditing(item.email):
                result = email_effect(self._config, uow, item, ctx)
                if then is not None:
                    then(uow)
            return result

        def on_error(error: TicketmailError) -> Outcome:
            return fail(self._config, item.raw, item.provenance, item.key, error, item.email.message_id)

        return applied(self._config, effect, on_error, "processing %s failed unexpectedly; rolled back", item.key)

    # -- API requests ----------------------------------------------------------------------------------

    def process_request(
        self, request: TicketRequest, *, context: MailboxContext | None = None, idempotency_key: str | None = None
    ) -> Outcome:
        """Process one API ticket request.

        With an `idempotency_key`, a retried request (same key, same context name) returns the first
        outcome as `duplicate` with `already_processed` instead of opening a second ticket.
        """
        ctx = context or self._config.context
        provenance = Provenance(ctx.name, "api", idempotency_key) if idempotency_key else None
        key = ledger_key(provenance) if provenance else None

        def effect() -> Result:
            with self._backend.unit_of_work() as uow, auditing(request):
                return request_effect(self._config, uow, request, provenance, key, ctx)

        def on_error(error: TicketmailError) -> Outcome:
            return fail_request(self._config, request, provenance, key, error)

        return applied(self._config, effect, on_error, "processing API request failed unexpectedly; rolled back")

    # -- the quarantine --------------------------------------------------------------------------------

    def quarantine(
        self, raw: bytes, *, provenance: Provenance, error: TicketmailError, message_id: str | None = None
    ) -> Outcome:
        """Keep `raw` in the backend's quarantine with `error` as the reason; return a `failed` outcome.

        For callers that found an item unprocessable before it reached the pipeline (an API payload that
        does not parse, a message a source could not fetch whole). Like every failure it is audited and
        fires the `message_failed` hook; an item already committed is reported as `duplicate` instead.
        """
        return fail(self._config, bytes(raw), provenance, ledger_key(provenance), error, message_id)

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
            quarantine_admin(self._config, probe)

        def leave_quarantine(uow: UnitOfWork) -> None:
            quarantine_admin(self._config, uow).remove_quarantined(quarantine_id)

        ctx = context or self._config.context
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
            removed = quarantine_admin(self._config, uow).remove_quarantined(quarantine_id)
            if removed is None:
                return False
            reason = ("quarantine.discarded", note, f"{removed.reason_code} after {removed.attempts} attempt(s)")
            record = AuditRecord(self._config.now(), "discarded", None, removed.provenance, None, (reason,))
            uow.record_audit(describe_message(record, None))
        return True

    def is_processed(self, provenance: Provenance) -> bool:
        """Whether this mailbox item was already committed (a source may then just acknowledge it).

        Uses the backend's own `is_processed` when it has one (`LedgerReader`: SQLite reads the ledger without
        taking the write lock, so concurrent pollers do not serialize on this check); otherwise a short unit of
        work.
        """
        key = ledger_key(provenance)
        if isinstance(self._backend, LedgerReader):
            return bool(self._backend.is_processed(key))
        with self._backend.unit_of_work() as uow:
            return uow.processed(key) is not None

    # -- outbound mail -------------------------------------------------------------------------------

    def verify_token(self, message_id: str) -> str | None:
        """The ticket number a signed Message-ID of ours was made for, or `None`."""
        return self._config.verify_token(message_id)

    def outbound_message_id(self, ticket: str, entry: int, *, domain: str) -> str:
        """A signed Message-ID (with angle brackets) for a mail the application sends about `entry`.

        The id is recorded on the ticket's thread (`outbound`) in its own unit of work, so replies thread
        by `References` even without the keys. Raises `ConfigError` when the
        pipeline has no `token_keys`.
        """
        keys = self._config.token_keys
        if not keys:
            raise ConfigError("outbound Message-IDs need token_keys on the pipeline", field="token_keys")
        message_id = tokens.make_message_id(ticket, entry, keys=keys, domain=domain)
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


def _present(outcome: Outcome | None) -> Outcome:
    if outcome is None:  # pragma: no cover - every index is filled above
        raise ProcessingError("a message of the batch has no outcome")
    return outcome
