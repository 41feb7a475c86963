"""Which OAuth2 failures a retry can fix, by `OAuthError.reason`.

A token endpoint that is down (`unreachable`), answers oddly (`server`) or a token file that cannot be
written right now (`store`) may work on the next try. A revoked or expired refresh token
(`invalid_grant`), a wrong client id or secret (`invalid_client`), missing consent (`consent`), no
stored token (`no_token`) or a missing extra (`missing_extra`) need a person: retrying only hammers the
endpoint and fills the log.
"""

from __future__ import annotations

from collections.abc import Mapping

from ticketmail.errors import PERMANENT_OAUTH_REASONS

__all__ = ["RETRYABLE_REASONS", "reason_retryable"]

RETRYABLE_REASONS: Mapping[str, bool] = {
    **dict.fromkeys(("unreachable", "server", "store"), True),
    **dict.fromkeys(sorted(PERMANENT_OAUTH_REASONS), False),
}
"""`reason -> retryable` for every reason the library raises; an unknown reason counts as retryable."""


def reason_retryable(reason: str) -> bool:
    """Whether an `OAuthError` with this `reason` may succeed when simply tried again later."""
    return RETRYABLE_REASONS.get(reason, True)
