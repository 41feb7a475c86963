r"""A compiled form of the routing rules, so 100 rules cost little more per message than 10.

Testing rules one by one in Python costs a few microseconds per rule, more than parsing a small message
when there are a hundred of them. The plan, built once per :class:`~ticketmail.rules.RuleSet`, turns the
rule list into bit masks (bit *i* is rule *i*):

* every distinct condition is tested once per message, grouped by field, with list comprehensions over
  C-level ``in`` tests: each field's values are joined into one string ``"\\0v1\\0v2\\0"`` (``contains``
  is ``needle in joined``, ``starts_with`` is ``"\\0" + needle in joined``, ``ends_with`` is
  ``needle + "\\0" in joined``) and a set (``equals``). Condition values may not contain NUL, so no
  needle can span two values;
* a false condition clears the bits of the ``all`` rules that use it, a true one sets the bits of the
  ``any`` rules that use it; ``matched = (all_rules & ~failed) | hit | unconditional``;
* regex conditions run last, and only when some rule using them is still undecided;
* only the matched rules are then walked in order (actions, ``stop``, ``reject``), and only for them is the
  deciding value looked up again for the reason.

The result is exactly that of testing each rule in order (a hypothesis test compares both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import reduce
from itertools import compress
from operator import not_, or_

import attrs

from ticketmail.rules.routing import Condition, RegexTimeout, Rule

__all__ = ["RulePlan", "compile_rules"]


@attrs.frozen
class _Batch:
    """Conditions of one field and one comparison, tested together."""

    needles: tuple[str, ...]
    masks_all: tuple[int, ...]
    masks_any: tuple[int, ...]


@attrs.frozen
class _Group:
    """All non-regex conditions on one field (and case sensitivity)."""

    field: str
    case_sensitive: bool
    equals: _Batch
    not_equals: _Batch
    within: _Batch
    not_within: _Batch
    when_empty: tuple[bool, ...]


@attrs.frozen
class _RegexEntry:
    condition: Condition
    mask_all: int
    mask_any: int
    first_rule: str


@attrs.frozen
class RulePlan:
    """The compiled rule set (see the module docstring)."""

    rules: tuple[Rule, ...]
    groups: tuple[_Group, ...]
    regexes: tuple[_RegexEntry, ...]
    all_mask: int
    unconditional: int
    masks_all: tuple[int, ...]
    masks_any: tuple[int, ...]
    any_rules: bool

    def matching(
        self, values: Callable[[str], tuple[str, ...]], on_timeout: Callable[[RegexTimeout, str], None]
    ) -> Iterable[Rule]:
        """The rules that match, in order. ``values(field)`` gives a field's raw values."""
        truths: list[bool] = []
        for group in self.groups:
            raw = values(group.field)
            if not raw:  # no value: no positive test can hold, every negated one does
                truths += group.when_empty
                continue
            prepared = [v.strip() for v in raw] if group.case_sensitive else [v.casefold().strip() for v in raw]
            if group.equals.needles or group.not_equals.needles:
                present = set(prepared)
                truths += [n in present for n in group.equals.needles]
                truths += [n not in present for n in group.not_equals.needles]
            if group.within.needles or group.not_within.needles:
                joined = "\0" + "\0".join(prepared) + "\0"
                truths += [n in joined for n in group.within.needles]
                truths += [n not in joined for n in group.not_within.needles]
        # One C-level pass over all results: a false condition fails its "all" rules, a true one hits its "any" rules.
        failed = reduce(or_, compress(self.masks_all, map(not_, truths)), 0)
        hit = reduce(or_, compress(self.masks_any, truths), 0) if self.any_rules else 0
        for entry in self.regexes:
            if not (entry.mask_all & ~failed) and not (entry.mask_any & ~hit):
                continue  # every rule using it is already decided: skip the costly search
            try:
                ok = entry.condition.test(values(entry.condition.field))[0]
            except RegexTimeout as exc:
                on_timeout(exc, entry.first_rule)
                ok = False
            if ok:
                hit |= entry.mask_any
            else:
                failed |= entry.mask_all
        matched = (self.all_mask & ~failed) | hit | self.unconditional
        while matched:
            low = matched & -matched
            matched ^= low
            yield self.rules[low.bit_length() - 1]


def _needle(condition: Condition) -> str:
    base = condition.prepare((condition.value,))[0]
    positive = condition.op.removeprefix("not_")
    if positive == "starts_with":
        return "\0" + base
    if positive == "ends_with":
        return base + "\0"
    return base


def compile_rules(rules: Iterable[Rule]) -> RulePlan:
    """Build the plan for ``rules`` (disabled rules are left out)."""
    enabled = tuple(rule for rule in rules if rule.enabled)
    all_mask = 0
    unconditional = 0
    masks: dict[Condition, list[int]] = {}  # condition -> [mask_all, mask_any]
    first_rule: dict[Condition, str] = {}
    for index, rule in enumerate(enabled):
        bit = 1 << index
        if not rule.conditions:
            unconditional |= bit
            continue
        if rule.match == "all":
            all_mask |= bit
        for condition in rule.conditions:
            entry = masks.setdefault(condition, [0, 0])
            entry[0 if rule.match == "all" else 1] |= bit
            first_rule.setdefault(condition, rule.name)
    by_field: dict[tuple[str, bool], dict[str, list[tuple[str, int, int]]]] = {}
    regexes = []
    for condition, (mask_all, mask_any) in masks.items():
        if condition.pattern is not None:
            regexes.append(_RegexEntry(condition, mask_all, mask_any, first_rule[condition]))
            continue
        key = (condition.field, condition.case_sensitive)
        positive = condition.op.removeprefix("not_")
        slot = ("" if positive == "equals" else "in") + ("_neg" if condition.negated else "")
        by_field.setdefault(key, {}).setdefault(slot, []).append((_needle(condition), mask_all, mask_any))

    def batch(items: list[tuple[str, int, int]]) -> _Batch:
        return _Batch(
            needles=tuple(i[0] for i in items),
            masks_all=tuple(i[1] for i in items),
            masks_any=tuple(i[2] for i in items),
        )

    groups = []
    masks_all: list[int] = []
    masks_any: list[int] = []
    for key, slots in by_field.items():
        batches = [batch(slots.get(name, [])) for name in ("", "_neg", "in", "in_neg")]
        for item in batches:
            masks_all.extend(item.masks_all)
            masks_any.extend(item.masks_any)
        when_empty = tuple(
            [False] * len(batches[0].needles)
            + [True] * len(batches[1].needles)
            + [False] * len(batches[2].needles)
            + [True] * len(batches[3].needles)
        )
        groups.append(
            _Group(
                field=key[0],
                case_sensitive=key[1],
                equals=batches[0],
                not_equals=batches[1],
                within=batches[2],
                not_within=batches[3],
                when_empty=when_empty,
            )
        )
    return RulePlan(
        rules=enabled,
        groups=tuple(groups),
        regexes=tuple(regexes),
        all_mask=all_mask,
        unconditional=unconditional,
        masks_all=tuple(masks_all),
        masks_any=tuple(masks_any),
        any_rules=any(masks_any),
    )
