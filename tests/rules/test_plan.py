"""The compiled rule plan gives exactly the rules a one-by-one evaluation matches, in order."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ticketmail.model import Address, InboundEmail, MailboxContext, message_view
from ticketmail.rules import Rule, load_rules
from ticketmail.rules.evaluate import _Facts

words = st.sampled_from(["Alpha", "beta", "alpha beta", "gam", "x@a.example", "a.example", "", " beta "])
fields = st.sampled_from(["subject", "to", "cc", "from", "from_domain", "header:X-Tag", "mailbox", "body"])
ops = st.sampled_from(
    ["equals", "contains", "starts_with", "ends_with", "not_equals", "not_contains", "not_starts_with", "not_ends_with"]
)
conditions = st.fixed_dictionaries(
    {"field": fields, "op": ops, "value": words, "case_sensitive": st.booleans()},
)
rules_spec = st.lists(
    st.fixed_dictionaries(
        {
            "match": st.sampled_from(["all", "any"]),
            "conditions": st.lists(conditions, max_size=3),
            "enabled": st.booleans(),
        }
    ),
    max_size=8,
)
messages = st.builds(
    lambda subject, to, tags, body: InboundEmail(
        message_id="m@x",
        from_=Address("x@a.example"),
        subject=subject,
        to=tuple(Address(t) for t in to),
        headers=tuple(("X-Tag", t) for t in tags),
        text=body,
    ),
    words,
    st.lists(st.sampled_from(["x@a.example", "Beta@b.example", "gam@alpha.example"]), max_size=3),
    st.lists(words, max_size=2),
    words,
)


def reference(rules: tuple[Rule, ...], facts: _Facts) -> list[str]:
    out = []
    for rule in rules:
        if not rule.enabled:
            continue
        results = [c.test(facts.values(c.field))[0] for c in rule.conditions]
        if not results or (all(results) if rule.match == "all" else any(results)):
            out.append(rule.name)
    return out


@given(rules_spec, messages)
def test_plan_equals_sequential_evaluation(spec: list[dict[str, Any]], message: InboundEmail) -> None:
    rules = load_rules({"rules": [{"name": f"r{i}", **item} for i, item in enumerate(spec)]})
    facts = _Facts(message_view(message), message, MailboxContext(name="alpha"))
    planned = [r.name for r in rules.plan.matching(facts.values, lambda exc, name: None)]
    assert planned == reference(rules.rules, facts)
