r"""A compiled form of the routing rules, so 100 rules cost little more per message than 10.

Testing rules one by one in Python costs a few microseconds per rule, more than parsing a small message
when there are a hundred of them. The plan, built once per :class:`~ticketmail.rules.RuleSet`, turns the
rule list into bit masks:

* every distinct condition is tested once per message, grouped by field, with list comprehensions over
  C-level ``in`` tests: each field's values are joined into one string ``"\\0v1\\0v2\\0"`` (``contains``
  is ``needle in joined``, ``starts_with`` is ``"\\0" + needle in joined``, ``ends_with`` is
  ``needle + "\\0" in joined``) and a set (``equals``). Condition values may not contain NUL, so no
  needle can span two values;
* the results become one integer (bit *c* set when condition *c* holds); each rule keeps the mask of its
  conditions, so an ``all`` rule holds when ``tested & mask == mask`` and an ``any`` rule when
  ``tested & mask`` is not zero: one integer AND per rule;
* regex conditions run last, and only when some rule using them is still undecided;
* only the matched rules are then walked in order (actions, ``stop``, ``reject``), and only for them is the
  deciding value looked up again for the reason.

The result is exactly that of testing each rule in order (a hypothesis test compares both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from ticketmail.rules.routing import Condition, RegexTimeout, Rule

__all__ = ["RulePlan", "compile_rules"]

_BITS = bytes.maketrans(b"\x00\x01", b"01")


@attrs.frozen
class _Batch:
    """Conditions of one field and one comparison, tested together."""

    needles: tuple[str, ...]


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
    all_rules: tuple[tuple[int, int], ...]
    any_rules: tuple[tuple[int, int], ...]

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
        # The results as one integer (bit i = condition i), then one AND per rule: an "all" rule holds when all
        # its condition bits are set, an "any" rule when one is. Rule bits are distinct, so sum() is their OR.
        tested = int(bytes(truths).translate(_BITS)[::-1], 2) if truths else 0
        held = sum(bit for mask, bit in self.all_rules if tested & mask == mask)
        failed = self.all_mask & ~held
        hit = sum(bit for mask, bit in self.any_rules if tested & mask)
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
    by_field: dict[tuple[str, bool], dict[str, list[str]]] = {}
    slot_conditions: dict[tuple[str, bool], dict[str, list[Condition]]] = {}
    regexes = []
    for condition, (mask_all, mask_any) in masks.items():
        if condition.pattern is not None:
            regexes.append(_RegexEntry(condition, mask_all, mask_any, first_rule[condition]))
            continue
        key = (condition.field, condition.case_sensitive)
        positive = condition.op.removeprefix("not_")
        slot = ("" if positive == "equals" else "in") + ("_neg" if condition.negated else "")
        by_field.setdefault(key, {}).setdefault(slot, []).append(_needle(condition))
        slot_conditions.setdefault(key, {}).setdefault(slot, []).append(condition)

    def batch(items: list[str]) -> _Batch:
        return _Batch(needles=tuple(items))

    groups = []
    position: dict[Condition, int] = {}  # condition -> its index in the truths list
    for key, slots in by_field.items():
        batches = [batch(slots.get(name, [])) for name in ("", "_neg", "in", "in_neg")]
        for name in ("", "_neg", "in", "in_neg"):
            for condition in slot_conditions[key].get(name, []):
                position[condition] = len(position)
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
    all_rules: list[tuple[int, int]] = []
    any_rules: list[tuple[int, int]] = []
    for index, rule in enumerate(enabled):
        if not rule.conditions:
            continue
        mask = 0
        for condition in rule.conditions:
            if condition in position:
                mask |= 1 << position[condition]
        (all_rules if rule.match == "all" else any_rules).append((mask, 1 << index))
    return RulePlan(
        rules=enabled,
        groups=tuple(groups),
        regexes=tuple(regexes),
        all_mask=all_mask,
        unconditional=unconditional,
        all_rules=tuple(all_rules),
        any_rules=tuple(any_rules),
    )
