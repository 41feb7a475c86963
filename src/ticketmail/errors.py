"""The ticketmail exception hierarchy.

Every error the library raises on purpose is a `TicketmailError`. Each one carries

* `code`: a stable, machine-readable string (documented in `docs/errors.md`; never renamed),
* `status`: the HTTP status an API should answer with,
* `field`: the offending input field, when there is one,
* `message`: a human sentence naming the problem (never a secret, never raw input longer than needed),
* `retryable`: whether the same operation may succeed if simply tried again later (storage or a mailbox
  that is down: yes; bad input, a bad config, a permanent storage fault: no). The HTTP API answers a
  retryable error with `Retry-After`, the poller backs off and comes back, and a CLI exits with a
  temporary-failure status; a permanent one needs a person.

The tree, with codes::

    TicketmailError                      ticketmail_error        500
    +-- InputError                       invalid_input           400   (the caller's bytes are wrong)
    |   +-- MissingFieldError            missing_field           400
    |   +-- TypeMismatchError            type_mismatch           400
    |   +-- InvalidValueError            invalid_value           400
    |   +-- InvalidEmailError            invalid_email           400
    |   +-- InvalidDataURLError          invalid_data_url        400
    |   |   +-- InvalidBase64Error       invalid_base64          400
    |   +-- UnsupportedFieldError        unsupported_field       400
    |   +-- MalformedJSONError           malformed_json          400
    |   +-- MalformedXMLError            malformed_xml           400
    |   +-- ForbiddenXMLError            forbidden_xml           400
    |   +-- MalformedEmailError          malformed_email         422
    |   +-- UnsupportedContentTypeError  unsupported_content_type 415
    |   +-- AttachmentTypeError          attachment_type_not_allowed 415
    |   +-- LimitExceededError           limit_exceeded          413
    |       +-- PayloadTooLargeError     payload_too_large       413
    |       +-- AttachmentTooLargeError  attachment_too_large    413
    |       +-- TooManyAttachmentsError  too_many_attachments    413
    |       +-- NestingTooDeepError      nesting_too_deep        400
    +-- ConfigError                      invalid_config          500   (the operator's config is wrong)
    +-- AuthError                        unauthorized            401
    |   +-- ForbiddenError               forbidden               403
    +-- NotFoundError                    not_found               404
    +-- PolicyRejectedError              rejected                422   (refused on purpose by a rule)
    +-- BackendError                     backend_error           503   (storage failed; retryable unless a
    |                                                                   subclass says otherwise)
    +-- SourceError                      source_error            502   (a mailbox failed; has a stage; retryable)
        +-- OAuthError                   oauth_error             502   (getting an OAuth2 token failed)

Modules may define further subclasses; each must set a unique `code` (a test pins that).
Lower-level exceptions (sqlite3, imaplib, ssl, socket, json, xml) are translated at the module
boundary with `raise ... from exc`; they never escape a public function.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AttachmentTooLargeError",
    "AttachmentTypeError",
    "AuthError",
    "BackendError",
    "ConfigError",
    "ForbiddenError",
    "ForbiddenXMLError",
    "InputError",
    "InvalidBase64Error",
    "InvalidDataURLError",
    "InvalidEmailError",
    "InvalidValueError",
    "LimitExceededError",
    "MalformedEmailError",
    "MalformedJSONError",
    "MalformedXMLError",
    "MissingFieldError",
    "NestingTooDeepError",
    "NotFoundError",
    "OAuthError",
    "PERMANENT_OAUTH_REASONS",
    "PayloadTooLargeError",
    "PolicyRejectedError",
    "SourceError",
    "TicketmailError",
    "TooManyAttachmentsError",
    "TypeMismatchError",
    "UnsupportedContentTypeError",
    "UnsupportedFieldError",
    "error_classes",
]


class TicketmailError(Exception):
    """Base of every error ticketmail raises on purpose.

    Args:
        message: A clear sentence for a human. Must not contain secrets.
        field: The input field at fault (`"email"`, `"attachments[2].data"`), if any.
        status: Override of the class's HTTP status (rarely needed).
    """

    code: ClassVar[str] = "ticketmail_error"
    status: int = 500
    retryable: bool = False

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON-ready mapping: `code`, `status`, `message`, `field`."""
        return {"code": self.code, "status": self.status, "message": self.message, "field": self.field}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, field={self.field!r}, message={self.message!r})"

    def __str__(self) -> str:
        return f"{self.message} (field: {self.field})" if self.field else self.message


class InputError(TicketmailError):
    """The input bytes or values are unacceptable (the client's fault)."""

    code = "invalid_input"
    status = 400


class MissingFieldError(InputError):
    """A required field is absent or empty."""

    code = "missing_field"


class TypeMismatchError(InputError):
    """A field has the wrong data type (e.g. a list where a string is expected)."""

    code = "type_mismatch"


class InvalidValueError(InputError):
    """A field has the right type but an unacceptable value (bad IP, unknown choice, bad date)."""

    code = "invalid_value"


class InvalidEmailError(InputError):
    """An email address failed validation."""

    code = "invalid_email"


class InvalidDataURLError(InputError):
    """A value is not a valid RFC 2397 `data:` URL."""

    code = "invalid_data_url"


class InvalidBase64Error(InvalidDataURLError):
    """Base64 content (in a data URL or an attachment) does not decode."""

    code = "invalid_base64"


