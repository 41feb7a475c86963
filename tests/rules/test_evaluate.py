"""evaluate(): the whole decision, plus hypothesis properties (filters, rule order, idempotence)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.model import Address, InboundEmail, MailboxContext, MessageBody, TicketRequest, message_view
from ticketmail.rules import Filter, Lookups, evaluate, load_rules
from ticketmail.rules.routing import Condition, RegexTimeout

NOW = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
CTX = MailboxContext(name="support", addresses=("support@desk.example",), department="Support", priority=2)
SAMPLES = Path(__file__).parent / "samples"


def mail(*headers: tuple[str, str], **kw: Any) -> InboundEmail:
    kw.setdefault("from_", Address("alice@customer.example", "Alice"))
    kw.setdefault("to", (Address("support@desk.example"),))
    kw.setdefault("subject", "Printer broken")
    kw.setdefault("text", "The printer on floor 3 is broken.")
    return InboundEmail(message_id="m1@customer.example", headers=tuple(headers), **kw)


def codes(decision: Any) -> list[str]:
    return [r.code for r in decision.reasons]


class Counter:
    """A Lookups double: a fixed ticket count, and a record of the questions asked."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.asked: list[tuple[str, dt.datetime]] = []

    def count_tickets_by_requester(self, email: str, since: dt.datetime) -> int:
        self.asked.append((email, since))
        return self.count


def test_plain_message_gets_mailbox_defaults() -> None:
    decision = evaluate(mail(), load_rules({}), context=CTX, now=NOW)
    assert decision.action == "accept"
    assert decision.attributes == {"department": "Support", "priority": 2}
    assert decision.autorespond
    assert decision.may_open_ticket
    assert decision.automatic is None
    assert codes(decision) == ["mailbox.defaults"]


def test_own_address_is_a_loop() -> None:
    rules = load_rules({"settings": {"own_addresses": ["noreply@desk.example"]}})
    for sender in ("Support@DESK.example", "noreply@desk.example", "support+t1234@desk.example"):
        decision = evaluate(mail(from_=Address(sender)), rules, context=CTX, now=NOW)
        assert decision.action == "ignore"
        assert not decision.autorespond
        assert codes(decision)[-1] == "loop.own_address"


def test_echo_header_is_a_loop() -> None:
    decision = evaluate(mail(("X-Ticketmail-Loop", "tm-1")), load_rules({}), context=CTX, now=NOW)
    assert decision.action == "ignore"
    assert codes(decision)[-1] == "loop.echo_header"


def test_auto_reply_may_append_but_never_open_or_autorespond() -> None:
    decision = evaluate(mail(("Auto-Submitted", "auto-replied")), load_rules({}), context=CTX, now=NOW)
    assert decision.action == "accept"
    assert not decision.may_open_ticket
    assert not decision.autorespond
    assert decision.automatic is not None
    assert decision.automatic.kind == "auto_reply"
    assert "auto.auto_reply" in codes(decision)


def test_out_of_office_reported_separately() -> None:
    decision = evaluate(mail(subject="Out of Office: Re: [#1] printer"), load_rules({}), context=CTX, now=NOW)
    assert decision.automatic is not None
    assert decision.automatic.kind == "out_of_office"
    assert not decision.may_open_ticket
    assert not decision.autorespond


def test_bounce_never_opens_a_ticket(parse: Callable[[bytes], InboundEmail]) -> None:
    email = parse((SAMPLES / "postfix_dsn.eml").read_bytes())
    decision = evaluate(email, load_rules({}), context=CTX, now=NOW)
    assert decision.automatic is not None
    assert decision.automatic.kind == "bounce"
    assert decision.automatic.recipients[0].recipient == "nobody@customer.example"
    assert not decision.may_open_ticket
    assert not decision.autorespond


