"""ticketmail: turn inbound email and HTTP API payloads into helpdesk tickets.

Everything a user needs is importable from here, and each name has this one documented place. The names
load on first use (PEP 562), so `import ticketmail` stays cheap: a `ticketmail pipe` run or a web process
that only parses pays for the parts it touches, and the mailbox adapters that need imap-tools (which patches
`imaplib` when imported) load only when used.

Layers, each usable on its own:

* parsing: `parse_json`, `parse_xml`, `parse_email`, `parse` (bytes -> model);
* rules: `load_rules`, `evaluate`, `classify_automatic` (model -> `Decision`);
* threading and the `Pipeline` (parse -> decide -> thread -> store, exactly once);
* storage: the `Backend` protocol, `InMemoryBackend`, `SQLiteBackend`;
* the HTTP API: `ApiHandler` with WSGI/ASGI adapters and API keys;
* sources: `MailboxConfig`, `load_config`, `check`, IMAP/POP3/Maildir/mbox adapters and the `Poller`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ticketmail.api.asgi import (
        make_asgi_app,
    )
    from ticketmail.api.handler import (
        ApiHandler,
        Request,
        Response,
    )
    from ticketmail.api.keys import (
        ApiKey,
        ApiKeyError,
        ApiKeyStore,
        InMemoryKeyStore,
        SQLiteKeyStore,
        issue_key,
    )
    from ticketmail.api.server import (
        serve,
    )
    from ticketmail.api.wsgi import (
        make_wsgi_app,
    )
    from ticketmail.attachments import (
        AttachmentPolicy,
    )
    from ticketmail.backends import (
        AttachmentRef,
        AuditRecord,
        Backend,
        BaseBackend,
        Entry,
        InMemoryBackend,
        NewEntry,
        NewTicket,
        ProcessedRecord,
        QuarantineRecord,
        SQLiteBackend,
        Ticket,
        UnitOfWork,
    )
    from ticketmail.decision import (
        Automatic,
        BounceRecipient,
        Decision,
        Reason,
    )
    from ticketmail.errors import (
        AttachmentTooLargeError,
        AttachmentTypeError,
        AuthError,
        BackendError,
        ConfigError,
        ForbiddenError,
        ForbiddenXMLError,
        InputError,
        InvalidDataURLError,
        InvalidEmailError,
        InvalidValueError,
        LimitExceededError,
        MalformedEmailError,
        MalformedJSONError,
        MalformedXMLError,
        MissingFieldError,
        NestingTooDeepError,
        NotFoundError,
        OAuthError,
        PayloadTooLargeError,
        PolicyRejectedError,
        SourceError,
        TicketmailError,
        TooManyAttachmentsError,
        TypeMismatchError,
        UnsupportedContentTypeError,
        UnsupportedFieldError,
        error_classes,
    )
    from ticketmail.errors import (
        InvalidBase64Error as InvalidBase64Error,
    )
    from ticketmail.hooks import (
        HookEvent,
        Hooks,
    )
    from ticketmail.model import (
        Address,
        Attachment,
        Choice,
        CustomValue,
        Defect,
        InboundEmail,
        MailboxContext,
        MessageBody,
        MessageView,
        Phone,
        Provenance,
        ReportPart,
        TicketRequest,
        message_view,
    )
    from ticketmail.numbers import (
        RandomTicketNumbers,
        TicketNumberGenerator,
    )
    from ticketmail.parsing import (
        DataURL,
        Form,
        FormField,
        Limits,
        parse,
        parse_data_url,
        parse_json,
        parse_xml,
        to_json,
        to_xml,
    )
    from ticketmail.parsing.mime import (
        EmailOptions,
        parse_email,
    )
    from ticketmail.pipeline import (
        Outcome,
        Pipeline,
        ProcessingError,
    )
    from ticketmail.rules import (
        Lookups,
        RuleSet,
        classify_automatic,
        duplicate_keys,
        evaluate,
        fingerprint,
        load_rules,
        load_rules_file,
        never_autorespond,
        outgoing_headers,
    )
    from ticketmail.sources.base import (
        RawItem,
        Source,
        SourceSession,
    )
    from ticketmail.sources.check import (
        CheckResult,
        check,
    )
    from ticketmail.sources.config import (
        MailboxConfig,
        Secret,
        SourcesConfig,
        load_config,
        mailbox_from_dict,
    )
    from ticketmail.sources.health import (
        HealthStore,
        MailboxHealth,
        read_health,
    )
    from ticketmail.sources.imap import (
        ImapSource,
    )
    from ticketmail.sources.maildir import (
        MaildirSource,
    )
    from ticketmail.sources.mbox import (
        MboxSource,
    )
    from ticketmail.sources.poller import (
        Poller,
        PollReport,
    )
    from ticketmail.sources.pop3 import (
        Pop3Source as Pop3Source,
    )
    from ticketmail.threading import (
        ThreadingOptions,
        load_threading,
        subject_tag,
    )
    from ticketmail.tokens import (
        SigningKey,
        make_message_id,
        verify_message_id,
    )

# Where each public name is defined; `__getattr__` imports it from there on first use.
_EXPORTS: dict[str, str] = {
    "Address": "ticketmail.model",
    "ApiHandler": "ticketmail.api.handler",
    "ApiKey": "ticketmail.api.keys",
    "ApiKeyError": "ticketmail.api.keys",
    "ApiKeyStore": "ticketmail.api.keys",
    "Attachment": "ticketmail.model",
    "AttachmentPolicy": "ticketmail.attachments",
    "AttachmentRef": "ticketmail.backends",
    "AttachmentTooLargeError": "ticketmail.errors",
    "AttachmentTypeError": "ticketmail.errors",
    "AuditRecord": "ticketmail.backends",
    "AuthError": "ticketmail.errors",
    "Automatic": "ticketmail.decision",
    "Backend": "ticketmail.backends",
    "BackendError": "ticketmail.errors",
    "BaseBackend": "ticketmail.backends",
    "BounceRecipient": "ticketmail.decision",
    "CheckResult": "ticketmail.sources.check",
    "Choice": "ticketmail.model",
    "ConfigError": "ticketmail.errors",
    "CustomValue": "ticketmail.model",
    "DataURL": "ticketmail.parsing",
    "Decision": "ticketmail.decision",
    "Defect": "ticketmail.model",
    "EmailOptions": "ticketmail.parsing.mime",
    "Entry": "ticketmail.backends",
    "ForbiddenError": "ticketmail.errors",
    "ForbiddenXMLError": "ticketmail.errors",
    "Form": "ticketmail.parsing",
    "FormField": "ticketmail.parsing",
    "HealthStore": "ticketmail.sources.health",
    "HookEvent": "ticketmail.hooks",
    "Hooks": "ticketmail.hooks",
    "ImapSource": "ticketmail.sources.imap",
    "InMemoryBackend": "ticketmail.backends",
    "InMemoryKeyStore": "ticketmail.api.keys",
    "InboundEmail": "ticketmail.model",
    "InputError": "ticketmail.errors",
    "InvalidBase64Error": "ticketmail.errors",
    "InvalidDataURLError": "ticketmail.errors",
    "InvalidEmailError": "ticketmail.errors",
    "InvalidValueError": "ticketmail.errors",
    "LimitExceededError": "ticketmail.errors",
    "Limits": "ticketmail.parsing",
    "Lookups": "ticketmail.rules",
    "MailboxConfig": "ticketmail.sources.config",
    "MailboxContext": "ticketmail.model",
    "MailboxHealth": "ticketmail.sources.health",
    "MaildirSource": "ticketmail.sources.maildir",
    "MalformedEmailError": "ticketmail.errors",
    "MalformedJSONError": "ticketmail.errors",
    "MalformedXMLError": "ticketmail.errors",
    "MboxSource": "ticketmail.sources.mbox",
    "MessageBody": "ticketmail.model",
    "MessageView": "ticketmail.model",
    "MissingFieldError": "ticketmail.errors",
    "NestingTooDeepError": "ticketmail.errors",
    "NewEntry": "ticketmail.backends",
    "NewTicket": "ticketmail.backends",
    "NotFoundError": "ticketmail.errors",
    "OAuthError": "ticketmail.errors",
    "Outcome": "ticketmail.pipeline",
    "PayloadTooLargeError": "ticketmail.errors",
    "Phone": "ticketmail.model",
    "Pipeline": "ticketmail.pipeline",
    "PolicyRejectedError": "ticketmail.errors",
    "PollReport": "ticketmail.sources.poller",
    "Poller": "ticketmail.sources.poller",
    "Pop3Source": "ticketmail.sources.pop3",
    "ProcessedRecord": "ticketmail.backends",
    "ProcessingError": "ticketmail.pipeline",
    "Provenance": "ticketmail.model",
    "QuarantineRecord": "ticketmail.backends",
    "RandomTicketNumbers": "ticketmail.numbers",
    "RawItem": "ticketmail.sources.base",
    "Reason": "ticketmail.decision",
    "ReportPart": "ticketmail.model",
    "Request": "ticketmail.api.handler",
    "Response": "ticketmail.api.handler",
    "RuleSet": "ticketmail.rules",
    "SQLiteBackend": "ticketmail.backends",
    "SQLiteKeyStore": "ticketmail.api.keys",
    "Secret": "ticketmail.sources.config",
    "SigningKey": "ticketmail.tokens",
    "Source": "ticketmail.sources.base",
    "SourceError": "ticketmail.errors",
    "SourceSession": "ticketmail.sources.base",
    "SourcesConfig": "ticketmail.sources.config",
    "ThreadingOptions": "ticketmail.threading",
    "Ticket": "ticketmail.backends",
    "TicketNumberGenerator": "ticketmail.numbers",
    "TicketRequest": "ticketmail.model",
    "TicketmailError": "ticketmail.errors",
    "TooManyAttachmentsError": "ticketmail.errors",
    "TypeMismatchError": "ticketmail.errors",
    "UnitOfWork": "ticketmail.backends",
    "UnsupportedContentTypeError": "ticketmail.errors",
    "UnsupportedFieldError": "ticketmail.errors",
    "check": "ticketmail.sources.check",
    "classify_automatic": "ticketmail.rules",
    "duplicate_keys": "ticketmail.rules",
    "error_classes": "ticketmail.errors",
    "evaluate": "ticketmail.rules",
    "fingerprint": "ticketmail.rules",
    "issue_key": "ticketmail.api.keys",
    "load_config": "ticketmail.sources.config",
    "load_rules": "ticketmail.rules",
    "load_rules_file": "ticketmail.rules",
    "load_threading": "ticketmail.threading",
    "mailbox_from_dict": "ticketmail.sources.config",
    "make_asgi_app": "ticketmail.api.asgi",
    "make_message_id": "ticketmail.tokens",
    "make_wsgi_app": "ticketmail.api.wsgi",
    "message_view": "ticketmail.model",
    "never_autorespond": "ticketmail.rules",
    "outgoing_headers": "ticketmail.rules",
    "parse": "ticketmail.parsing",
    "parse_data_url": "ticketmail.parsing",
    "parse_email": "ticketmail.parsing.mime",
    "parse_json": "ticketmail.parsing",
    "parse_xml": "ticketmail.parsing",
    "read_health": "ticketmail.sources.health",
    "serve": "ticketmail.api.server",
    "subject_tag": "ticketmail.threading",
    "to_json": "ticketmail.parsing",
    "to_xml": "ticketmail.parsing",
    "verify_message_id": "ticketmail.tokens",
}

__all__ = [
    "Address",
    "ApiHandler",
    "ApiKey",
    "ApiKeyError",
    "ApiKeyStore",
    "Attachment",
    "AttachmentPolicy",
    "AttachmentRef",
    "AttachmentTooLargeError",
    "AttachmentTypeError",
    "AuditRecord",
    "AuthError",
    "Automatic",
    "Backend",
    "BackendError",
    "BaseBackend",
    "BounceRecipient",
    "CheckResult",
    "Choice",
    "ConfigError",
    "CustomValue",
    "DataURL",
    "Decision",
    "Defect",
    "EmailOptions",
    "Entry",
    "ForbiddenError",
    "ForbiddenXMLError",
    "Form",
    "FormField",
    "HealthStore",
    "HookEvent",
    "Hooks",
    "ImapSource",
    "InMemoryBackend",
    "InMemoryKeyStore",
    "InboundEmail",
    "InputError",
    "InvalidBase64Error",
    "InvalidDataURLError",
    "InvalidEmailError",
    "InvalidValueError",
    "LimitExceededError",
    "Limits",
    "Lookups",
    "MailboxConfig",
    "MailboxContext",
    "MailboxHealth",
    "MaildirSource",
    "MalformedEmailError",
    "MalformedJSONError",
    "MalformedXMLError",
    "MboxSource",
    "MessageBody",
    "MessageView",
    "MissingFieldError",
    "NestingTooDeepError",
    "NewEntry",
    "NewTicket",
    "NotFoundError",
    "OAuthError",
    "Outcome",
    "PayloadTooLargeError",
    "Phone",
    "Pipeline",
    "PolicyRejectedError",
    "PollReport",
    "Poller",
    "Pop3Source",
    "ProcessedRecord",
    "ProcessingError",
    "Provenance",
    "QuarantineRecord",
    "RandomTicketNumbers",
    "RawItem",
    "Reason",
    "ReportPart",
    "Request",
    "Response",
    "RuleSet",
    "SQLiteBackend",
    "SQLiteKeyStore",
    "Secret",
    "SigningKey",
    "Source",
    "SourceError",
    "SourceSession",
    "SourcesConfig",
    "ThreadingOptions",
    "Ticket",
    "TicketNumberGenerator",
    "TicketRequest",
    "TicketmailError",
    "TooManyAttachmentsError",
    "TypeMismatchError",
    "UnitOfWork",
    "UnsupportedContentTypeError",
    "UnsupportedFieldError",
    "check",
    "classify_automatic",
    "duplicate_keys",
    "error_classes",
    "evaluate",
    "fingerprint",
    "issue_key",
    "load_config",
    "load_rules",
    "load_rules_file",
    "load_threading",
    "mailbox_from_dict",
    "make_asgi_app",
    "make_message_id",
    "make_wsgi_app",
    "message_view",
    "never_autorespond",
    "outgoing_headers",
    "parse",
    "parse_data_url",
    "parse_email",
    "parse_json",
    "parse_xml",
    "read_health",
    "serve",
    "subject_tag",
    "to_json",
    "to_xml",
    "verify_message_id",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its defining module on first use, then keep it here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ticketmail' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
