"""Evaluating a message against a rule set: one pure function, one explainable `Decision`.

Order (each step adds reasons; the first three can end evaluation):

1. Mailbox defaults (department, category, priority from `MailboxContext`) set the attributes.
2. Loop protection: mail from the desk's own addresses (context + `settings.own_addresses`, also with a
   `+tag` subaddress) or carrying our `X-Ticketmail-Loop` echo header is ignored.
3. Filters: a matching ignore filter ignores; when allow filters apply and none matches, ignored.
4. Automatic mail (`classify_automatic()`): never autoresponded; auto-replies, out-of-office notices,
   bounces and reports never open a ticket (`may_open_ticket=False`); the `settings.automatic`
   policy may ignore a kind instead.
5. Never-autorespond senders (MAILER-DAEMON, noreply, ...) and API requests with `autorespond=false`.
6. Per-sender rate limit: with `lookups`, a sender with `max_tickets` or more tickets since
   `now - window` may not open another one (nor get an autoresponse).
7. Routing rules, in order.

Same inputs, same Decision: nothing here reads a clock, a file or a global.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ticketmail.decision import Automatic, Decision, DecisionAction, Reason
from ticketmail.model import InboundEmail, MailboxContext, MessageView, TicketRequest, message_view
from ticketmail.rules._text import normalize_address, normalize_domain
from ticketmail.rules.automatic import classify_with_names
from ticketmail.rules.config import RuleSet
from ticketmail.rules.filters import BODY_CHARS
from ticketmail.rules.loops import LOOP_HEADER, never_autorespond
from ticketmail.rules.routing import Condition, RegexTimeout, Rule

__all__ = ["Lookups", "evaluate"]


@runtime_checkable
class Lookups(Protocol):
    """What evaluation may ask the store (the pipeline passes its backend unit of work)."""

    def count_tickets_by_requester(self, email: str, since: _dt.datetime) -> int:
        """How many tickets `email` opened at or after `since`."""
        ...


class _Facts:
    """Field values of one message for routing conditions, computed once on first use."""

    __slots__ = ("cache", "context", "message", "names", "view")

    def __init__(
        self,
        view: MessageView,
        message: InboundEmail | TicketRequest,
        context: MailboxContext,
        names: list[str] | None = None,
    ) -> None:
        self.view = view
        self.message = message
        self.context = context
        self.names = names  # the header names of view.headers in lower case, once computed
        self.cache: dict[str, tuple[str, ...]] = {}

    def values(self, field: str) -> tuple[str, ...]:
        """The values of a condition field (see `ticketmail.rules.routing.FIELDS`)."""
        cached = self.cache.get(field)
        if cached is not None:
            return cached
        getter = _GETTERS.get(field)
        result = getter(self) if getter is not None else self._header(field)
        self.cache[field] = result
        return result

    def _header(self, field: str) -> tuple[str, ...]:
        wanted = field[7:].strip().lower()
        view = self.view
        names = self.names
        if names is None:
            names = self.names = [name.lower() for name, _ in view.headers]
        if wanted not in names:
            return ()
        return tuple(value for name, (_, value) in zip(names, view.headers, strict=True) if name == wanted)


def _from(facts: _Facts) -> tuple[str, ...]:
    sender = facts.view.sender
    return (sender.email,) if sender else ()


def _from_domain(facts: _Facts) -> tuple[str, ...]:
    sender = facts.view.sender
    return (normalize_domain(sender.domain),) if sender and sender.domain else ()


def _from_name(facts: _Facts) -> tuple[str, ...]:
    sender = facts.view.sender
    return (sender.name,) if sender and sender.name else ()


def _addresses_of(facts: _Facts, which: str) -> tuple[str, ...]:
    message = facts.message
    if not isinstance(message, InboundEmail):
        return ()
    return tuple(a.email for a in (message.to if which == "to" else message.cc))


def _recipient(facts: _Facts) -> tuple[str, ...]:
    message = facts.message
    delivered = message.delivered_to if isinstance(message, InboundEmail) else ()
    recipients = facts.view.recipients
    if not delivered and len(recipients) == 1:
        return (recipients[0].email,)
    return tuple(dict.fromkeys((*delivered, *(a.email for a in recipients))))


_GETTERS: dict[str, Callable[[_Facts], tuple[str, ...]]] = {
    "mailbox": lambda facts: (facts.context.name,),
    "from": _from,
    "from_domain": _from_domain,
    "from_name": _from_name,
    "subject": lambda facts: (facts.view.subject,),
    "body": lambda facts: (facts.view.body[:BODY_CHARS],),
    "to": lambda facts: _addresses_of(facts, "to"),
    "cc": lambda facts: _addresses_of(facts, "cc"),
    "recipient": _recipient,
}


_LOOP_KEY = LOOP_HEADER.lower()


def _is_own(sender: str, rules: RuleSet, context: MailboxContext) -> bool:
    """Whether the normalized `sender` (or it without a `+tag`) is one of the desk's own addresses."""
    base = _without_subaddress(sender)
    own = rules.own_addresses
    if sender in own or base in own:
        return True
    for address in context.addresses:
        normal = normalize_address(address)
        if normal in (sender, base):
            return True
    return False


