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
from typing import Literal, Protocol, runtime_checkable

from ticketmail.decision import Automatic, Decision, DecisionAction, Reason
from ticketmail.model import InboundEmail, MailboxContext, MessageView, TicketRequest, message_view
from ticketmail.rules._text import normalize_address, normalize_domain
from ticketmail.rules.automatic import classify_with_names
from ticketmail.rules.config import RuleSet
from ticketmail.rules.filters import BODY_CHARS
from ticketmail.rules.loops import LOOP_HEADER, never_autorespond
from ticketmail.rules.routing import Actions, Condition, RegexTimeout, Rule

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

    `tested` holds the regex results the matcher already found for this message (a search is not repeated).
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
    _mailbox_defaults(context, out)
    names: list[str] | None = None  # header names in lower case, shared by every header lookup below
    if isinstance(message, InboundEmail):
        names = [name.lower() for name, _ in message.headers]
        out.automatic = classify_with_names(message, names, rules.ignore_signals)
    sender = normalize_address(view.sender.email) if view.sender else ""
    if _is_loop(message, names, sender, rules, context, out) or _apply_filters(message, view, rules, context, out):
        return out.stop("ignore")
    if _automatic_policy(rules, out):
        return out.stop("ignore")
    _autorespond_policy(message, view, sender, out)
    if lookups is not None:
        _rate_limit(lookups, sender, rules, now, out)
    return _route(_Facts(view, message, context, names), rules, out)


def _mailbox_defaults(context: MailboxContext, out: _Builder) -> None:
    """Step 1: the mailbox's department, category and priority."""
    for key in ("department", "category", "priority"):
        value = getattr(context, key)
        if value is not None:
            out.attributes[key] = value
    if out.attributes:
        out.reason("mailbox.defaults", f"Defaults of mailbox {context.name!r} applied", source=context.name)


def _is_loop(
    message: InboundEmail | TicketRequest,
    names: list[str] | None,
    sender: str,
    rules: RuleSet,
    context: MailboxContext,
    out: _Builder,
) -> bool:
    """Step 2, loop protection: mail from the desk's own addresses or carrying our echo header."""
    if sender and _is_own(sender, rules, context):
        out.reason("loop.own_address", "Sent from one of the desk's own addresses", sender)
        return True
    if names is not None and _LOOP_KEY in names and isinstance(message, InboundEmail):
        echo = next(value for name, (_, value) in zip(names, message.headers, strict=True) if name == _LOOP_KEY)
        out.reason("loop.echo_header", f"Carries our own {LOOP_HEADER} header", echo[:200])
        return True
    return False


def _automatic_policy(rules: RuleSet, out: _Builder) -> bool:
    """Step 4, automatic mail: no autoresponse; the policy appends (no new ticket), ignores or opens."""
    automatic = out.automatic
    if automatic is None:
        return False
    kind = automatic.kind.replace("_", " ")
    policy = rules.automatic.get(automatic.kind, "append")
    out.autorespond = False
    out.reason(
        f"auto.{automatic.kind}",
        f"Automatic mail ({kind}): no autoresponse",
        automatic.reasons[0].value if automatic.reasons else None,
    )
    if policy == "ignore":
        out.reason("auto.policy_ignore", f"Policy ignores {kind} mail")
        return True
    if policy == "append":
        out.may_open_ticket = False
    return False


def _autorespond_policy(message: InboundEmail | TicketRequest, view: MessageView, sender: str, out: _Builder) -> None:
    """Step 5: never-autorespond senders; API requests that opt out."""
    if out.autorespond and (view.sender is None or never_autorespond(view.sender.email)):
        out.autorespond = False
        out.reason("loop.never_autorespond", "Sender must never get an automatic response", sender or None)
    if isinstance(message, TicketRequest) and not message.autorespond:
        out.autorespond = False
        out.reason("request.autorespond", "The request asked for no autoresponse")


def _rate_limit(lookups: Lookups, sender: str, rules: RuleSet, now: _dt.datetime, out: _Builder) -> None:
    """Step 6: a sender at the rate limit may not open another ticket (nor get an autoresponse)."""
    limit = rules.rate_limit
    if limit is None or not sender or not out.may_open_ticket:
        return
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


_SCALAR_ACTIONS = ("department", "team", "category", "priority", "topic_id", "assignee")
"""Actions that set one attribute (a later rule overwrites an earlier one)."""


def _route(facts: _Facts, rules: RuleSet, out: _Builder) -> Decision:
    """Step 7: the matching routing rules, in order, until one rejects, drops or stops."""

    def on_timeout(exc: RegexTimeout, rule_name: str) -> None:
        out.reason("rule.regex_timeout", f"{exc}; condition treated as not matching", source=rule_name)

    tested: dict[Condition, tuple[bool, str | None]] = {}
    for rule in rules.plan.matching(facts.values, on_timeout, tested):
        out.reason("rule.match", f"Rule {rule.name!r} matched", _deciding_value(rule, facts, tested), rule.name)
        _set_attributes(rule.actions, out)
        ending = _ending(rule, out)
        if ending == "stop":
            break
        if ending is not None:
            return out.stop(ending)
    return out.build()


def _set_attributes(actions: Actions, out: _Builder) -> None:
    """The attributes a matched rule sets: scalars overwrite, tags add, custom fields as `custom.<name>`."""
    for key in _SCALAR_ACTIONS:
        setting = getattr(actions, key)
        if setting is not None:
            out.attributes[key] = setting
    if actions.tags:
        existing = out.attributes.get("tags", ())
        current = existing if isinstance(existing, tuple) else ()
        out.attributes["tags"] = tuple(dict.fromkeys((*current, *actions.tags)))
    for name, setting in actions.custom.items():
        out.attributes[f"custom.{name}"] = setting


def _ending(rule: Rule, out: _Builder) -> DecisionAction | Literal["stop"] | None:
    """How a matched rule ends the run (`reject`, `ignore` for a drop, `stop`) or `None`; records why."""
    actions, name = rule.actions, rule.name
    if actions.skip_autorespond and out.autorespond:
        out.autorespond = False
        out.reason("rule.skip_autorespond", f"Rule {name!r} skips the autoresponse", source=name)
    if actions.reject:
        out.reason("rule.reject", actions.reject_reason or f"Rejected by rule {name!r}", source=name)
        return "reject"
    if actions.drop:
        out.reason("rule.drop", actions.drop_reason or f"Dropped by rule {name!r}", source=name)
        return "ignore"
    if actions.stop:
        out.reason("rule.stop", f"Rule {name!r} stops rule processing", source=name)
        return "stop"
    return None


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