def test_automatic_policy() -> None:
    listed = mail(("List-Id", "<users.lists.example>"))
    default = evaluate(listed, load_rules({}), context=CTX, now=NOW)
    assert default.action == "accept"
    assert default.may_open_ticket  # lists may open tickets by default...
    assert not default.autorespond  # ...but never get an autoresponse
    policy = load_rules({"settings": {"automatic": {"mailing_list": "ignore"}}})
    ignored = evaluate(listed, policy, context=CTX, now=NOW)
    assert ignored.action == "ignore"
    assert codes(ignored)[-1] == "auto.policy_ignore"


def test_never_autorespond_sender() -> None:
    decision = evaluate(mail(from_=Address("no-reply@shop.example")), load_rules({}), context=CTX, now=NOW)
    assert decision.action == "accept"
    assert decision.may_open_ticket
    assert not decision.autorespond
    assert "loop.never_autorespond" in codes(decision)


def test_rate_limit() -> None:
    rules = load_rules({"settings": {"rate_limit": {"max_tickets": 3, "window_seconds": 600}}})
    below = Counter(2)
    decision = evaluate(mail(), rules, context=CTX, now=NOW, lookups=below)
    assert decision.may_open_ticket
    assert below.asked == [("alice@customer.example", NOW - dt.timedelta(minutes=10))]
    at_limit = evaluate(mail(), rules, context=CTX, now=NOW, lookups=Counter(3))
    assert not at_limit.may_open_ticket
    assert not at_limit.autorespond
    assert at_limit.action == "accept"  # replies to existing tickets still thread
    assert codes(at_limit)[-1] == "loop.rate_limit"
    assert isinstance(Counter(0), Lookups)


def test_rate_limit_without_lookups_is_not_checked() -> None:
    rules = load_rules({"settings": {"rate_limit": {"max_tickets": 1, "window_seconds": 600}}})
    assert evaluate(mail(), rules, context=CTX, now=NOW).may_open_ticket


def test_filters_ignore_and_allow() -> None:
    rules = load_rules(
        {
            "filters": [
                {"name": "vip-only", "type": "allow", "domains": ["customer.example"], "mailboxes": ["vip"]},
                {"name": "spam", "type": "ignore", "keywords": ["casino"]},
            ]
        }
    )
    assert evaluate(mail(subject="Best CASINO!"), rules, context=CTX, now=NOW).action == "ignore"
    vip = MailboxContext(name="vip")
    assert evaluate(mail(), rules, context=vip, now=NOW).action == "accept"
    outsider = evaluate(mail(from_=Address("x@other.example")), rules, context=vip, now=NOW)
    assert outsider.action == "ignore"
    assert codes(outsider)[-1] == "filter.not_allowed"
    # The allow filter is scoped to "vip": elsewhere everyone passes.
    assert evaluate(mail(from_=Address("x@other.example")), rules, context=CTX, now=NOW).action == "accept"


def test_subdomains_and_idna_match() -> None:
    f = Filter(name="f", type="allow", domains=["bücher.example"], addresses=["Info@XN--BCHER-KVA.example"])
    view = message_view(mail(from_=Address("a@mail.xn--bcher-kva.example")))
    hit = f.match(view)
    assert hit is not None
    assert hit.field == "domain"
    hit = f.match(message_view(mail(from_=Address("info@bücher.example"))))
    assert hit is not None
    assert hit.field == "address"
    assert f.match(message_view(mail(from_=Address("a@notbücher.example")))) is None


def test_keywords_match_words() -> None:
    f = Filter(name="f", type="ignore", keywords=["sale", "free money"])
    assert f.match(message_view(mail(subject="Big SALE!")))
    assert f.match(message_view(mail(text="get FREE   money now".replace("   ", " "))))
    assert f.match(message_view(mail(subject="Wholesale prices"))) is None


