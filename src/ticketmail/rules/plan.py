r"""The compiled form of the routing rules, so 100 rules cost little more per message than a handful.

A `RulePlan` is built once per `RuleSet` (`compile_rules()`) and holds two matchers with one meaning:

* the generated matcher (`ticketmail.rules._compiled`), one straight-line Python function written for
  the rule set: the fast path, used for every message it can decide;
* the reference matcher (`ticketmail.rules._reference`): each rule in order, each condition with
  `Condition.test()`; it decides the messages the generated one cannot (a field value containing NUL).

Both give exactly the rules that testing each rule in order with `Condition.test()` gives, and run the same
regex searches; hypothesis properties in `tests/rules/test_plan_equivalence.py` compare them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from ticketmail.rules._compiled import Fallback, FastMatcher, generate
from ticketmail.rules._reference import OnTimeout, Tested, Values, reference_matching, regex_order
from ticketmail.rules.routing import Condition, Rule

__all__ = ["RulePlan", "compile_rules"]


@attrs.frozen
class RulePlan:
    """The compiled rule set (see the module docstring)."""

    rules: tuple[Rule, ...]
    """The enabled rules, in order."""
    regexes: tuple[Condition, ...]
    """Their distinct regex conditions, in first-use order."""
    first_rules: tuple[str, ...]
    """The name of the first rule using each regex (for its timeout reason)."""
    fast: FastMatcher = attrs.field(repr=False)

    def matching(self, values: Values, on_timeout: OnTimeout, tested: Tested | None = None) -> Iterator[Rule]:
        """The rules that match, in order. `values(field)` gives a field's raw values.

        `tested`, when given, receives the `Condition.test()` results of the regex searches run (so the
        caller can explain a match without searching again).
        """
        rules = self.rules
        try:
            indexes = self.fast(values, on_timeout, {} if tested is None else tested)
        except Fallback:  # a value contains NUL: the reference decides
            indexes = self.reference(values, on_timeout, tested)
        for index in indexes:
            yield rules[index]

    def reference(self, values: Values, on_timeout: OnTimeout, tested: Tested | None = None) -> list[int]:
        """The indexes of the matching rules, by the reference matcher (what `matching()` must agree with)."""
        return reference_matching(self.rules, self.regexes, self.first_rules, values, on_timeout, tested)


def compile_rules(rules: Iterable[Rule]) -> RulePlan:
    """Build the plan for `rules` (disabled rules are left out)."""
    enabled = tuple(rule for rule in rules if rule.enabled)
    regexes, first_rules = regex_order(enabled)
    return RulePlan(enabled, regexes, first_rules, generate(enabled, regexes, first_rules))