def _without_subaddress(address: str) -> str:
    """`support+t123@example.com` -> `support@example.com` (RFC 5233 subaddress removed)."""
    local, _, domain = address.rpartition("@")
    base = local.split("+", 1)[0]
    return f"{base}@{domain}" if base else address


def _deciding_value(rule: Rule, facts: _Facts, tested: dict[Condition, tuple[bool, str | None]]) -> str | None:
    """The value that made a matched rule match (for its reason): the first true condition's value.

    `tested` holds the regex results the plan already found for this message (a search is not repeated).
    """
    for condition in rule.conditions:
        try:
            known = tested.get(condition) if condition.pattern is not None else None
            ok, value = known if known is not None else condition.test(facts.values(condition.field))
        except RegexTimeout:
            continue
        if ok:
            return value
    return None


class _Builder:
    """Mutable scratch state of one evaluation; frozen into a Decision at the end."""

    def __init__(self) -> None:
        self.action: DecisionAction = "accept"
        self.attributes: dict[str, object] = {}
        self.autorespond = True
        self.may_open_ticket = True
        self.automatic: Automatic | None = None
        self.reasons: list[Reason] = []

    def reason(self, code: str, message: str, value: str | None = None, source: str | None = None) -> None:
        self.reasons.append(Reason(code=code, message=message, value=value, source=source))

    def stop(self, action: DecisionAction) -> Decision:
        self.action = action
        if action != "accept":
            self.autorespond = False
            self.may_open_ticket = False
        return self.build()

    def build(self) -> Decision:
        return Decision(
            action=self.action,
            attributes=dict(self.attributes),
            autorespond=self.autorespond,
            may_open_ticket=self.may_open_ticket,
            automatic=self.automatic,
            reasons=tuple(self.reasons),
        )