ROUTING = {
    "rules": [
        {
            "name": "billing",
            "conditions": [{"field": "subject", "op": "contains", "value": "invoice"}],
            "actions": {"department": "Billing", "tags": ["billing"], "custom": {"region": "EU"}},
        },
        {
            "name": "urgent",
            "match": "any",
            "conditions": [
                {"field": "subject", "op": "regex", "value": r"\burgent\b"},
                {"field": "header:X-Priority", "op": "starts_with", "value": "1"},
            ],
            "actions": {"priority": 1, "tags": ["urgent"], "skip_autorespond": True, "stop": True},
        },
        {"name": "never-reached", "actions": {"team": "Nobody"}},
    ]
}


def test_routing_actions_and_stop() -> None:
    rules = load_rules(ROUTING)
    decision = evaluate(mail(("X-Priority", "1 (Highest)"), subject="Invoice 42"), rules, context=CTX, now=NOW)
    assert decision.attributes == {
        "department": "Billing",
        "priority": 1,
        "tags": ("billing", "urgent"),
        "custom.region": "EU",
    }
    assert not decision.autorespond
    assert codes(decision) == ["mailbox.defaults", "rule.match", "rule.match", "rule.skip_autorespond", "rule.stop"]
    assert decision.reasons[1].source == "billing"
    assert decision.reasons[1].value == "Invoice 42"
    assert decision.reasons[2].value == "1 (Highest)"


def test_catch_all_rule_reached_without_stop() -> None:
    decision = evaluate(mail(), load_rules(ROUTING), context=CTX, now=NOW)
    assert decision.attributes["team"] == "Nobody"


def test_reject_rule() -> None:
    rules = load_rules(
        {
            "rules": [
                {
                    "name": "no-attachments-from-x",
                    "conditions": [{"field": "from_domain", "op": "equals", "value": "CUSTOMER.example"}],
                    "actions": {"reject": True, "reject_reason": "Use the portal"},
                },
                {"name": "after", "actions": {"team": "T"}},
            ]
        }
    )
    decision = evaluate(mail(), rules, context=CTX, now=NOW)
    assert decision.action == "reject"
    assert not decision.may_open_ticket
    assert "team" not in decision.attributes
    assert decision.reasons[-1].message == "Use the portal"


def test_disabled_rule_is_skipped() -> None:
    rules = load_rules({"rules": [{"name": "off", "enabled": False, "actions": {"team": "T"}}]})
    assert "team" not in evaluate(mail(), rules, context=CTX, now=NOW).attributes


def test_recipient_and_mailbox_fields() -> None:
    rules = load_rules(
        {
            "rules": [
                {
                    "name": "sales",
                    "conditions": [
                        {"field": "recipient", "op": "equals", "value": "sales@desk.example"},
                        {"field": "mailbox", "op": "equals", "value": "support"},
                    ],
                    "actions": {"department": "Sales"},
                }
            ]
        }
    )
    m = mail(delivered_to=("sales@desk.example",))
    assert evaluate(m, rules, context=CTX, now=NOW).attributes["department"] == "Sales"
    assert evaluate(mail(), rules, context=CTX, now=NOW).attributes["department"] == "Support"


def test_ticket_request() -> None:
    rules = load_rules(ROUTING)
    req = TicketRequest(email=Address("bob@x.example"), subject="Invoice missing", message=MessageBody("hi"))
    decision = evaluate(req, rules, context=CTX, now=NOW)
    assert decision.attributes["department"] == "Billing"
    assert decision.automatic is None
    quiet = TicketRequest(email=Address("bob@x.example"), subject="s", message=MessageBody("m"), autorespond=False)
    decision = evaluate(quiet, rules, context=CTX, now=NOW)
    assert not decision.autorespond
    assert "request.autorespond" in codes(decision)


def test_regex_timeout_is_a_reason_not_a_crash() -> None:
    rules = load_rules(
        {
            "rules": [
                {
                    "name": "slow",
                    "conditions": [{"field": "body", "op": "not_regex", "value": ".*a.*a.*b"}],
                    "actions": {"team": "T"},
                }
            ]
        }
    )
    decision = evaluate(mail(text="a" * 9000), rules, context=CTX, now=NOW)
    assert "team" not in decision.attributes
    assert "rule.regex_timeout" in codes(decision)


