"""The two rule matchers agree: the generated fast path and the reference give the same result.

The reference (`RulePlan.reference`, `ticketmail.rules._reference`) tests each rule in order with
`Condition.test`; the fast path (`RulePlan.fast`, `ticketmail.rules._compiled`) is generated code that
encodes field values as NUL-anchored text, prepares the body lazily and pre-checks regex literals once
per field: every one of those is a place where it could drift. These properties compare the two (and the
reference with a plain `all`/`any` over `Condition.test`) over random rule sets (all operators, regexes,
case sensitivity, every field) and random messages (multi-valued fields, empty fields, non-ASCII text,
case-folding oddities such as `ß`/`İ`/the Kelvin sign, NUL characters inside values), including which
regexes are searched and which time out.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from ticketmail.model import Address, InboundEmail, MailboxContext, message_view
from ticketmail.rules import RuleSet, evaluate, load_rules
from ticketmail.rules._compiled import Fallback
from ticketmail.rules.evaluate import _Facts
from ticketmail.rules.plan import compile_rules
from ticketmail.rules.routing import Condition, RegexTimeout

_NOW = __import__("datetime").datetime(2024, 3, 4, 12, 0, tzinfo=__import__("datetime").timezone.utc)

texts = st.sampled_from(
    [
        "Alpha",
        "alpha beta",
        "beta",
        " beta ",
        "gam",
        "GAMMA ray",
        "x@a.example",
        "a.example",
        "",
        "straße",
        "STRASSE",
        "İstanbul",
        "\u212aelvin",  # Kelvin sign: casefolds to "k"
        "kelvin",
        "re: beta",
        "nul\0beta",
        "beta\0",
    ]
)
values = texts.filter(lambda v: "\0" not in v)  # condition values may not contain NUL
patterns = st.sampled_from(
    [
        r"\bbeta\b",
        r"alp?ha",
        r"gam+a",
        r"^re:",
        r"b.ta\s+g",
        r"kelvin",
        r"stra(ss|ß)e",
        r"\bx@a\.example",
        r"\bbeta\s+gam",  # two required texts: "beta" and "gam"
        r"alpha\s+beta\b",
        r"nul.beta",
        r" beta\b",  # a required text starting with a space
        "zzz",
    ]
)
fields = st.sampled_from(
    ["subject", "body", "from", "from_domain", "from_name", "to", "cc", "recipient", "mailbox", "header:X-Tag"]
)
literal_ops = st.sampled_from(
    ["equals", "contains", "starts_with", "ends_with", "not_equals", "not_contains", "not_starts_with", "not_ends_with"]
)
literal_conditions = st.fixed_dictionaries(
    {"field": fields, "op": literal_ops, "value": values, "case_sensitive": st.booleans()}
)
regex_conditions = st.fixed_dictionaries(
    {
        "field": fields,
        "op": st.sampled_from(["regex", "not_regex"]),
        "value": patterns,
        "case_sensitive": st.booleans(),
    }
)
conditions = st.one_of(literal_conditions, literal_conditions, regex_conditions)
actions = st.fixed_dictionaries(
    {},
    optional={
        "department": st.sampled_from(["A", "B"]),
        "tags": st.lists(st.sampled_from(["t1", "t2"]), max_size=2),
        "stop": st.booleans(),
        "reject": st.booleans(),
        "drop": st.booleans(),
        "skip_autorespond": st.booleans(),
    },
).filter(lambda a: not (a.get("reject") and a.get("drop")))
rules_spec = st.lists(
    st.fixed_dictionaries(
        {
            "match": st.sampled_from(["all", "any"]),
            "conditions": st.lists(conditions, max_size=4),
            "enabled": st.booleans(),
            "actions": actions,
        }
    ),
    max_size=12,
)
addresses = st.sampled_from(["x@a.example", "Beta@b.example", "gam@alpha.example", "kelvin@straße.example"])
messages = st.builds(
    lambda subject, sender, name, to, cc, tags, body, delivered: InboundEmail(
        message_id="m@x",
        from_=Address(sender, name=name) if sender else None,
        subject=subject,
        to=tuple(Address(a) for a in to),
        cc=tuple(Address(a) for a in cc),
        headers=tuple(("X-Tag" if i % 2 else "x-tag", t) for i, t in enumerate(tags)),
        text=body,
        delivered_to=tuple(delivered),
    ),
    texts,
    st.one_of(st.none(), addresses),
    st.one_of(st.none(), texts),
    st.lists(addresses, max_size=3),
    st.lists(addresses, max_size=2),
    st.lists(texts, max_size=3),
    st.one_of(texts, st.lists(texts, min_size=1, max_size=4).map(" ".join)),
    st.lists(addresses, max_size=2),
)
mailboxes = st.sampled_from(["alpha", "Beta", "", "straße"])


def _rules(spec: list[dict[str, Any]]) -> RuleSet:
    return load_rules({"rules": [{"name": f"r{i}", **item} for i, item in enumerate(spec)]})


def reference_matches(rules: RuleSet, facts: _Facts) -> list[tuple[str, str | None]]:
    """Rules one by one, each condition with Condition.test: (name, deciding value) of the matched rules."""
    out: list[tuple[str, str | None]] = []
    for rule in rules.rules:
        if not rule.enabled:
            continue
        results = [c.test(facts.values(c.field)) for c in rule.conditions]
        truths = [ok for ok, _ in results]
        if results and not (all(truths) if rule.match == "all" else any(truths)):
            continue
        out.append((rule.name, next((value for ok, value in results if ok), None)))
        if rule.actions.reject or rule.actions.drop or rule.actions.stop:
            break
    return out


def reference_all(rules: RuleSet, facts: _Facts) -> list[str]:
    """Every enabled rule that matches, one by one (no stop/reject)."""
    out = []
    for rule in rules.rules:
        truths = [c.test(facts.values(c.field))[0] for c in rule.conditions]
        if rule.enabled and (not truths or (all(truths) if rule.match == "all" else any(truths))):
            out.append(rule.name)
    return out


def _both(rules: RuleSet, facts: _Facts) -> tuple[list[str], list[str]]:
    """(the rules `RulePlan.matching` yields, the rules the reference matcher finds), by name."""
    planned = [rule.name for rule in rules.plan.matching(facts.values, lambda exc, name: None)]
    referenced = [rules.plan.rules[i].name for i in rules.plan.reference(facts.values, lambda exc, name: None)]
    return planned, referenced


def _message_with(field: str, items: list[str]) -> tuple[InboundEmail, MailboxContext]:
    """A message whose `field` has the values `items` (as far as the field can hold them)."""
    first = items[0] if items else ""
    kwargs: dict[str, Any] = {"message_id": "m@x", "subject": "", "text": ""}
    if field in ("subject", "body"):
        kwargs["subject" if field == "subject" else "text"] = first
    elif field in ("from", "from_domain", "from_name"):
        kwargs["from_"] = Address(f"{first}@d.example" if field == "from" else "s@" + first, name=first or None)
    elif field in ("to", "cc"):
        kwargs[field] = tuple(Address(item) for item in items)
    elif field == "recipient":
        kwargs["delivered_to"] = tuple(items)
    elif field.startswith("header:"):
        kwargs["headers"] = tuple((field[7:], item) for item in items)
    return InboundEmail(**kwargs), MailboxContext(name=first if field == "mailbox" else "m")


dense_values = st.sampled_from(["beta", "ß", "k", ""])
dense_items = st.sampled_from(["beta", "nul\0beta", "beta\0x", " BETA ", "straße", "\u212a"])
dense_literal = st.fixed_dictionaries(
    {"field": st.just("subject"), "op": literal_ops, "value": dense_values, "case_sensitive": st.booleans()}
)
dense_regex = st.fixed_dictionaries(
    {
        "field": st.just("subject"),
        "op": st.sampled_from(["regex", "not_regex"]),
        "value": st.sampled_from(
            [r"\bbeta\b", r"beta\s*x", r"nul.beta", r"stra(ss|ß)e", r"\bbeta\s+gam", r" beta", r"beta "]
        ),
        "case_sensitive": st.booleans(),
    }
)


@example(
    ["to"], [{"field": "subject", "op": "starts_with", "value": "beta", "case_sensitive": False}], "all", ["nul\0beta"]
)
@example(
    ["subject"], [{"field": "subject", "op": "ends_with", "value": "beta", "case_sensitive": True}], "any", ["beta\0x"]
)
@example(
    ["body"], [{"field": "subject", "op": "regex", "value": r"\bbeta\s+gam", "case_sensitive": False}], "all", ["beta"]
)
@given(
    st.lists(fields, min_size=1, max_size=1),
    st.lists(st.one_of(dense_literal, dense_literal, dense_regex), min_size=1, max_size=3),
    st.sampled_from(["all", "any"]),
    st.lists(dense_items, max_size=3),
)
def test_dense_conditions_on_one_field(
    other: list[str], specs: list[dict[str, Any]], match: str, items: list[str]
) -> None:
    """Conditions and values from small shared pools on the subject: the edge cases meet often.

    The same conditions on another field (`other`, with the same values) run alongside.
    """
    field = other[0]
    moved = [{**c, "field": field} for c in specs]
    rules = _rules([{"match": match, "conditions": specs}, {"match": match, "conditions": moved}])
    message, context = _message_with(field, items)
    if field != "subject":
        message = attrs.evolve(message, subject=items[0] if items else "")
    facts = _Facts(message_view(message), message, context)
    planned, referenced = _both(rules, facts)
    assert planned == referenced == reference_all(rules, facts)


@given(rules_spec, messages, mailboxes)
def test_plan_matches_one_by_one_evaluation(spec: list[dict[str, Any]], message: InboundEmail, mailbox: str) -> None:
    rules = _rules(spec)
    facts = _Facts(message_view(message), message, MailboxContext(name=mailbox))
    planned, referenced = _both(rules, facts)
    assert planned == referenced == reference_all(rules, facts)


_BODY_REGEX_AFTER_BODY_LITERAL = [  # found by this property: the lazy body text must not be reused unprepared
    {
        "match": "all",
        "conditions": [
            {"field": "body", "op": "equals", "value": "Alpha", "case_sensitive": False},
            {"field": "body", "op": "regex", "value": r"\bbeta\b", "case_sensitive": False},
        ],
    }
]


@example(_BODY_REGEX_AFTER_BODY_LITERAL, InboundEmail(message_id="m@x", subject="Alpha", text="Alpha"), "alpha")
@example(_BODY_REGEX_AFTER_BODY_LITERAL, InboundEmail(message_id="m@x", subject="", text="alpha beta"), "alpha")
@given(rules_spec, messages, mailboxes)
def test_evaluate_reasons_match_reference(spec: list[dict[str, Any]], message: InboundEmail, mailbox: str) -> None:
    rules = _rules(spec)
    context = MailboxContext(name=mailbox)
    decision = evaluate(message, rules, context=context, now=_NOW)
    if any(r.code.startswith(("loop.own", "filter.")) for r in decision.reasons):
        return  # routing did not run
    facts = _Facts(message_view(message), message, context)
    matched = [(r.source, r.value) for r in decision.reasons if r.code == "rule.match"]
    assert matched == reference_matches(rules, facts)


@given(rules_spec, messages)
def test_plan_is_deterministic_and_independent_of_compilation(
    spec: list[dict[str, Any]], message: InboundEmail
) -> None:
    rules = _rules(spec)
    again = compile_rules(rules.rules)
    context = MailboxContext(name="alpha")
    first = [r.name for r in rules.plan.matching(_Facts(message_view(message), message, context).values, print)]
    second = [r.name for r in again.matching(_Facts(message_view(message), message, context).values, print)]
    assert first == second
    assert evaluate(message, rules, context=context, now=_NOW) == evaluate(message, rules, context=context, now=_NOW)


_SLOW = frozenset({r"alp?ha", r"\bbeta\s+gam", "zzz"})
"""Patterns whose searches time out in `test_timeouts_and_searches_agree`."""


@given(rules_spec, messages, mailboxes)
def test_timeouts_and_searches_agree(spec: list[dict[str, Any]], message: InboundEmail, mailbox: str) -> None:
    """Both matchers search the same regexes and report the same timeouts, in the same order, for the same rules."""
    rules = _rules(spec)
    original = Condition.test

    def test(self: Condition, values: tuple[str, ...], prepared: tuple[str, ...] | None = None) -> Any:
        if self.pattern is not None and self.may_match(values):
            searched.append(self)
            if self.value in _SLOW:
                raise RegexTimeout(f"slow {self.value}")
        return original(self, values, prepared)

    def run(matcher: Any) -> tuple[list[int], list[tuple[str, str]], list[Condition]]:
        searched.clear()
        timeouts: list[tuple[str, str]] = []
        facts = _Facts(message_view(message), message, MailboxContext(name=mailbox))
        indexes = matcher(facts.values, lambda exc, name: timeouts.append((str(exc), name)), {})
        return indexes, timeouts, list(searched)

    searched: list[Condition] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Condition, "test", test)
        try:
            fast = run(rules.plan.fast)
        except Fallback:
            assume(False)  # a value contains NUL: the reference alone decides
        reference = run(rules.plan.reference)
    assert fast == reference
