r"""The rule set as one generated Python function: the fast path of `RulePlan.matching()`.

Why generate code: evaluating a hundred rules in a loop costs a dozen interpreter steps per rule (fetch the
rule, its masks, compare, branch), which is what made 100 rules cost as much as parsing the message. A
function written for one rule set does the same work in straight-line code: every field is prepared once
(case-folded and trimmed, written as `"\0v1\0v2\0"`), every literal condition is one C-level `in`
test against a constant needle (`equals N` is `"\0N\0"`, `starts_with N` is `"\0N"`,
`ends_with N` is `"N\0"`), and every rule is one `if` over its conditions with Python's own
short-circuit `and`/`or`. Only the literals are embedded in the source, always through `repr()`.

Exactly the semantics of the plan (and so of one-by-one `Condition.test()`):

* within a rule, literal conditions come first and regex conditions after them in the plan's first-use
  order, so a regex runs exactly when the plan would run it (when some rule using it is undecided once
  literals and earlier regexes are known); each regex runs at most once per message;
* timeouts are reported in first-use order with the first rule using the regex, as the plan does, and
  count as "condition not met" for either polarity; once the message's regex budget
  (`REGEX_MESSAGE_BUDGET`) is spent, the remaining searches are not run and
  count as timeouts, as in the plan;
* a value containing NUL would break the encoding: the generated function then gives up
  (`Fallback`) and the plan's general path decides the message;
* the body is prepared only when a rule reaches a body condition.

The generated source is kept on the function (`__source__`) for debugging.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ticketmail.rules.routing import REGEX_CHARS, SUBJECT_CHARS, Condition, RegexTimeout, Rule

__all__ = ["REGEX_MESSAGE_BUDGET", "Fallback", "FastMatcher", "budget_message", "generate"]

REGEX_MESSAGE_BUDGET = 0.25
"""Seconds all the regex conditions of one message may spend together (each one also has its own deadline,
`REGEX_TIMEOUT`); once it is spent, the remaining regex conditions are not
searched and count as timed out ("not met", with a `rule.regex_timeout` reason)."""


def budget_message(condition: Condition) -> str:
    """The timeout text for a regex condition skipped because the message's regex budget is spent."""
    return (
        f"regex {condition.value[:60]!r} on {condition.field} not run: the message's regex budget of"
        f" {REGEX_MESSAGE_BUDGET}s is spent"
    )


FastMatcher = Callable[
    [Callable[[str], tuple[str, ...]], Callable[[RegexTimeout, str], None], "dict[Condition, tuple[bool, str | None]]"],
    list[int],
]
"""`(values, on_timeout, tested) -> indexes of the matching enabled rules, in order`."""

_LAZY_FIELDS = frozenset({"body"})


class Fallback(Exception):
    """A field value contains NUL: the generated matcher cannot decide this message."""


def _text(raw: tuple[str, ...], case_sensitive: bool) -> str:
    r"""The prepared field text `"\0v1\0v2\0"` (`""` for no value)."""
    if len(raw) == 1:
        value = raw[0].strip() if case_sensitive else raw[0].casefold().strip()
        if "\0" in value:
            raise Fallback
        return f"\0{value}\0"
    if not raw:
        return ""
    prepared = [v.strip() for v in raw] if case_sensitive else [v.casefold().strip() for v in raw]
    text = "\0" + "\0".join(prepared) + "\0"
    if text.count("\0") != len(prepared) + 1:
        raise Fallback
    return text


def _fold(raw: tuple[str, ...], limit: int, case_sensitive: bool) -> str | bool:
    """The values as regexes see them (cut to `limit`), lower-cased unless case-sensitive, joined with NUL.

    `False` when a value is not ASCII: `Condition.test()` makes no literal pre-check then.
    """
    if len(raw) == 1:
        text = raw[0][:limit]
        if not text.isascii():
            return False
        return text if case_sensitive else text.lower()
    cut = [value[:limit] for value in raw]
    if not all(map(str.isascii, cut)):
        return False
    text = "\0".join(cut)  # no required text contains NUL, so none can span two values
    return text if case_sensitive else text.lower()


def _fold_from(raw: tuple[str, ...], text: str, limit: int, case_sensitive: bool) -> str | bool:
    r"""`_fold()`, reusing the field's prepared text when its one value is ASCII and within `limit`.

    Only for required texts without surrounding whitespace (see `generate()`): for those, presence in
    `"\0" + value.lower().strip() + "\0"` and in `value.lower()` is the same thing.
    """
    if len(raw) == 1 and len(raw[0]) <= limit and raw[0].isascii():
        return text
    return _fold(raw, limit, case_sensitive)


def _regex_runner(
    conditions: Sequence[Condition],
) -> Callable[
    [Callable[[str], tuple[str, ...]], list[tuple[int, RegexTimeout]], dict[Condition, tuple[bool, str | None]]],
    Callable[[int], bool],
]:
    """A factory of per-message regex evaluators: each search runs at most once per message."""

    def start(
        values: Callable[[str], tuple[str, ...]],
        timeouts: list[tuple[int, RegexTimeout]],
        tested: dict[Condition, tuple[bool, str | None]],
    ) -> Callable[[int], bool]:
        memo: dict[int, bool] = {}
        budget: list[float] = []  # the message's regex deadline, set by the first search

        def run(index: int) -> bool:
            known = memo.get(index)
            if known is not None:
                return known
            condition = conditions[index]
            raw = values(condition.field)
            ok: bool
            try:
                if not budget:
                    budget.append(time.monotonic() + REGEX_MESSAGE_BUDGET)
                elif time.monotonic() >= budget[0]:
                    raise RegexTimeout(budget_message(condition))
                result = condition.test(raw)
            except RegexTimeout as exc:
                timeouts.append((index, exc))
                ok = False
                tested[condition] = (False, None)  # known "not met": explaining a match must not search again
            else:
                tested[condition] = result
                ok = result[0]
            memo[index] = ok
            return ok

        return run

    return start


