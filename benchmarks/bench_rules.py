"""Rule evaluation cost against parse cost: 100 rules over 10,000 messages.

Target: evaluating a parsed message against 100 routing rules (plus filters, automatic-mail detection and
loop checks, i.e. the whole `evaluate`) takes under 10% of the time `parse_email` needs for the same
message. Both are measured in this run, over the same generated messages.

    .venv/bin/python benchmarks/bench_rules.py           # 10,000 messages
    .venv/bin/python benchmarks/bench_rules.py --quick   # 1,000 messages

Also reported: the routing step alone (the 100 rules over the message's fields, fields read included) with
each of the two matchers of a `RulePlan`, the generated fast path (`RulePlan.fast`) and the reference
(`RulePlan.reference`), which is what justifies keeping generated code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time
from typing import Any

from ticketmail.decision import Decision, Reason
from ticketmail.model import MailboxContext, message_view
from ticketmail.parsing.mime import parse_email
from ticketmail.rules import classify_automatic, duplicate_keys, evaluate, load_rules
from ticketmail.rules.evaluate import _Facts

WORDS = [
    "printer",
    "invoice",
    "refund",
    "password",
    "reset",
    "vpn",
    "laptop",
    "urgent",
    "order",
    "delivery",
    "account",
    "login",
    "error",
    "crash",
]
DOMAINS = ["customer.example", "mail.partner.example", "gmail.example", "corp.example", "news.example"]


def make_raw(rng: random.Random, index: int) -> bytes:
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
    body = "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(rng.randint(3, 25)))
    extra = ""
    roll = rng.random()
    if roll < 0.05:
        extra = "Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n"
        subject = "Automatic reply: " + subject
    elif roll < 0.10:
        extra = "List-Id: <users.lists.example>\r\nPrecedence: list\r\n"
    sender = f"user{rng.randint(1, 500)}@{rng.choice(DOMAINS)}"
    return (
        f"Return-Path: <{sender}>\r\n"
        f"Received: from mx.example (mx.example [192.0.2.1]) by desk.example; Mon, 4 Mar 2024 10:00:00 +0000\r\n"
        f"From: User <{sender}>\r\nTo: support@desk.example\r\nSubject: {subject}\r\n"
        f"Date: Mon, 4 Mar 2024 10:{index % 60:02d}:00 +0000\r\nMessage-ID: <m{index}@{sender.split('@')[1]}>\r\n"
        f"X-Priority: {rng.randint(1, 5)}\r\n{extra}MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def make_rules(rng: random.Random) -> dict[str, Any]:
    """100 rules shaped like real ones: mostly positive tests on subject, sender and recipient, a few regexes."""
    vocabulary = WORDS + [f"{w}{n}" for w in WORDS for n in range(20)]  # most rules target rare words
    fields = ["subject", "subject", "body", "from", "from_domain", "to", "header:X-Priority", "recipient", "mailbox"]
    ops = ["contains", "contains", "equals", "starts_with", "ends_with", "regex", "not_contains"]
    rules = []
    for i in range(100):
        conditions = []
        for _ in range(rng.randint(1, 3)):
            op = rng.choice(ops)
            field = rng.choice(fields)
            word = rng.choice(vocabulary)
            if field == "from_domain":
                word = rng.choice(DOMAINS)
            value = rf"\b{word}\s+{rng.choice(WORDS)}\b" if op == "regex" else word
            conditions.append({"field": field, "op": op, "value": value})
        actions: dict[str, Any] = {"department": f"D{i % 7}", "tags": [f"t{i}"]}
        if rng.random() < 0.1:
            actions["priority"] = rng.randint(1, 4)
        if rng.random() < 0.2:
            actions["stop"] = True
        match = "all" if rng.random() < 0.8 else "any"
        rules.append({"name": f"rule-{i}", "match": match, "conditions": conditions, "actions": actions})
    return {
        "settings": {"own_addresses": ["support@desk.example"]},
        "filters": [
            {"name": "spam", "type": "ignore", "domains": ["spam.example"], "keywords": ["casino", "lottery"]},
        ],
        "rules": rules,
    }


def _ignore_timeout(exc: Exception, rule: str) -> None:
    """Timeouts do not happen with these rules; the matchers still need somewhere to report them."""


def measure(label: str, raws: list[bytes], rules: Any, rounds: int) -> float:
    """Time parse_email and evaluate over `raws` (best of `rounds`, interleaved); print and return the ratio."""
    context = MailboxContext(name="support", addresses=("support@desk.example",), department="Support")
    now = dt.datetime(2024, 3, 4, 12, 0, tzinfo=dt.timezone.utc)
    count = len(raws)
    emails = [parse_email(raw) for raw in raws]
    empty = load_rules({})
    decisions: list[Any] = []
    best = {
        "parse": float("inf"),
        "evaluate": float("inf"),
        "no_rules": float("inf"),
        "keys": float("inf"),
        "classify": float("inf"),
        "floor": float("inf"),
        "fast": float("inf"),
        "reference": float("inf"),
    }
    header = "x-priority"
    # Interleaved rounds, best of each: the machine is shared, so single timings are noisy.
    for _ in range(rounds):
        start = time.perf_counter()
        for raw in raws:
            parse_email(raw)
        best["parse"] = min(best["parse"], time.perf_counter() - start)
        start = time.perf_counter()
        decisions = [evaluate(email, rules, context=context, now=now) for email in emails]
        best["evaluate"] = min(best["evaluate"], time.perf_counter() - start)
        start = time.perf_counter()
        for email in emails:
            evaluate(email, empty, context=context, now=now)
        best["no_rules"] = min(best["no_rules"], time.perf_counter() - start)
        start = time.perf_counter()
        for email in emails:
            duplicate_keys(email, scope="global", context=context)
        best["keys"] = min(best["keys"], time.perf_counter() - start)
        start = time.perf_counter()
        for email in emails:
            classify_automatic(email)
        best["classify"] = min(best["classify"], time.perf_counter() - start)
        # The floor of any evaluator in Python: read each field the rules look at once, case-fold it, and
        # build the Decision (two reasons); no filter, signal or rule logic at all.
        start = time.perf_counter()
        for email in emails:
            sender = email.from_
            fields = [
                email.subject,
                email.text[:65536],
                sender.email if sender else "",
                sender.domain if sender else "",
                context.name,
                *(a.email for a in email.to),
                *(a.email for a in email.delivered_to),
                *(value for name, value in email.headers if name.lower() == header),
            ]
            [field.casefold() for field in fields]
            Decision(
                action="accept",
                attributes={"department": context.department},
                autorespond=True,
                may_open_ticket=True,
                automatic=None,
                reasons=(Reason(code="mailbox.defaults", message="m"), Reason(code="rule.match", message="m")),
            )
        best["floor"] = min(best["floor"], time.perf_counter() - start)
        # Routing alone, by each matcher (fresh facts each time: reading the fields is part of the cost).
        for key, matcher in (("fast", rules.plan.fast), ("reference", rules.plan.reference)):
            facts = [_Facts(message_view(email), email, context) for email in emails]
            start = time.perf_counter()
            for item in facts:
                matcher(item.values, _ignore_timeout, {})
            best[key] = min(best[key], time.perf_counter() - start)
    matched = sum(sum(r.code == "rule.match" for r in d.reasons) for d in decisions) / count
    automatic = sum(d.automatic is not None for d in decisions)
    size = sum(map(len, raws)) / count
    print(f"\n[{label}] {count} messages (mean {size / 1024:.1f} KiB), {len(rules.rules)} rules")
    print(f"  {matched:.1f} rules matched per message, {automatic} automatic messages")
    for key, name in (
        ("parse", "baseline parse_email"),
        ("evaluate", "evaluate (100 rules)"),
        ("no_rules", "evaluate (no rules)"),
        ("keys", "duplicate_keys"),
        ("classify", "classify_automatic"),
        ("floor", "floor (see source)"),
        ("fast", "routing, generated"),
        ("reference", "routing, reference"),
    ):
        share = best[key] / best["parse"]
        print(f"  {name:21s} {best[key]:.3f}s ({best[key] / count * 1e6:.1f} us/message, {share:.1%} of parse)")
    print(f"  routing: the reference matcher takes {best['reference'] / best['fast']:.1f}x the generated one's time")
    ratio = best["evaluate"] / best["parse"]
    marginal = (best["evaluate"] - best["no_rules"]) / best["parse"]
    print(f"  ratio evaluate/parse: {ratio:.1%} (target < 10%): {'OK' if ratio < 0.10 else 'OVER TARGET'}")
    print(f"  the 100 rules and the filter alone (evaluate minus no rules): {marginal:.1%} of parse")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 messages instead of 10,000")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (best is reported)")
    args = parser.parse_args()
    count = 1_000 if args.quick else 10_000
    rng = random.Random(20240304)
    rules = load_rules(make_rules(rng))
    measure("small plain-text messages", [make_raw(rng, i) for i in range(count)], rules, args.rounds)
    try:  # the parse benchmark's message mix (HTML, charsets, attachments), when that script is beside this one
        from bench_parse_email import make_message
    except ImportError:
        print("\n[parse-benchmark mix] skipped: benchmarks/bench_parse_email.py not importable")
        return
    measure("parse-benchmark mix", [make_message(rng, i) for i in range(count)], rules, args.rounds)


if __name__ == "__main__":
    main()
