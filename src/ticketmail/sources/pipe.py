"""MTA delivery through a pipe: one message on stdin, an exit status the MTA understands.

Postfix (`local(8)`/`pipe(8)`) and Exim (`pipe` transport) run the command per message and decide from
its exit status what to do with the mail, using the BSD `sysexits.h` codes:

======  ==============  ==================================================  ==============================
status  name            when ticketmail returns it                          what the MTA does
======  ==============  ==================================================  ==============================
0       EX_OK           stored (new ticket or reply); deliberately          delivered, done
                        ignored or dropped (filter, spam, auto-reply,
                        duplicate/redelivery); refused by policy (a rule,
                        the unknown-sender policy, no usable sender) or
                        unparseable, both kept with their raw bytes in the
                        quarantine
65      EX_DATAERR      nothing that could be kept: empty input, no         bounces it to the sender
                        header lines at all, over `--max-size`
75      EX_TEMPFAIL     backend unavailable, or any unexpected failure      keeps it queued, retries later
======  ==============  ==================================================  ==============================

Why policy refusals exit 0, not 77 (`EX_NOPERM`): the MTA would bounce the mail to its envelope sender,
which nobody verified. Spam and phishing forge it, so a bounce is backscatter to an innocent third party.
A refused message is recorded in the audit log with its reasons and its raw bytes are kept in the quarantine
(same transaction), where an operator can review it. `EX_NOPERM` stays defined for callers that map
outcomes themselves; `exit_code_for()` never returns it.

Why 75 for anything unexpected: a bounce loses the message for the helpdesk, a deferral never does (the
MTA retries for days, typically 5). Redelivery after a crash that happened *after* the commit is harmless:
the provenance key of a piped message is the SHA-256 of its bytes, so the pipeline's ledger answers
`duplicate` and we exit 0.

`deliver()` never raises; the CLI prints `PipeResult.message` as one line on standard error.
"""

from __future__ import annotations

import hashlib
import logging
from typing import IO, TYPE_CHECKING, Final

import attrs

from ticketmail.errors import BackendError, InputError, PayloadTooLargeError, PolicyRejectedError, TicketmailError
from ticketmail.model import MailboxContext, Provenance
from ticketmail.pipeline import Outcome

if TYPE_CHECKING:  # the poller (and what it loads) is not needed to deliver one piped message
    from ticketmail.sources.poller import ProcessesEmail

__all__ = [
    "DEFAULT_MAX_SIZE",
    "EX_DATAERR",
    "EX_NOPERM",
    "EX_OK",
    "EX_TEMPFAIL",
    "PipeResult",
    "deliver",
    "exit_code_for",
    "read_message",
]

log = logging.getLogger(__name__)

EX_OK: Final = 0
EX_DATAERR: Final = 65
EX_TEMPFAIL: Final = 75
EX_NOPERM: Final = 77
DEFAULT_MAX_SIZE: Final = 50 * 1024 * 1024


@attrs.frozen
class PipeResult:
    """The result of one piped delivery: the exit `code`, a one-line `message` and the `outcome`."""

    code: int
    message: str
    outcome: Outcome | None = None


def exit_code_for(outcome: Outcome) -> int:
    """The sysexits status for a pipeline outcome (see the module table): never a bounce for what was kept."""
    if outcome.action in ("created", "appended", "ignored", "duplicate", "rejected"):
        return EX_OK  # rejected mail is in the quarantine with its raw bytes: never bounce (backscatter)
    if isinstance(outcome.error, (InputError, PolicyRejectedError)):
        # Quarantined with its raw bytes; a retry by the MTA would fail the same way.
        return EX_OK
    return EX_TEMPFAIL


def read_message(stream: IO[bytes], max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Read all of `stream`, refusing more than `max_size` bytes.

    Raises:
        PayloadTooLargeError: the message is larger than `max_size` (the rest is not read).
        OSError: reading failed (the caller answers EX_TEMPFAIL).
    """
    data = stream.read(max_size + 1)
    if len(data) > max_size:
        raise PayloadTooLargeError(f"message larger than the {max_size}-byte limit", field="stdin")
    return data


def deliver(
    raw: bytes,
    pipeline: ProcessesEmail,
    *,
    mailbox: str = "pipe",
    context: MailboxContext | None = None,
) -> PipeResult:
    """Process one piped message and map the result to a sysexits status; never raises."""
    if not raw.strip():
        return PipeResult(EX_DATAERR, "no message on standard input")
    if b"\n" not in raw and b":" not in raw:
        return PipeResult(EX_DATAERR, "standard input is not an email message (no header lines)")
    provenance = Provenance(mailbox=mailbox, kind="pipe", key=hashlib.sha256(raw).hexdigest())
    try:
        outcome = pipeline.process_email(raw, provenance=provenance, context=context)
    except BackendError as exc:
        return PipeResult(EX_TEMPFAIL, f"storage unavailable, the MTA should retry: {exc.message} [{exc.code}]")
    except TicketmailError as exc:
        return PipeResult(EX_TEMPFAIL, f"delivery failed, the MTA should retry: {exc.message} [{exc.code}]")
    except Exception as exc:
        log.exception("unexpected error delivering a piped message")
        return PipeResult(EX_TEMPFAIL, f"unexpected {type(exc).__name__}; the MTA should retry")
    code = exit_code_for(outcome)
    ticket = f" ticket {outcome.ticket}" if outcome.ticket else ""
    if code == EX_OK and outcome.action in ("rejected", "failed"):
        why = f": {outcome.error.message} [{outcome.error.code}]" if outcome.error else ""
        message = f"{outcome.action}, kept in the quarantine{why}"
    elif code == EX_OK:
        message = f"{outcome.action}{ticket}"
    else:
        why = f": {outcome.error.message} [{outcome.error.code}]" if outcome.error else ""
        message = f"{outcome.action}{why}"
    return PipeResult(code, message, outcome)