def generate(rules: Sequence[Rule], regex_order: Sequence[Condition], first_rules: Sequence[str]) -> FastMatcher:
    """Generate the matcher for the enabled `rules`; `regex_order`: the regex conditions in first-use order."""
    groups: dict[tuple[str, bool], int] = {}
    raws: dict[str, int] = {}  # field -> number of its local "r<n>" (raw values)

    def raw_var(field: str) -> str:
        if field not in raws:
            raws[field] = len(raws)
        number = raws[field]
        if field in _LAZY_FIELDS:
            return f"(r{number} if r{number} is not None else (r{number} := values({field!r})))"
        return f"r{number}"

    regex_index = {condition: index for index, condition in enumerate(regex_order)}
    lines: list[str] = []

    def field_var(condition: Condition) -> str:
        key = (condition.field, condition.case_sensitive)
        if key not in groups:
            groups[key] = len(groups)
        return f"t{groups[key]}"

    def literal(condition: Condition) -> str:
        var = field_var(condition)
        if condition.field in _LAZY_FIELDS:
            cs = condition.case_sensitive
            var = f"({var} if {var} is not None else ({var} := _text({raw_var(condition.field)}, {cs!r})))"
        needle = condition.prepare((condition.value,))[0]
        op = condition.op.removeprefix("not_")
        if op == "equals":
            needle = f"\0{needle}\0"
        elif op == "starts_with":
            needle = "\0" + needle
        elif op == "ends_with":
            needle += "\0"
        if not needle:  # contains "": holds when the field has a value
            return f"(not {var})" if condition.negated else f"(not not {var})"
        return f"({needle!r} {'not in' if condition.negated else 'in'} {var})"

    folds: dict[tuple[str, bool], int] = {}
    # A regex field whose literal conditions already give a prepared text, and whose regexes' required texts
    # have no surrounding whitespace, can reuse that text for the pre-check when its one value is short
    # ASCII: there casefold() is lower(), and trimming cannot remove part of such a text.
    reusable: dict[tuple[str, bool], bool] = {}
    for rule in rules:
        for condition in rule.conditions:
            key = (condition.field, condition.case_sensitive)
            if condition.pattern is None and condition.field not in _LAZY_FIELDS:
                field_var(condition)
            elif condition.pattern is not None:
                clean = all(text == text.strip() for text in condition.required_texts)
                reusable[key] = reusable.get(key, True) and clean

    def regex(condition: Condition) -> str:
        call = f"run({regex_index[condition]})"
        texts = condition.required_texts
        if not texts:
            return call
        key = (condition.field, condition.case_sensitive)
        if key not in folds:
            folds[key] = len(folds)
        var = f"a{folds[key]}"
        limit = SUBJECT_CHARS if condition.field == "subject" else REGEX_CHARS
        source = raw_var(condition.field)
        if reusable.get(key) and key in groups and key[0] not in _LAZY_FIELDS:
            fold = f"_fold_from({source}, t{groups[key]}, {limit}, {key[1]!r})"
        else:
            fold = f"_fold({source}, {limit}, {key[1]!r})"
        folded = f"({var} if {var} is not None else ({var} := {fold}))"
        # Condition.test's pre-check, once per field: without its required texts an ASCII value cannot match.
        present = " and ".join(f"{text!r} in {var}" for text in texts)
        check = f"({folded} is False or ({present}))"
        return f"(not {check} or {call})" if condition.negated else f"({check} and {call})"

    for number, rule in enumerate(rules):
        literals = [literal(c) for c in rule.conditions if c.pattern is None]
        regexes = sorted((c for c in rule.conditions if c.pattern is not None), key=regex_index.__getitem__)
        parts = literals + [regex(c) for c in regexes]
        if not parts:
            lines.append(f"    matched.append({number})")
            continue
        joiner = " and " if rule.match == "all" else " or "
        lines.append(f"    if {joiner.join(parts)}:\n        matched.append({number})")
    prepare = []
    for (field, cs), index in groups.items():
        if field in _LAZY_FIELDS:
            prepare.append(f"    t{index} = None")
        else:
            prepare.append(f"    t{index} = _text({raw_var(field)}, {cs!r})")
    setup = [
        f"    r{number} = None" if field in _LAZY_FIELDS else f"    r{number} = values({field!r})"
        for field, number in raws.items()
    ]
    setup.extend(prepare)
    setup.extend(f"    a{index} = None" for index in folds.values())
    source = "\n".join(
        [
            "def matcher(values, on_timeout, tested):",
            "    timeouts = []",
            "    run = _start(values, timeouts, tested)",
            *setup,
            "    matched = []",
            *lines,
            "    if timeouts:",
            "        timeouts.sort(key=_first)",
            "        for index, exc in timeouts:",
            "            on_timeout(exc, _first_rules[index])",
            "    return matched",
        ]
    )
    namespace: dict[str, object] = {
        "_text": _text,
        "_fold": _fold,
        "_fold_from": _fold_from,
        "_start": _regex_runner(regex_order),
        "_first": _first,
        "_first_rules": tuple(first_rules),
    }
    exec(compile(source, "<ticketmail rules>", "exec"), namespace)  # noqa: S102 - literals embedded via repr only
    matcher = namespace["matcher"]
    matcher.__source__ = source  # type: ignore[attr-defined]
    return matcher  # type: ignore[return-value]


def _first(item: tuple[int, RegexTimeout]) -> int:
    return item[0]
