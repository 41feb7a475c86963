"""The pipeline's settings, and the small services every stage uses (clock, rules, numbers, tokens)."""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable

import attrs

from ticketmail import tokens
from ticketmail._pipeline.outcome import DUPLICATE_SCOPES, DuplicateScope
from ticketmail.attachments import AttachmentPolicy, PolicyResult
from ticketmail.backends.base import Backend, UnitOfWork
from ticketmail.decision import Decision
from ticketmail.errors import ConfigError
from ticketmail.hooks import Hooks
from ticketmail.model import Attachment, InboundEmail, MailboxContext, TicketRequest
from ticketmail.numbers import TicketNumberGenerator, TicketNumbersExhaustedError
from ticketmail.parsing.mime import EmailOptions, parse_email
from ticketmail.rules import RuleSet, duplicate_keys, evaluate, load_rules
from ticketmail.threading import ThreadingOptions

__all__ = ["NUMBER_ATTEMPTS", "Config", "NumberGenerator", "resolve_scope", "system_clock"]

NumberGenerator = TicketNumberGenerator
"""Returns a fresh candidate ticket number; the pipeline checks it against the backend and retries."""

NUMBER_ATTEMPTS = 32
"""Draws from the number generator before a ticket cannot be numbered (`TicketNumbersExhaustedError`)."""


def system_clock() -> _dt.datetime:
    """The current time in UTC: the only wall-clock read in the pipeline, used when no clock is injected."""
    return _dt.datetime.now(_dt.timezone.utc)


def resolve_scope(value: str | None, rules: RuleSet | None) -> DuplicateScope:
    """The scope given, else the rules' `settings.duplicate_scope`, else `global`; `ConfigError` if unknown."""
    wanted = value if value is not None else rules.duplicate_scope if rules is not None else "global"
    for scope in DUPLICATE_SCOPES:
        if scope == wanted:
            return scope
    raise ConfigError(
        f"duplicate_scope must be global, mailbox or destination, got {wanted!r}", field="duplicate_scope"
    )


@attrs.define
class Config:
    """What `Pipeline` was built with; the stages read it and call its services.

    `rules` stays `None` until first needed (the built-in defaults are compiled on first use).
    """

    backend: Backend
    rules: RuleSet | None
    threading: ThreadingOptions
    clock: Callable[[], _dt.datetime]
    hooks: Hooks
    email_options: EmailOptions | None
    duplicate_scope: DuplicateScope
    numbers: NumberGenerator
    token_keys: tuple[tokens.SigningKey, ...]
    context: MailboxContext
    parser: Callable[[bytes], InboundEmail] | None
    log: logging.Logger
    attachments: AttachmentPolicy | None

    def now(self) -> _dt.datetime:
        """The injected clock's time."""
        return self.clock()

    def rule_set(self) -> RuleSet:
        """The rules, the built-in defaults when none were given."""
        if self.rules is None:
            self.rules = load_rules({}, source="<defaults>")
        return self.rules

    def own_addresses(self, ctx: MailboxContext) -> set[str]:
        """The desk's addresses, lower case: the mailbox context's and the rules' `own_addresses`."""
        return {a.lower() for a in ctx.addresses} | {a.lower() for a in self.rule_set().own_addresses}

    def parse(self, raw: bytes) -> InboundEmail:
        """The injected parser's result, else `parse_email()` with the pipeline's options."""
        if self.parser is not None:
            return self.parser(raw)
        return parse_email(raw, options=self.email_options)

    def duplicate_keys(self, message: InboundEmail | TicketRequest, ctx: MailboxContext) -> tuple[str, ...]:
        """The message's duplicate keys in the pipeline's scope, without repeats."""
        keys = duplicate_keys(message, scope=self.duplicate_scope, context=ctx)
        return tuple(dict.fromkeys(keys))

    def evaluate(
        self, message: InboundEmail | TicketRequest, ctx: MailboxContext, uow: UnitOfWork, now: _dt.datetime
    ) -> Decision:
        """The rules' decision; the unit of work serves their lookups (the rate limit)."""
        return evaluate(message, self.rule_set(), context=ctx, now=now, lookups=uow)

    def verify_token(self, message_id: str) -> str | None:
        """The ticket number a signed Message-ID of ours was made for, or `None`."""
        if not self.token_keys:
            return None
        info = tokens.verify_message_id(message_id, self.token_keys)
        return None if info is None else info.ticket

    def new_number(self, uow: UnitOfWork) -> str:
        """A ticket number the unit of work does not know yet."""
        for _ in range(NUMBER_ATTEMPTS):
            number = self.numbers()
            if not uow.number_exists(number):
                return number
        raise TicketNumbersExhaustedError(
            f"no free ticket number in {NUMBER_ATTEMPTS} draws from the number generator; widen its format",
            field="number_generator",
        )

    def apply_policy(self, attachments: tuple[Attachment, ...]) -> PolicyResult:
        """The attachment policy's verdict on `attachments` (everything kept without a policy)."""
        if self.attachments is None or not attachments:
            return PolicyResult(attachments)
        return self.attachments.apply(attachments)
