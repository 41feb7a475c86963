"""Failed messages: rolled back, then kept in the quarantine by a unit of work of their own.

A `BackendError` always propagates (storage is down: the caller must not acknowledge and retries later). Any
other exception while applying one message rolls that unit back; a separate unit then quarantines the raw bytes
with the reason and writes an audit record, and the outcome is `failed`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from ticketmail._pipeline.capabilities import QuarantineAdmin
from ticketmail._pipeline.config import Config
from ticketmail._pipeline.ledger import Result, audit_reasons, fire, redelivery
from ticketmail._pipeline.outcome import Outcome, unexpected_error
from ticketmail.audit import describe_message
from ticketmail.backends.base import AuditRecord, QuarantineRecord, UnitOfWork
from ticketmail.decision import Reason
from ticketmail.errors import BackendError, ConfigError, TicketmailError
from ticketmail.model import Provenance, TicketRequest

__all__ = ["applied", "fail", "fail_request", "quarantine_admin"]


@contextlib.contextmanager
def _recording() -> Iterator[None]:
    """Recording a failure must not fail quietly: anything but a BackendError becomes one (do not ack)."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"could not record a failed message ({type(exc).__name__}); retry later") from exc


def _failed(error: TicketmailError, provenance: Provenance | None, message_id: str | None) -> Outcome:
    reasons = (Reason(f"failed.{error.code}", error.message),)
    return Outcome("failed", message_id=message_id, reasons=reasons, provenance=provenance, error=error)


def fail(
    config: Config, raw: bytes, provenance: Provenance, key: str, error: TicketmailError, message_id: str | None
) -> Outcome:
    """Quarantine `raw` in its own unit of work and report `failed` (a committed item is a `duplicate`)."""
    now = config.now()
    outcome = _failed(error, provenance, message_id)
    with _recording(), config.backend.unit_of_work() as uow:
        previous = uow.processed(key)
        if previous is not None:  # committed by an earlier attempt: acknowledge, do not quarantine
            return redelivery(previous, provenance)
        # The backend keeps one row per provenance and content and counts attempts.
        uow.quarantine(QuarantineRecord(now, raw, error.code, error.message, provenance))
        record = AuditRecord(now, "failed", message_id, provenance, None, audit_reasons(outcome.reasons))
        uow.record_audit(describe_message(record, None))
    fire(config, Result(outcome))
    return outcome


def fail_request(
    config: Config, request: TicketRequest, provenance: Provenance | None, key: str | None, error: TicketmailError
) -> Outcome:
    """An API request has no raw bytes worth keeping; record the failure in the audit log only."""
    now = config.now()
    outcome = _failed(error, provenance, None)
    with _recording(), config.backend.unit_of_work() as uow:
        if key is not None:
            previous = uow.processed(key)
            if previous is not None:
                return redelivery(previous, provenance)
        record = AuditRecord(now, "failed", None, provenance, None, audit_reasons(outcome.reasons))
        uow.record_audit(describe_message(record, request))
    fire(config, Result(outcome))
    return outcome


def applied(
    config: Config,
    effect: Callable[[], Result],
    on_error: Callable[[TicketmailError], Outcome],
    log_text: str,
    *log_args: object,
) -> Outcome:
    """Run `effect` (a whole unit of work); a failure goes to `on_error`, a success fires its hooks.

    A `BackendError` propagates; an exception that is not a ticketmail error is logged with `log_text` and
    reported as a `ProcessingError` (its text is never shown: it may quote the input).
    """
    try:
        result = effect()
    except BackendError:
        raise
    except TicketmailError as exc:
        return on_error(exc)
    except Exception as exc:
        config.log.exception(log_text, *log_args)
        return on_error(unexpected_error(exc, "processing"))
    fire(config, result)
    return result.outcome


def quarantine_admin(config: Config, uow: UnitOfWork) -> QuarantineAdmin:
    """`uow` as a `QuarantineAdmin`; `ConfigError` when the backend's units of work cannot remove messages."""
    if not isinstance(uow, QuarantineAdmin):
        raise ConfigError(
            f"{type(config.backend).__name__} cannot remove quarantined messages (QuarantineAdmin)",
            field="backend",
        )
    return uow