# --- Properties ---------------------------------------------------------------------------------------

words = st.sampled_from(["alpha", "beta", "gamma", "delta", "x", "sale", "help"])
domains = st.sampled_from(["a.example", "b.example", "sub.a.example", "c.example"])
senders = st.builds(lambda local, domain: Address(f"{local}@{domain}"), words, domains)
messages = st.builds(
    lambda sender, subject, body: mail(from_=sender, subject=" ".join(subject), text=" ".join(body)),
    senders,
    st.lists(words, max_size=4),
    st.lists(words, max_size=6),
)
lists = st.fixed_dictionaries(
    {
        "addresses": st.lists(st.builds(lambda w, d: f"{w}@{d}", words, domains), max_size=3),
        "domains": st.lists(domains, max_size=2),
        "keywords": st.lists(words, max_size=3),
    }
)


@given(lists, messages)
def test_ignore_is_the_complement_of_allow(entries: dict[str, list[str]], message: InboundEmail) -> None:
    view = message_view(message)
    allow = Filter(name="a", type="allow", **entries)  # type: ignore[arg-type]
    ignore = Filter(name="i", type="ignore", **entries)  # type: ignore[arg-type]
    allow_passes = allow.match(view) is not None
    ignore_passes = ignore.match(view) is None
    assert allow_passes != ignore_passes


@given(messages)
def test_allow_with_empty_lists_matches_nothing(message: InboundEmail) -> None:
    assert Filter(name="a", type="allow").match(message_view(message)) is None


@given(lists, lists, messages)
def test_entries_are_or(first: dict[str, list[str]], second: dict[str, list[str]], message: InboundEmail) -> None:
    view = message_view(message)
    merged = {key: first[key] + second[key] for key in first}
    one = Filter(name="1", type="allow", **first).match(view) is not None  # type: ignore[arg-type]
    two = Filter(name="2", type="allow", **second).match(view) is not None  # type: ignore[arg-type]
    both = Filter(name="m", type="allow", **merged).match(view) is not None  # type: ignore[arg-type]
    assert both == (one or two)


@given(messages)
def test_no_filter_all_pass(message: InboundEmail) -> None:
    assert evaluate(message, load_rules({}), context=MailboxContext(), now=NOW).action == "accept"


departments = st.sampled_from(["A", "B", "C"])
rule_lists = st.lists(
    st.fixed_dictionaries(
        {
            "word": words,
            "department": departments,
            "stop": st.booleans(),
        }
    ),
    max_size=6,
)


def _rules(spec: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rules": [
            {
                "name": f"r{i}",
                "conditions": [{"field": "subject", "op": "contains", "value": item["word"]}],
                "actions": {"department": item["department"], "stop": item["stop"], "tags": [f"t{i}"]},
            }
            for i, item in enumerate(spec)
        ]
    }


@given(rule_lists, messages)
def test_rule_order_last_match_wins_until_stop(spec: list[dict[str, Any]], message: InboundEmail) -> None:
    decision = evaluate(message, load_rules(_rules(spec)), context=MailboxContext(), now=NOW)
    expected_department = None
    expected_tags: list[str] = []
    subject = message.subject.casefold()
    for i, item in enumerate(spec):
        if item["word"] in subject:
            expected_department = item["department"]
            expected_tags.append(f"t{i}")
            if item["stop"]:
                break
    assert decision.attributes.get("department") == expected_department
    assert decision.attributes.get("tags", ()) == tuple(expected_tags)


