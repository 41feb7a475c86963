"""Whether the poller should come back to a mailbox after an error, or stop and wait for a person."""

from __future__ import annotations

from ticketmail.errors import OAuthError, TicketmailError

__all__ = ["is_retryable"]


def is_retryable(error: TicketmailError) -> bool:
    """`error.retryable`, refined for `OAuthError` by its `reason` (see `ticketmail.oauth._reasons`)."""
    if isinstance(error, OAuthError):
        from ticketmail.oauth._reasons import reason_retryable

        return error.retryable and reason_retryable(error.reason)
    return error.retryable