class UnsupportedFieldError(InputError):
    """A field is not part of the contract or of the configured form."""

    code = "unsupported_field"


class MalformedJSONError(InputError):
    """The body is not well-formed JSON (or not a JSON object)."""

    code = "malformed_json"


class MalformedXMLError(InputError):
    """The body is not well-formed XML or lacks the expected `<ticket>` root."""

    code = "malformed_xml"


class ForbiddenXMLError(InputError):
    """The XML uses a forbidden construct: a DTD, an entity declaration or an external reference."""

    code = "forbidden_xml"


class MalformedEmailError(InputError):
    """Nothing usable could be recovered from a raw email message."""

    code = "malformed_email"
    status = 422


class UnsupportedContentTypeError(InputError):
    """The body's content type (or the requested format) is not one ticketmail parses."""

    code = "unsupported_content_type"
    status = 415


class AttachmentTypeError(InputError):
    """An attachment's media type is not in the allowed list."""

    code = "attachment_type_not_allowed"
    status = 415


class LimitExceededError(InputError):
    """A configured size or count limit was exceeded."""

    code = "limit_exceeded"
    status = 413


class PayloadTooLargeError(LimitExceededError):
    """The whole payload is larger than allowed."""

    code = "payload_too_large"


class AttachmentTooLargeError(LimitExceededError):
    """One attachment, or all attachments together, decode to more bytes than allowed."""

    code = "attachment_too_large"


class TooManyAttachmentsError(LimitExceededError):
    """More attachments than allowed."""

    code = "too_many_attachments"


class NestingTooDeepError(LimitExceededError):
    """Structures (JSON, XML, MIME) are nested deeper than allowed."""

    code = "nesting_too_deep"
    status = 400


class ConfigError(TicketmailError):
    """The operator's configuration (rules, mailboxes, forms) is invalid. Raised at load time."""

    code = "invalid_config"
    status = 500


class AuthError(TicketmailError):
    """Authentication failed (unknown API key, wrong remote address, bad mailbox credentials)."""

    code = "unauthorized"
    status = 401


class ForbiddenError(AuthError):
    """Authenticated, but not allowed to do this."""

    code = "forbidden"
    status = 403


class NotFoundError(TicketmailError):
    """The thing asked for (a ticket, a route) does not exist."""

    code = "not_found"
    status = 404


class PolicyRejectedError(TicketmailError):
    """A rule or policy refused the message on purpose."""

    code = "rejected"
    status = 422


class BackendError(TicketmailError):
    """The storage backend failed.

    Most backend failures are transient (the database is down, locked or unreachable: `retryable` is true,
    nothing was committed, retry later). Subclasses for faults that a retry cannot fix (a schema written by
    a newer version, a ledger conflict that would break exactly-once) set `retryable = False`.
    """

    code = "backend_error"
    status = 503
    retryable = True


class SourceError(TicketmailError):
    """A mailbox source failed. `stage` names where (dns, connect, tls, auth, folder, fetch, ack)."""

    code = "source_error"
    status = 502
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        stage: str = "fetch",
        mailbox: str | None = None,
        field: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, field=field, status=status)
        self.stage = stage
        self.mailbox = mailbox

    def to_dict(self) -> dict[str, Any]:
        """Like `TicketmailError.to_dict()`, plus `stage` and `mailbox`."""
        data = super().to_dict()
        data["stage"] = self.stage
        data["mailbox"] = self.mailbox
        return data


class OAuthError(SourceError):
    """Getting an OAuth2 access token failed; `reason` says why, the message what to do.

    Reasons: `unreachable` (token endpoint down or unresolvable), `invalid_client` (wrong or expired
    client secret, unknown client id), `invalid_grant` (refresh token revoked or expired: log in again),
    `consent` (permission or admin consent missing), `no_token` (nothing stored yet: log in),
    `store` (the token file cannot be read or written), `server` (another answer of the endpoint).
    The stage is always `oauth`. `retryable` depends on the reason: `unreachable`, `server`, `store` (and
    a reason this list does not know) may pass on a later try; the others (`PERMANENT_OAUTH_REASONS`)
    need a person, so a worker stops polling that mailbox instead of hammering the endpoint.
    """

    code = "oauth_error"
    status = 502

    def __init__(self, message: str, *, reason: str = "server", mailbox: str | None = None) -> None:
        super().__init__(message, stage="oauth", mailbox=mailbox)
        self.reason = reason
        self.retryable = reason not in PERMANENT_OAUTH_REASONS

    def to_dict(self) -> dict[str, Any]:
        """Like `SourceError.to_dict`, plus `reason`."""
        data = super().to_dict()
        data["reason"] = self.reason
        return data


PERMANENT_OAUTH_REASONS: frozenset[str] = frozenset(
    {"invalid_grant", "invalid_client", "consent", "no_token", "missing_extra"}
)
"""The `OAuthError` reasons a retry cannot fix: a revoked or expired grant, a wrong client, missing consent,
no stored token, a missing extra."""


def error_classes() -> list[type[TicketmailError]]:
    """Every loaded `TicketmailError` subclass (including the root), depth first."""
    seen: list[type[TicketmailError]] = []

    def walk(cls: type[TicketmailError]) -> None:
        seen.append(cls)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(TicketmailError)
    return seen
