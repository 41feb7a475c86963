r"""A compiled form of the routing rules, so 100 rules cost little more per message than a handful.

Testing rules one by one in Python costs a few microseconds per rule, as much as parsing a small message
when there are a hundred of them. The plan, built once per `RuleSet`, works on
*tests* instead of rules:

* every distinct literal comparison (field, case sensitivity, operator, prepared value) is one *test*
  with one bit; `contains X` and `not_contains X` share the test `X in field` (a negated condition is
  the test's bit inverted), and equal conditions of different rules share it too;
* per field, the tests run in one pass over the field's values, each value case-folded and trimmed once:
  `equals` is one dict lookup per value, `starts_with`/`ends_with` one dict lookup per value and
  distinct needle length (`value[:n]`, `value[-n:]`), `contains` a C-level `in` per needle on the
  values joined with NUL (condition values may not contain NUL, so no needle spans two values);
* the body is *lazy*: its tests run only when a rule still needs them, because a body is long and most
  rules are decided by a cheaper field first;
* each rule is indexed under one *trigger* test that must hold for the rule to hold (for an `all` rule
  the first positive literal condition on a cheap field; for an `any` rule made only of such conditions,
  each of them). Ordinary mail sets few test bits, so only the few rules they trigger, plus the rules that
  cannot be indexed (only negated, regex or body conditions), are looked at; every other rule is known
  false without touching it;
* the remaining rules are decided by two integer ANDs each; regex conditions then run exactly as before
  (in first-use order, only while a rule using them is undecided, so `rule.regex_timeout` reasons are
  unchanged), and the matched rules are yielded in order.

The result is exactly that of testing each rule in order with `Condition.test()` (hypothesis tests in
`tests/rules/test_plan*.py` compare both over random rule sets and messages).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import attrs

from ticketmail.rules._compiled import REGEX_MESSAGE_BUDGET, Fallback, FastMatcher, budget_message, generate
from ticketmail.rules.routing import REGEX_CHARS, SUBJECT_CHARS, Condition, RegexTimeout, Rule

__all__ = ["RulePlan", "compile_rules"]

_LAZY_FIELDS = frozenset({"body"})
"""Fields whose tests run only when a still-undecided rule needs them (long values)."""

_BITS = bytes.maketrans(b"\x00\x01", b"01")

_EQUALS, _CONTAINS, _STARTS, _ENDS = 0, 1, 2, 3
_KINDS = {"equals": _EQUALS, "contains": _CONTAINS, "starts_with": _STARTS, "ends_with": _ENDS}
_COST = {_EQUALS: 0, _STARTS: 1, _ENDS: 1, _CONTAINS: 2}
"""Preferred trigger tests: a dict lookup per value is cheaper than a substring search."""


@attrs.frozen
class _Group:
    r"""All literal tests on one field (and case sensitivity), as substring needles of one string.

    The prepared values are written as `"\0v1\0v2\0"`; then `equals N` is the needle `"\0N\0"`,
    `starts_with N` is `"\0N"`, `ends_with N` is `"N\0"` and `contains N` is `"N"`. Condition
    values may not contain NUL, so a needle can only match inside one value, anchored where it says. Every
    needle of the field is then tested in one list comprehension of C-level `in` tests, and the results
    become the group's run of bits in one conversion (`bytes` -> `"0101"` -> `int`). A value that
    itself contains NUL would break the encoding; such a
    message takes the exact per-condition path (`slow_scan()`).
    """

    field: str
    case_sensitive: bool
    lazy: bool  # tested only when a rule needs it (see _LAZY_FIELDS)
    needles: tuple[str, ...]
    bits: tuple[int, ...]
    conditions: tuple[Condition, ...]  # one condition per needle (for slow_scan)
    mask: int  # every test of the group
    offset: int  # the bit of the first test; the others follow it

    def scan(self, raw: tuple[str, ...], wanted: int) -> int:
        """The bits of the tests that hold for the field values `raw` (a lazy group: only `wanted` ones)."""
        if not raw:
            return 0  # no value: no positive test holds (every negated one does)
        prepared = [v.strip() for v in raw] if self.case_sensitive else [v.casefold().strip() for v in raw]
        text = "\0" + "\0".join(prepared) + "\0"
        if text.count("\0") != len(prepared) + 1:
            return self.slow_scan(raw)
        if self.lazy:
            found = 0
            bits = self.bits
            for index, needle in enumerate(self.needles):
                if bits[index] & wanted and needle in text:
                    found |= bits[index]
            return found
        truths = [needle in text for needle in self.needles]
        if True not in truths:
            return 0
        return int(bytes(truths).translate(_BITS)[::-1], 2) << self.offset

    def slow_scan(self, raw: tuple[str, ...]) -> int:
        """The same as `scan()`, one condition at a time with `Condition.test()`."""
        found = 0
        for condition, bit in zip(self.conditions, self.bits, strict=True):
            if condition.test(raw)[0] != condition.negated:
                found |= bit
        return found


@attrs.frozen
class _RuleEntry:
    """What the plan needs of one rule: its bit and the tests its literal conditions use."""

    bit: int
    is_all: bool
    positive: int  # tests used by non-negated literal conditions
    negative: int  # tests used by negated literal conditions
    tests: int  # both


@attrs.frozen
class _RegexEntry:
    condition: Condition
    mask_all: int
    mask_any: int
    first_rule: str
    literals: int  # index of its _Literals in RulePlan.literals (when literal_mask is not 0)
    literal_mask: int  # the bits of its required texts, or 0 when it has none
    rules: int  # mask_all | mask_any


@attrs.frozen
class _Literals:
    """The required texts (`Condition.required_texts`) of the regexes on one field, checked in one pass.

    The same pre-check `Condition.test()` makes per value and regex (the pattern cannot match an ASCII
    value without its required text), once per message and field instead of once per regex.
    """

    field: str
    case_sensitive: bool
    limit: int  # regexes see value[:limit]
    needles: tuple[str, ...]
    mask: int
    offset: int  # the bit of the first needle; the others follow it

    def present(self, raw: tuple[str, ...]) -> int:
        """Bits of the texts found in some value; every bit when a value is not ASCII (no pre-check then)."""
        if len(raw) == 1:
            text = raw[0][: self.limit]
            if not text.isascii():
                return self.mask
        else:
            cut = [value[: self.limit] for value in raw]
            if not all(map(str.isascii, cut)):
                return self.mask
            text = "\0".join(cut)  # no required text contains NUL, so none can span two values
        if not self.case_sensitive:
            text = text.lower()
        truths = [needle in text for needle in self.needles]
        if True not in truths:
            return 0
        return int(bytes(truths).translate(_BITS)[::-1], 2) << self.offset


@attrs.frozen
class RulePlan:
    """The compiled rule set (see the module docstring)."""

    rules: tuple[Rule, ...]
    groups: tuple[_Group, ...]
    eager_mask: int  # tests run for every message: the triggers and the cheap tests of the "always" rules
    eager_groups: tuple[_Group, ...]  # the groups with eager tests
    entries: tuple[_RuleEntry | None, ...]  # by rule index; None for rules without conditions
    triggers: dict[int, int]  # test bit -> bits of the rules it triggers
    trigger_mask: int
    always: int  # rules that are looked at whatever the tests say
    regexes: tuple[_RegexEntry, ...]
    literals: tuple[_Literals, ...]
    regex_all: int
    regex_any: int
    all_mask: int
    unconditional: int
    fast: FastMatcher

    def matching(
        self,
        values: Callable[[str], tuple[str, ...]],
        on_timeout: Callable[[RegexTimeout, str], None],
        tested: dict[Condition, tuple[bool, str | None]] | None = None,
    ) -> Iterator[Rule]:
        """The rules that match, in order. `values(field)` gives a field's raw values.

        `tested`, when given, receives the `Condition.test()` results of the regex searches run (so the
        caller can explain a match without searching again).
        """
        try:  # the generated straight-line matcher (see ticketmail.rules._compiled)
            indexes = self.fast(values, on_timeout, {} if tested is None else tested)
        except Fallback:
            pass  # a value contains NUL: the general path below decides
        else:
            rules = self.rules
            for index in indexes:
                yield rules[index]
            return
        # 1. The eager tests (triggers, and what the rules looked at anyway need), on the fields that have them.
        found = 0
        known = self.eager_mask
        for group in self.eager_groups:
            found |= group.scan(values(group.field), known)
        candidates = self.always
        triggered = found & self.trigger_mask
        triggers = self.triggers
        while triggered:
            low = triggered & -triggered
            triggered ^= low
            candidates |= triggers[low]
        # 2. Decide the candidates with what is known; collect the tests the undecided ones still need.
        held = 0  # "all" rules whose literal conditions hold; every other "all" rule has failed
        hit = 0  # "any" rules with a literal condition that holds
        pending: list[_RuleEntry] = []
        wanted = 0
        entries = self.entries
        while candidates:
            low = candidates & -candidates
            candidates ^= low
            entry = entries[low.bit_length() - 1]
            if entry is None:
                continue
            positive = entry.positive & known
            negative = entry.negative & known
            if entry.is_all:
                if found & positive != positive or found & negative:
                    continue  # a known condition fails: the rule has failed
            elif found & positive or negative & ~found:
                hit |= low
                continue
            missing = entry.tests & ~known
            if missing:
                pending.append(entry)
                wanted |= missing
            elif entry.is_all:
                held |= low
        # 3. Run the missing tests, field by field, and decide the rest.
        if pending:
            for group in self.groups:
                if group.mask & wanted:
                    found |= group.scan(values(group.field), wanted)
            for entry in pending:
                positive, negative = entry.positive, entry.negative
                if entry.is_all:
                    if found & positive == positive and not found & negative:
                        held |= entry.bit
                elif found & positive or negative & ~found:
                    hit |= entry.bit
        failed = self.all_mask & ~held
        # 4. Regexes, in first-use order, each only while a rule using it is undecided.
        undecided = (self.regex_all & ~failed) | (self.regex_any & ~hit)
        if undecided:
            literals_known = literals_found = 0
            budget_end = time.monotonic() + REGEX_MESSAGE_BUDGET  # every regex of the message, together
            for regex in self.regexes:
                if not regex.rules & undecided:
                    continue  # every rule using it is already decided: skip the costly search
                condition = regex.condition
                raw = values(condition.field)
                need = regex.literal_mask
                if need and not need & literals_known:
                    literals = self.literals[regex.literals]
                    literals_found |= literals.present(raw)
                    literals_known |= literals.mask
                if need and literals_found & need != need:
                    ok = condition.negated  # no value can match: what Condition.test would find, cheaper
                else:
                    try:
                        if time.monotonic() >= budget_end:
                            raise RegexTimeout(budget_message(condition))
                        result = condition.test(raw)
                        ok = result[0]
                        if tested is not None:
                            tested[condition] = result
                    except RegexTimeout as exc:
                        on_timeout(exc, regex.first_rule)
                        ok = False
                        if tested is not None:  # known "not met": explaining a match must not search again
                            tested[condition] = (False, None)
                if ok:
                    hit |= regex.mask_any
                    undecided &= ~regex.mask_any
                else:
                    failed |= regex.mask_all
                    undecided &= ~regex.mask_all
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


def _group(field: str, case_sensitive: bool, tests: list[tuple[int, str, int, Condition]]) -> _Group:
    """The group of `tests` (kind, prepared needle, bit, a condition), whose bits are contiguous and ascending."""
    needles = []
    bits = []
    conditions = []
    mask = 0
    for kind, needle, bit, condition in tests:
        mask |= bit
        if kind == _EQUALS:
            needle = f"\0{needle}\0"
        elif kind == _STARTS:
            needle = f"\0{needle}"
        elif kind == _ENDS:
            needle = f"{needle}\0"
        needles.append(needle)
        bits.append(bit)
        conditions.append(condition)
    return _Group(
        field=field,
        case_sensitive=case_sensitive,
        lazy=field in _LAZY_FIELDS,
        needles=tuple(needles),
        bits=tuple(bits),
        conditions=tuple(conditions),
        mask=mask,
        offset=bits[0].bit_length() - 1,
    )


def compile_rules(rules: Iterable[Rule]) -> RulePlan:
    """Build the plan for `rules` (disabled rules are left out)."""
    enabled = tuple(rule for rule in rules if rule.enabled)
    # Test bits are numbered field by field, so a field's results are one contiguous run of bits.
    test_keys: dict[tuple[str, bool, int, str], Condition] = {}  # test -> a condition using it
    for rule in enabled:
        for condition in rule.conditions:
            if condition.pattern is None:
                test_keys.setdefault(_test_key(condition), condition)
    by_field: dict[tuple[str, bool], list[tuple[str, bool, int, str]]] = {}
    for key in test_keys:
        by_field.setdefault(key[:2], []).append(key)
    test_bits = {key: 1 << number for number, key in enumerate(k for keys in by_field.values() for k in keys)}
    regex_masks: dict[Condition, list[int]] = {}  # condition -> [mask_all, mask_any]
    first_rule: dict[Condition, str] = {}
    entries: list[_RuleEntry | None] = []
    triggers: dict[int, int] = {}
    always = all_mask = unconditional = regex_all = regex_any = 0
    for index, rule in enumerate(enabled):
        bit = 1 << index
        if not rule.conditions:
            unconditional |= bit
            entries.append(None)
            continue
        is_all = rule.match == "all"
        if is_all:
            all_mask |= bit
        positive = negative = 0
        cheap_positive: list[tuple[int, int]] = []  # (cost rank, test): trigger candidates
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
            test = test_bits[key]
            is_lazy = condition.field in _LAZY_FIELDS
            if condition.negated:
                negative |= test
                indexable = False
            else:
                positive |= test
                if is_lazy:
                    indexable = False
                else:
                    cheap_positive.append((_COST[key[2]], test))
        entries.append(
            _RuleEntry(bit=bit, is_all=is_all, positive=positive, negative=negative, tests=positive | negative)
        )
        if is_all and cheap_positive:
            trigger = min(cheap_positive)[1]  # a test of the cheapest kind
            triggers[trigger] = triggers.get(trigger, 0) | bit
        elif not is_all and indexable:
            for _, test in cheap_positive:
                triggers[test] = triggers.get(test, 0) | bit
        else:
            always |= bit
    groups = [
        _group(field, case_sensitive, [(key[2], key[3], test_bits[key], test_keys[key]) for key in keys])
        for (field, case_sensitive), keys in by_field.items()
    ]
    # Required texts of the regexes, field by field, numbered so a field's bits are one contiguous run.
    literal_tables: dict[tuple[str, bool], dict[str, int]] = {}
    for condition in regex_masks:
        for text in condition.required_texts:
            literal_tables.setdefault((condition.field, condition.case_sensitive), {})[text] = 0
    literal_count = 0
    for table in literal_tables.values():
        for text in table:
            table[text] = 1 << literal_count
            literal_count += 1
    where_index = {where: index for index, where in enumerate(literal_tables)}
    regexes = []
    for condition, (mask_all, mask_any) in regex_masks.items():
        where = (condition.field, condition.case_sensitive)
        need = sum(literal_tables[where][text] for text in condition.required_texts)
        regexes.append(
            _RegexEntry(
                condition,
                mask_all,
                mask_any,
                first_rule[condition],
                where_index.get(where, 0),
                need,
                mask_all | mask_any,
            )
        )
    literals = tuple(
        _Literals(
            field=field,
            case_sensitive=case_sensitive,
            limit=SUBJECT_CHARS if field == "subject" else REGEX_CHARS,
            needles=tuple(table),
            mask=sum(table.values()),
            offset=next(iter(table.values())).bit_length() - 1,
        )
        for (field, case_sensitive), table in literal_tables.items()
    )
    trigger_mask = 0
    for test in triggers:
        trigger_mask |= test
    lazy_tests = 0
    for group in groups:
        if group.field in _LAZY_FIELDS:
            lazy_tests |= group.mask
    eager_mask = trigger_mask
    for entry in entries:
        if entry is not None and entry.bit & always:
            eager_mask |= entry.tests & ~lazy_tests
    eager_groups = tuple(g for g in groups if g.mask & eager_mask)
    return RulePlan(
        rules=enabled,
        groups=tuple(groups),
        eager_mask=sum(g.mask for g in eager_groups),
        eager_groups=eager_groups,
        entries=tuple(entries),
        triggers=triggers,
        trigger_mask=trigger_mask,
        always=always,
        regexes=tuple(regexes),
        literals=literals,
        regex_all=regex_all,
        regex_any=regex_any,
        all_mask=all_mask,
        unconditional=unconditional,
        fast=generate(enabled, [r.condition for r in regexes], [r.first_rule for r in regexes]),
    )
