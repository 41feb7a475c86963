"""ticketmail: turn inbound email and HTTP API payloads into helpdesk tickets.

The public API is re-exported here; ``__all__`` is sorted and pinned by a test. The mailbox adapters that
need imap-tools (which patches :mod:`imaplib` when imported) are loaded lazily, on first use of
``ticketmail.ImapSource``, so ``import ticketmail`` never touches imaplib.

Layers, each usable on its own:

* parsing: :func:`parse_json`, :func:`parse_xml`, :func:`parse_email`, :func:`parse` (bytes -> model);
* rules: :func:`load_rules`, :func:`evaluate`, :func:`classify_automatic` (model -> :class:`Decision`);
* threading and the :class:`Pipeline` (parse -> decide -> thread -> store, exactly once);
* storage: the :class:`Backend` protocol, :class:`InMemoryBackend`, :class:`SQLiteBackend`;
* the HTTP API: :class:`ApiHandler` with WSGI/ASGI adapters and API keys;
* sources: :class:`MailboxConfig`, :func:`load_config`, :func:`check`, IMAP/POP3/Maildir/mbox adapters.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ticketmail.api.asgi import make_asgi_app
from ticketmail.api.handler import ApiHandler, Request, Response
from ticketmail.api.keys import ApiKey, ApiKeyError, ApiKeyStore, InMemoryKeyStore, SQLiteKeyStore, issue_key
from ticketmail.api.server import serve
from ticketmail.api.wsgi import make_wsgi_app
from ticketmail.attachments import AttachmentPolicy
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
from ticketmail.decision import Automatic, BounceRecipient, Decision, Reason
from ticketmail.errors import *  # noqa: F403
from ticketmail.errors import __all__ as _errors_all
from ticketmail.hooks import HookEvent, Hooks
from ticketmail.model import *  # noqa: F403
from ticketmail.model import __all__ as _model_all
from ticketmail.numbers import RandomTicketNumbers, TicketNumberGenerator
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
from ticketmail.parsing.mime import EmailOptions, parse_email
from ticketmail.pipeline import Outcome, Pipeline, ProcessingError
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
from ticketmail.sources.base import RawItem, Source, SourceSession
from ticketmail.sources.check import CheckResult, check
from ticketmail.sources.config import MailboxConfig, Secret, SourcesConfig, load_config, mailbox_from_dict
from ticketmail.sources.health import HealthStore, MailboxHealth, read_health
from ticketmail.sources.maildir import MaildirSource
from ticketmail.sources.mbox import MboxSource
from ticketmail.sources.poller import Poller, PollReport
from ticketmail.threading import ThreadingOptions, load_threading, subject_tag
from ticketmail.tokens import SigningKey, make_message_id, verify_message_id

if TYPE_CHECKING:
    from ticketmail.sources.imap import ImapSource
    from ticketmail.sources.pop3 import Pop3Source

__version__ = "0.1.0"

_LAZY = {
    "ImapSource": "ticketmail.sources.imap",
    "Pop3Source": "ticketmail.sources.pop3",
}


def __getattr__(name: str) -> Any:
    """Load the adapters that import imap-tools/poplib only when first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ticketmail' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = sorted(
    [
        *_errors_all,
        *_model_all,
        "AttachmentPolicy",
        "subject_tag",
        "load_threading",
        "ProcessingError",
        "Hooks",
        "HookEvent",
        "make_asgi_app",
        "make_wsgi_app",
        "serve",
        "issue_key",
        "SQLiteKeyStore",
        "InMemoryKeyStore",
        "ApiKeyStore",
        "ApiKeyError",
        "ApiKey",
        "Response",
        "Request",
        "ApiHandler",
        "AttachmentRef",
        "AuditRecord",
        "Automatic",
        "Backend",
        "BaseBackend",
        "BounceRecipient",
        "CheckResult",
        "DataURL",
        "Decision",
        "EmailOptions",
        "Entry",
        "Form",
        "FormField",
        "ImapSource",
        "HealthStore",
        "InMemoryBackend",
        "Limits",
        "Lookups",
        "MailboxConfig",
        "MailboxHealth",
        "MaildirSource",
        "MboxSource",
        "NewEntry",
        "NewTicket",
        "Outcome",
        "PollReport",
        "Poller",
        "Pipeline",
        "Pop3Source",
        "ProcessedRecord",
        "QuarantineRecord",
        "RandomTicketNumbers",
        "RawItem",
        "Reason",
        "RuleSet",
        "SQLiteBackend",
        "Secret",
        "SigningKey",
        "Source",
        "SourceSession",
        "SourcesConfig",
        "ThreadingOptions",
        "Ticket",
        "TicketNumberGenerator",
        "UnitOfWork",
        "check",
        "classify_automatic",
        "duplicate_keys",
        "evaluate",
        "fingerprint",
        "load_config",
        "load_rules",
        "load_rules_file",
        "mailbox_from_dict",
        "make_message_id",
        "never_autorespond",
        "outgoing_headers",
        "parse",
        "parse_data_url",
        "parse_email",
        "parse_json",
        "parse_xml",
        "read_health",
        "to_json",
        "to_xml",
        "verify_message_id",
    ]
)