def evaluate(
    message: InboundEmail | TicketRequest,
    rules: RuleSet,
    *,
    context: MailboxContext,
    now: _dt.datetime,
    lookups: Lookups | None = None,
) -> Decision:
    """Decide what to do with `message` (see the module docstring for the order of steps).

    Args:
        message: A parsed email or an API ticket request.
        rules: A rule set from `ticketmail.rules.load_rules()`.
        context: The mailbox (or API endpoint) the message arrived at, with its defaults.
        now: The current time (from the caller's injected clock); used only for the rate limit window.
        lookups: Store queries for the rate limit; without them the rate limit is not checked.
    """
    out = _Builder()
    view = message_view(message)
    for key in ("department", "category", "priority"):
        value = getattr(context, key)
        if value is not None:
            out.attributes[key] = value
    if out.attributes:
        out.reason("mailbox.defaults", f"Defaults of mailbox {context.name!r} applied", source=context.name)

    names: list[str] = []  # header names in lower case, shared by every header lookup below
    if isinstance(message, InboundEmail):
        names = [name.lower() for name, _ in message.headers]
        out.automatic = classify_with_names(message, names, rules.ignore_signals)

    # 2. Loop protection.
    sender = normalize_address(view.sender.email) if view.sender else ""
    if sender and _is_own(sender, rules, context):
        out.reason("loop.own_address", "Sent from one of the desk's own addresses", sender)
        return out.stop("ignore")
    if isinstance(message, InboundEmail) and _LOOP_KEY in names:
        echo = [value for name, (_, value) in zip(names, message.headers, strict=True) if name == _LOOP_KEY]
        if echo:
            out.reason("loop.echo_header", f"Carries our own {LOOP_HEADER} header", echo[0][:200])
            return out.stop("ignore")

    # 3. Filters.
    ignored = _apply_filters(message, view, rules, context, out)
    if ignored:
        return out.stop("ignore")

    # 4. Automatic mail.
    automatic = out.automatic
    if automatic is not None:
        policy = rules.automatic.get(automatic.kind, "append")
        out.autorespond = False
        out.reason(
            f"auto.{automatic.kind}",
            f"Automatic mail ({automatic.kind.replace('_', ' ')}): no autoresponse",
            automatic.reasons[0].value if automatic.reasons else None,
        )
        if policy == "ignore":
            out.reason("auto.policy_ignore", f"Policy ignores {automatic.kind.replace('_', ' ')} mail")
            return out.stop("ignore")
        if policy == "append":
            out.may_open_ticket = False

    # 5. Never-autorespond senders; API requests that opt out.
    if out.autorespond and (view.sender is None or never_autorespond(view.sender.email)):
        out.autorespond = False
        out.reason("loop.never_autorespond", "Sender must never get an automatic response", sender or None)
    if isinstance(message, TicketRequest) and not message.autorespond:
        out.autorespond = False
        out.reason("request.autorespond", "The request asked for no autoresponse")

    # 6. Rate limit.
    limit = rules.rate_limit
    if limit is not None and lookups is not None and sender and out.may_open_ticket:
        count = lookups.count_tickets_by_requester(sender, now - limit.window)
        if count >= limit.max_tickets:
            out.may_open_ticket = False
            out.autorespond = False
            out.reason(
                "loop.rate_limit",
                f"{count} tickets from this sender in the last {int(limit.window.total_seconds())}s "
                f"(limit {limit.max_tickets}): no new ticket",
                sender,
            )

    # 7. Routing.
    facts = _Facts(view, message, context, names if isinstance(message, InboundEmail) else None)

    def on_timeout(exc: RegexTimeout, rule_name: str) -> None:
        out.reason("rule.regex_timeout", f"{exc}; condition treated as not matching", source=rule_name)

    tested: dict[Condition, tuple[bool, str | None]] = {}
    for rule in rules.plan.matching(facts.values, on_timeout, tested):
        value = _deciding_value(rule, facts, tested)
        out.reason("rule.match", f"Rule {rule.name!r} matched", value, source=rule.name)
        actions = rule.actions
        for key in ("department", "team", "category", "priority", "topic_id", "assignee"):
            setting = getattr(actions, key)
            if setting is not None:
                out.attributes[key] = setting
        if actions.tags:
            existing = out.attributes.get("tags", ())
            current = existing if isinstance(existing, tuple) else ()
            out.attributes["tags"] = tuple(dict.fromkeys((*current, *actions.tags)))
        for name, setting in actions.custom.items():
            out.attributes[f"custom.{name}"] = setting
        if actions.skip_autorespond and out.autorespond:
            out.autorespond = False
            out.reason("rule.skip_autorespond", f"Rule {rule.name!r} skips the autoresponse", source=rule.name)
        if actions.reject:
            out.reason("rule.reject", actions.reject_reason or f"Rejected by rule {rule.name!r}", source=rule.name)
            return out.stop("reject")
        if actions.drop:
            out.reason("rule.drop", actions.drop_reason or f"Dropped by rule {rule.name!r}", source=rule.name)
            return out.stop("ignore")
        if actions.stop:
            out.reason("rule.stop", f"Rule {rule.name!r} stops rule processing", source=rule.name)
            break
    return out.build()


def _apply_filters(
    message: InboundEmail | TicketRequest, view: MessageView, rules: RuleSet, context: MailboxContext, out: _Builder
) -> bool:
    """Run the filters; record reasons; True when the message is to be ignored."""
    applicable = [f for f in rules.filters if f.applies_to(context.name)]
    if not applicable:
        return False
    subject = view.subject.casefold()
    body = view.body[:BODY_CHARS].casefold()
    allow_seen = False
    allowed_by: str | None = None
    for item in applicable:
        hit = item.match(view, subject=subject, body=body)
        if item.type == "ignore":
            if hit is not None:
                out.reason("filter.ignore", f"Ignore filter {item.name!r} matched {hit.field}", hit.value, item.name)
                return True
        else:
            allow_seen = True
            if hit is not None and allowed_by is None:
                allowed_by = item.name
                out.reason("filter.allow", f"Allow filter {item.name!r} matched {hit.field}", hit.value, item.name)
    if allow_seen and allowed_by is None:
        out.reason("filter.not_allowed", "No allow filter matched", view.sender.email if view.sender else None)
        return True
    return False