@given(rule_lists, messages, st.integers(min_value=0, max_value=5))
def test_evaluation_is_idempotent(spec: list[dict[str, Any]], message: InboundEmail, count: int) -> None:
    config = _rules(spec)
    config["settings"] = {"rate_limit": {"max_tickets": 3, "window_seconds": 60}}
    rules = load_rules(config)
    first = evaluate(message, rules, context=CTX, now=NOW, lookups=Counter(count))
    second = evaluate(message, rules, context=CTX, now=NOW, lookups=Counter(count))
    again = evaluate(message, load_rules(config), context=CTX, now=NOW, lookups=Counter(count))
    assert first == second == again
    assert dict(first.attributes) == dict(again.attributes)


@pytest.mark.parametrize("nul", [False, True], ids=["compiled", "reference"])  # a NUL: the reference decides
def test_one_regex_deadline_per_condition_across_all_values(nul: bool) -> None:
    """A header with many values gets one REGEX_TIMEOUT for the whole condition, not one per value.

    Each value alone is well within the budget; together they are not. The deadline stops the condition
    part way through the values, and the timeout is recorded as a reason, by either matcher.
    """
    values = [("X-Note", "a" * 2000) for _ in range(100)]
    rules = load_rules(
        {
            "rules": [
                {
                    "name": "slow",
                    "conditions": [{"field": "header:X-Note", "op": "regex", "value": ".*a.*a.*b"}],
                    "actions": {"team": "T"},
                },
                {"name": "after", "actions": {"category": "C"}},
                {"name": "literal", "conditions": [{"field": "subject", "op": "contains", "value": "zzz"}]},
            ]
        }
    )
    decision = evaluate(mail(*values, subject="a\0b" if nul else "ab"), rules, context=CTX, now=NOW)
    assert "team" not in decision.attributes
    assert decision.attributes["category"] == "C"  # evaluation went on after the timeout
    [timeout] = [r for r in decision.reasons if r.code == "rule.regex_timeout"]
    assert timeout.source == "slow"
    assert "exceeded" in timeout.message
    assert [r.code for r in decision.reasons].count("rule.regex_timeout") == 1  # searched once, not again


def test_a_condition_deadline_is_shared_by_its_values() -> None:
    condition = Condition("header:X-Note", "not_regex", ".*a.*a.*b")
    with pytest.raises(RegexTimeout, match="exceeded"):
        condition.test(tuple("a" * 2000 for _ in range(100)))
    assert Condition("header:X-Note", "regex", "b$").test(("a", "b")) == (True, "b")  # quick: unaffected


@pytest.mark.parametrize("nul", [False, True], ids=["compiled", "reference"])  # a NUL: the reference decides
def test_one_regex_budget_per_message(nul: bool) -> None:
    """Twenty slow regex rules do not cost twenty deadlines: the message's budget stops the rest."""
    from ticketmail.rules._reference import REGEX_MESSAGE_BUDGET

    rules = load_rules(
        {
            "rules": [
                {
                    "name": f"slow{i}",
                    "conditions": [{"field": "body", "op": "regex", "value": f".*a.*a.*bx{{0,{i + 1}}}"}],
                    "actions": {"team": "T"},
                }
                for i in range(20)
            ]
            + [{"name": "literal", "conditions": [{"field": "subject", "op": "contains", "value": "zzz"}]}]
        }
    )
    body = "b" + "a" * 9000  # holds every required literal, never matches
    subject = "Printer\0broken" if nul else "Printer broken"
    decision = evaluate(mail(text=body, subject=subject), rules, context=CTX, now=NOW)
    timeouts = [r for r in decision.reasons if r.code == "rule.regex_timeout"]
    assert len(timeouts) == 20  # every condition is reported, each as not met
    assert "team" not in decision.attributes
    skipped = [r for r in timeouts if "regex budget" in r.message]
    assert skipped  # 20 deadlines of REGEX_TIMEOUT exceed the budget: the later ones were never searched
    assert len(skipped) >= 20 - int(REGEX_MESSAGE_BUDGET / 0.05) - 1
