"""The reference rule matcher: each enabled rule in order, each condition with `Condition.test()`.

This is the definition of which rules match; the generated matcher (`ticketmail.rules._compiled`) is the
fast form of exactly this loop, and hypothesis properties in `tests/rules/test_plan_equivalence.py`
compare the two. It also decides the rare messages the generated matcher cannot (a field value containing
NUL).

A rule with no condition always matches; otherwise its conditions combine with `all` or `any`. Two
choices fix *which* regex searches run, and so which `rule.regex_timeout` reasons appear:

* within a rule, literal conditions are tested first and regex conditions after them, in first-use
  order (the order in which the rule set first mentions each regex), each with short-circuit
  `and`/`or`: a regex runs only while its rule is still undecided;
* each regex runs at most once per message (`RegexRun`), and all the regexes of a message share one
  budget (`REGEX_MESSAGE_BUDGET`) on top of each condition's own deadline. A regex that times out, or
  is not run because the budget is spent, counts as "condition not met" whatever its polarity; the
  timeouts are reported in first-use order, each with the first rule using the regex.

Neither choice changes a result that does not involve a timeout: the matched rules are exactly those for
which `all`/`any` of `Condition.test()` over its conditions holds.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from ticketmail.rules.routing import Condition, RegexTimeout, Rule

__all__ = [
    "REGEX_MESSAGE_BUDGET",
    "OnTimeout",
    "RegexRun",
    "Tested",
    "Values",
    "budget_message",
    "reference_matching",
    "regex_order",
]

REGEX_MESSAGE_BUDGET = 0.25
"""Seconds all the regex conditions of one message may spend together (each one also has its own deadline,
`REGEX_TIMEOUT`); once it is spent, the remaining regex conditions are not
searched and count as timed out ("not met", with a `rule.regex_timeout` reason)."""

Values = Callable[[str], tuple[str, ...]]
"""`values(field)`: the raw values of a condition field of the message being matched."""

OnTimeout = Callable[[RegexTimeout, str], None]
"""`on_timeout(exc, rule_name)`: told of each regex condition that timed out."""

Tested = dict[Condition, tuple[bool, str | None]]
"""Receives the `Condition.test()` result of each regex condition run (timeouts as `(False, None)`)."""


def budget_message(condition: Condition) -> str:
    """The timeout text for a regex condition skipped because the message's regex budget is spent."""
    return (
        f"regex {condition.value[:60]!r} on {condition.field} not run: the message's regex budget of"
        f" {REGEX_MESSAGE_BUDGET}s is spent"
    )


class RegexRun:
    """The regex searches of one message, by index in first-use order: each at most once, within the budget."""

    __slots__ = ("conditions", "deadline", "memo", "tested", "timeouts", "values")

    def __init__(self, conditions: Sequence[Condition], values: Values, tested: Tested) -> None:
        self.conditions = conditions
        self.values = values
        self.tested = tested
        self.memo: dict[int, bool] = {}
        self.timeouts: list[tuple[int, RegexTimeout]] = []
        self.deadline: float | None = None  # the message's regex deadline, set by the first search

    def __call__(self, index: int) -> bool:
        """Whether regex condition `index` holds (a timeout: False)."""
        known = self.memo.get(index)
        if known is not None:
            return known
        condition = self.conditions[index]
        raw = self.values(condition.field)
        try:
            if condition.may_match(raw):  # a search will run: it counts against the budget
                now = time.monotonic()
                if self.deadline is None:
                    self.deadline = now + REGEX_MESSAGE_BUDGET
                elif now >= self.deadline:
                    raise RegexTimeout(budget_message(condition))
            result = condition.test(raw)
        except RegexTimeout as exc:
            self.timeouts.append((index, exc))
            result = (False, None)  # known "not met": explaining a match must not search again
        self.tested[condition] = result
        self.memo[index] = result[0]
        return result[0]

    def report(self, first_rules: Sequence[str], on_timeout: OnTimeout) -> None:
        """Tell `on_timeout` of every timeout, in first-use order, with the first rule using the regex."""
        for index, exc in sorted(self.timeouts, key=_index):
            on_timeout(exc, first_rules[index])


def _index(item: tuple[int, RegexTimeout]) -> int:
    return item[0]


def regex_order(rules: Sequence[Rule]) -> tuple[tuple[Condition, ...], tuple[str, ...]]:
    """The distinct regex conditions of `rules` in first-use order, and the first rule using each."""
    first: dict[Condition, str] = {}
    for rule in rules:
        for condition in rule.conditions:
            if condition.pattern is not None:
                first.setdefault(condition, rule.name)
    return tuple(first), tuple(first.values())


def _holds(rule: Rule, values: Values, run: RegexRun, index: dict[Condition, int]) -> bool:
    """Whether `rule` matches: literal conditions first, then regexes in first-use order, short-circuit."""
    regexes = sorted(index[c] for c in rule.conditions if c.pattern is not None)
    truths = itertools.chain(
        (c.test(values(c.field))[0] for c in rule.conditions if c.pattern is None),
        (run(number) for number in regexes),
    )
    return all(truths) if rule.match == "all" else any(truths)


def reference_matching(
    rules: Sequence[Rule],
    regexes: Sequence[Condition],
    first_rules: Sequence[str],
    values: Values,
    on_timeout: OnTimeout,
    tested: Tested | None = None,
) -> list[int]:
    """Indexes of the `rules` that match, in order (see the module docstring).

    Args:
        rules: The enabled rules.
        regexes: Their regex conditions in first-use order (see `regex_order()`).
        first_rules: The name of the first rule using each regex.
        values: The message's field values.
        on_timeout: Told of each regex condition that timed out.
        tested: When given, receives the result of each regex condition run.
    """
    run = RegexRun(regexes, values, {} if tested is None else tested)
    index = {condition: number for number, condition in enumerate(regexes)}
    matched = [number for number, rule in enumerate(rules) if not rule.conditions or _holds(rule, values, run, index)]
    run.report(first_rules, on_timeout)
    return matched
