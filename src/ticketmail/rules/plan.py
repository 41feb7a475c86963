r"""A compiled form of the routing rules, so 100 rules cost little more per message than a handful.

Testing rules one by one in Python costs a few microseconds per rule, as much as parsing a small message
when there are a hundred of them. The plan, built once per :class:`~ticketmail.rules.RuleSet`, works on
*tests* instead of rules:

* every distinct literal comparison (field, case sensitivity, operator, prepared value) is one *test*
  with one bit; ``contains X`` and ``not_contains X`` share the test ``X in field`` (a negated condition is
  the test's bit inverted), and equal conditions of different rules share it too;
* per field, the tests run in one pass over the field's values, each value case-folded and trimmed once:
  ``equals`` is one dict lookup per value, ``starts_with``/``ends_with`` one dict lookup per value and
  distinct needle length (``value[:n]``, ``value[-n:]``), ``contains`` a C-level ``in`` per needle on the
  values joined with NUL (condition values may not contain NUL, so no needle spans two values);
* the body is *lazy*: its tests run only when a rule still needs them, because a body is long and most
  rules are decided by a cheaper field first;
* each rule is indexed under one *trigger* test that must hold for the rule to hold (for an ``all`` rule
  the first positive literal condition on a cheap field; for an ``any`` rule made only of such conditions,
  each of them). Ordinary mail sets few test bits, so only the few rules they trigger, plus the rules that
  cannot be indexed (only negated, regex or body conditions), are looked at; every other rule is known
  false without touching it;
* the remaining rules are decided by two integer ANDs each; regex conditions then run exactly as before
  (in first-use order, only while a rule using them is undecided, so ``rule.regex_timeout`` reasons are
  unchanged), and the matched rules are yielded in order.

The result is exactly that of testing each rule in order with :meth:`Condition.test` (hypothesis tests in
``tests/rules/test_plan*.py`` compare both over random rule sets and messages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import attrs

from ticketmail.rules.routing import REGEX_CHARS, SUBJECT_CHARS, Condition, RegexTimeout, Rule

__all__ = ["RulePlan", "compile_rules"]

_LAZY_FIELDS = frozenset({"body"})
"""Fields whose tests run only when a still-undecided rule needs them (long values)."""

_EQUALS, _CONTAINS, _STARTS, _ENDS = 0, 1, 2, 3
_KINDS = {"equals": _EQUALS, "contains": _CONTAINS, "starts_with": _STARTS, "ends_with": _ENDS}


@attrs.frozen
class _Group:
    """All literal tests on one field (and case sensitivity), as lookup tables from prepared values to bits."""

    field: str
    case_sensitive: bool
    equals: dict[str, int]
    starts: tuple[tuple[int, dict[str, int]], ...]
    ends: tuple[tuple[int, dict[str, int]], ...]
    contains: tuple[tuple[str, int], ...]
    nonempty: int  # tests that hold for any value: contains/starts_with/ends_with of ""
    mask: int  # every test of the group

    def scan(self, raw: tuple[str, ...], wanted: int = -1) -> int:
        """The bits of the tests (among ``wanted``) that hold for the field values ``raw``."""
        if not raw:
            return 0  # no value: no positive test holds (every negated one does)
        prepared = [v.strip() for v in raw] if self.case_sensitive else [v.casefold().strip() for v in raw]
        found = self.nonempty
        equals = self.equals
        if equals:
            for value in prepared:
                found |= equals.get(value, 0)
        for length, table in self.starts:
            for value in prepared:
                found |= table.get(value[:length], 0)
        for length, table in self.ends:
            for value in prepared:
                found |= table.get(value[-length:], 0)
        if self.contains:
            joined = prepared[0] if len(prepared) == 1 else "\0".join(prepared)
            for needle, bit in self.contains:
                if bit & wanted and needle in joined:
                    found |= bit
        return found


@attrs.frozen
class _RuleEntry:
    """What the plan needs of one rule: its bit and the tests its literal conditions use."""

    bit: int
    is_all: bool
    positive: int  # tests used by non-negated literal conditions
    negative: int  # tests used by negated literal conditions
    lazy: int  # of those, tests in lazy groups


@attrs.frozen
class _RegexEntry:
    condition: Condition
    mask_all: int
    mask_any: int
    first_rule: str
    literal: str | None  # Condition.required_text: a text every match contains, or None
    limit: int  # how much of each value the regex sees


def _literal_absent(
    regex: _RegexEntry, raw: tuple[str, ...], lowered: dict[tuple[str, int], tuple[str, ...] | None]
) -> bool:
    """Whether no value can match ``regex`` because its required literal is absent (Condition's pre-check).

    The same test as :meth:`Condition._search` makes per value, with each field's values cut and
    lower-cased once per message instead of once per regex. ``None`` in the cache: a value is not ASCII, so
    the pre-check does not apply.
    """
    condition = regex.condition
    key = (condition.field, regex.limit if not condition.case_sensitive else -regex.limit)
    texts = lowered.get(key, ())
    if texts == ():
        cut = [value[: regex.limit] for value in raw]
        if all(text.isascii() for text in cut):
            texts = tuple(cut) if condition.case_sensitive else tuple(text.lower() for text in cut)
        else:
            texts = None
        lowered[key] = texts
    if texts is None:
        return False
    literal = regex.literal
    return all(literal not in text for text in texts)  # type: ignore[operator]


@attrs.frozen
class RulePlan:
    """The compiled rule set (see the module docstring)."""

    rules: tuple[Rule, ...]
    eager: tuple[_Group, ...]
    lazy: tuple[_Group, ...]
    entries: tuple[_RuleEntry | None, ...]  # by rule index; None for rules without conditions
    triggers: dict[int, int]  # test bit -> bits of the rules it triggers
    trigger_mask: int
    always: int  # rules that are looked at whatever the tests say
    regexes: tuple[_RegexEntry, ...]
    regex_all: int
    regex_any: int
    all_mask: int
    unconditional: int

    def matching(
        self, values: Callable[[str], tuple[str, ...]], on_timeout: Callable[[RegexTimeout, str], None]
    ) -> Iterator[Rule]:
        """The rules that match, in order. ``values(field)`` gives a field's raw values."""
        found = 0
        for group in self.eager:
            found |= group.scan(values(group.field))
        candidates = self.always
        triggered = found & self.trigger_mask
        triggers = self.triggers
        while triggered:
            low = triggered & -triggered
            triggered ^= low
            candidates |= triggers[low]
        held = 0  # "all" rules whose literal conditions hold; the other "all" rules have failed
        hit = 0  # "any" rules with a literal condition that holds
        pending: list[_RuleEntry] = []  # rules that need lazy tests to be decided
        lazy_wanted = 0
        entries = self.entries
        while candidates:
            low = candidates & -candidates
            candidates ^= low
            entry = entries[low.bit_length() - 1]
            if entry is None:
                continue
            eager_positive = entry.positive & ~entry.lazy
            eager_negative = entry.negative & ~entry.lazy
            if entry.is_all:
                if found & eager_positive != eager_positive or found & eager_negative:
                    continue  # an eager condition fails: the rule has failed
                if not entry.lazy:
                    held |= low
                    continue
            elif found & eager_positive or eager_negative & ~found:
                hit |= low
                continue
            elif not entry.lazy:
                continue
            pending.append(entry)
            lazy_wanted |= entry.lazy
        if pending:
            for group in self.lazy:
                if group.mask & lazy_wanted:
                    found |= group.scan(values(group.field), lazy_wanted)
            for entry in pending:
                positive, negative = entry.positive, entry.negative
                if entry.is_all:
                    if found & positive == positive and not found & negative:
                        held |= entry.bit
                elif found & positive or negative & ~found:
                    hit |= entry.bit
        failed = self.all_mask & ~held
        if (self.regex_all & ~failed) or (self.regex_any & ~hit):
            lowered: dict[tuple[str, int], tuple[str, ...] | None] = {}
            for regex in self.regexes:
                if not (regex.mask_all & ~failed) and not (regex.mask_any & ~hit):
                    continue  # every rule using it is already decided: skip the costly search
                condition = regex.condition
                raw = values(condition.field)
                if regex.literal is not None and _literal_absent(regex, raw, lowered):
                    ok = condition.negated  # no value can match: what Condition.test would find, cheaper
                else:
                    try:
                        ok = condition.test(raw)[0]
                    except RegexTimeout as exc:
                        on_timeout(exc, regex.first_rule)
                        ok = False
                if ok:
                    hit |= regex.mask_any
                else:
                    failed |= regex.mask_all
        matched = (self.all_mask & ~failed) | hit | self.unconditional
        rules = self.rules
        while matched:
            low = matched & -matched
            matched ^= low
            yield rules[low.bit_length() - 1]


def _test_key(condition: Condition) -> tuple[str, bool, int, str]:
    """The literal test behind a condition: (field, case_sensitive, kind, prepared needle)."""
    needle = condition.prepare((condition.value,))[0]
    kind = _KINDS[condition.op.removeprefix("not_")]
    return condition.field, condition.case_sensitive, kind, needle


def _group(field: str, case_sensitive: bool, tests: dict[tuple[int, str], int]) -> _Group:
    equals: dict[str, int] = {}
    starts: dict[int, dict[str, int]] = {}
    ends: dict[int, dict[str, int]] = {}
    contains: list[tuple[str, int]] = []
    nonempty = 0
    mask = 0
    for (kind, needle), bit in tests.items():
        mask |= bit
        if kind == _EQUALS:
            equals[needle] = bit
        elif not needle:
            nonempty |= bit
        elif kind == _CONTAINS:
            contains.append((needle, bit))
        else:
            (starts if kind == _STARTS else ends).setdefault(len(needle), {})[needle] = bit
    return _Group(
        field=field,
        case_sensitive=case_sensitive,
        equals=equals,
        starts=tuple(sorted(starts.items())),
        ends=tuple(sorted(ends.items())),
        contains=tuple(contains),
        nonempty=nonempty,
        mask=mask,
    )


def compile_rules(rules: Iterable[Rule]) -> RulePlan:
    """Build the plan for ``rules`` (disabled rules are left out)."""
    enabled = tuple(rule for rule in rules if rule.enabled)
    test_bits: dict[tuple[str, bool, int, str], int] = {}
    regex_masks: dict[Condition, list[int]] = {}  # condition -> [mask_all, mask_any]
    first_rule: dict[Condition, str] = {}
    entries: list[_RuleEntry | None] = []
    triggers: dict[int, int] = {}
    always = all_mask = unconditional = regex_all = regex_any = 0
    lazy_bits = 0
    for index, rule in enumerate(enabled):
        bit = 1 << index
        if not rule.conditions:
            unconditional |= bit
            entries.append(None)
            continue
        is_all = rule.match == "all"
        if is_all:
            all_mask |= bit
        positive = negative = lazy = 0
        cheap_positive: list[int] = []  # trigger candidates, in condition order
        indexable = True  # an "any" rule: every condition a positive literal on a cheap field
        for condition in rule.conditions:
            if condition.pattern is not None:
                masks = regex_masks.setdefault(condition, [0, 0])
                masks[0 if is_all else 1] |= bit
                first_rule.setdefault(condition, rule.name)
                if is_all:
                    regex_all |= bit
                else:
                    regex_any |= bit
                indexable = False
                continue
            key = _test_key(condition)
            test = test_bits.setdefault(key, 1 << len(test_bits))
            is_lazy = condition.field in _LAZY_FIELDS
            if is_lazy:
                lazy |= test
                lazy_bits |= test
            if condition.negated:
                negative |= test
                indexable = False
            else:
                positive |= test
                if is_lazy:
                    indexable = False
                else:
                    cheap_positive.append(test)
        entries.append(_RuleEntry(bit=bit, is_all=is_all, positive=positive, negative=negative, lazy=lazy))
        if is_all and cheap_positive:
            triggers[cheap_positive[0]] = triggers.get(cheap_positive[0], 0) | bit
        elif not is_all and indexable:
            for test in cheap_positive:
                triggers[test] = triggers.get(test, 0) | bit
        else:
            always |= bit
    by_group: dict[tuple[str, bool], dict[tuple[int, str], int]] = {}
    for (field, case_sensitive, kind, needle), test in test_bits.items():
        by_group.setdefault((field, case_sensitive), {})[(kind, needle)] = test
    groups = [_group(field, case_sensitive, tests) for (field, case_sensitive), tests in by_group.items()]
    regexes = tuple(
        _RegexEntry(
            condition,
            mask_all,
            mask_any,
            first_rule[condition],
            condition.required_text,
            SUBJECT_CHARS if condition.field == "subject" else REGEX_CHARS,
        )
        for condition, (mask_all, mask_any) in regex_masks.items()
    )
    trigger_mask = 0
    for test in triggers:
        trigger_mask |= test
    return RulePlan(
        rules=enabled,
        eager=tuple(g for g in groups if not g.mask & lazy_bits),
        lazy=tuple(g for g in groups if g.mask & lazy_bits),
        entries=tuple(entries),
        triggers=triggers,
        trigger_mask=trigger_mask,
        always=always,
        regexes=regexes,
        regex_all=regex_all,
        regex_any=regex_any,
        all_mask=all_mask,
        unconditional=unconditional,
    )
