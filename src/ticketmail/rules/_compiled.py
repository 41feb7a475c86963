r"""The rule set as one generated Python function: the fast path of `RulePlan.matching()`.

Why generate code: evaluating a hundred rules in a loop costs a dozen interpreter steps per rule (fetch the
rule, its masks, compare, branch), which is what made 100 rules cost as much as parsing the message. A
function written for one rule set does the same work in straight-line code: every field is prepared once
(case-folded and trimmed, written as `"\0v1\0v2\0"`), every literal condition is one C-level `in`
test against a constant needle (`equals N` is `"\0N\0"`, `starts_with N` is `"\0N"`,
`ends_with N` is `"N\0"`), and every rule is one `if` over its conditions with Python's own
short-circuit `and`/`or`. Only the literals are embedded in the source, always through `repr()`.

Exactly the semantics of the reference matcher (`ticketmail.rules._reference`), which is the same loop
written plainly:

* within a rule, literal conditions come first and regex conditions after them in first-use order,
  with Python's short-circuit `and`/`or`; the regex searches go through the same `RegexRun` (each at
  most once per message, one budget per message, timeouts reported in first-use order);
* before a regex search, the pre-check `Condition.test()` would make per value is made once per field
  (every required text must occur in the field's ASCII text, else the search cannot match);
* a value containing NUL would break the encoding: the generated function then gives up
  (`Fallback`) and the reference decides the message;
* the body is prepared only when a rule reaches a body condition.

Why generated code: measured with `benchmarks/bench_rules.py` (100 rules), the routing step costs a tenth
of the reference's time and a third to a half of that of a bit-mask plan used before, so this is the one
fast path.

The generated source is kept on the function (`__source__`) for debugging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ticketmail.rules._reference import OnTimeout, RegexRun, Tested, Values
from ticketmail.rules.routing import REGEX_CHARS, SUBJECT_CHARS, Condition, Rule

__all__ = ["Fallback", "FastMatcher", "generate"]

FastMatcher = Callable[[Values, OnTimeout, Tested], list[int]]
"""`(values, on_timeout, tested) -> indexes of the matching enabled rules, in order`."""

_LAZY_FIELDS = frozenset({"body"})
"""Fields read and prepared only when a rule reaches a condition on them (long values)."""

_ANCHORS = {"equals": ("\0", "\0"), "starts_with": ("\0", ""), "ends_with": ("", "\0"), "contains": ("", "")}
"""How a prepared condition value becomes a needle in the `"\0v1\0v2\0"` text of a field."""


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

    Only for required texts without surrounding whitespace (see `_Writer`): for those, presence in
    `"\0" + value.lower().strip() + "\0"` and in `value.lower()` is the same thing.
    """
    if len(raw) == 1 and len(raw[0]) <= limit and raw[0].isascii():
        return text
    return _fold(raw, limit, case_sensitive)


def _lazy(var: str, expression: str) -> str:
    """`var`, computed by `expression` on first use (the variable starts as `None`)."""
    return f"({var} if {var} is not None else ({var} := {expression}))"


class _Writer:
    """Writes the source of the matcher for one rule set.

    Locals of the generated function: `r<n>` the raw values of a field, `t<n>` the prepared text of a
    (field, case sensitivity), `a<n>` the folded text for the regex pre-check of a (field, case sensitivity).
    """

    def __init__(self, rules: Sequence[Rule], regex_order: Sequence[Condition]) -> None:
        self.rules = rules
        self.regex_index = {condition: index for index, condition in enumerate(regex_order)}
        self.raws: dict[str, int] = {}
        self.groups: dict[tuple[str, bool], int] = {}
        self.folds: dict[tuple[str, bool], int] = {}
        # A regex field whose literal conditions already give a prepared text, and whose regexes' required
        # texts have no surrounding whitespace, can reuse that text for the pre-check when its one value is
        # short ASCII: there casefold() is lower(), and trimming cannot remove part of such a text.
        self.reusable: dict[tuple[str, bool], bool] = {}
        for rule in rules:
            for condition in rule.conditions:
                key = (condition.field, condition.case_sensitive)
                if condition.pattern is not None:
                    clean = all(text == text.strip() for text in condition.required_texts)
                    self.reusable[key] = self.reusable.get(key, True) and clean
                elif condition.field not in _LAZY_FIELDS:
                    self.group_var(key)

    def raw_var(self, field: str) -> str:
        number = self.raws.setdefault(field, len(self.raws))
        if field in _LAZY_FIELDS:
            return _lazy(f"r{number}", f"values({field!r})")
        return f"r{number}"

    def group_var(self, key: tuple[str, bool]) -> str:
        return f"t{self.groups.setdefault(key, len(self.groups))}"

    def literal(self, condition: Condition) -> str:
        """One literal condition: a substring test on the field's prepared text."""
        var = self.group_var((condition.field, condition.case_sensitive))
        if condition.field in _LAZY_FIELDS:
            var = _lazy(var, f"_text({self.raw_var(condition.field)}, {condition.case_sensitive!r})")
        before, after = _ANCHORS[condition.op.removeprefix("not_")]
        needle = before + condition.prepare((condition.value,))[0] + after
        if not needle:  # contains "": holds when the field has a value
            return f"(not {var})" if condition.negated else f"(not not {var})"
        return f"({needle!r} {'not in' if condition.negated else 'in'} {var})"

    def regex(self, condition: Condition) -> str:
        """One regex condition: the field's pre-check (once per message), then the search."""
        call = f"run({self.regex_index[condition]})"
        texts = condition.required_texts
        if not texts:
            return call
        key = (condition.field, condition.case_sensitive)
        var = f"a{self.folds.setdefault(key, len(self.folds))}"
        limit = SUBJECT_CHARS if condition.field == "subject" else REGEX_CHARS
        source = self.raw_var(condition.field)
        if self.reusable.get(key) and key in self.groups and key[0] not in _LAZY_FIELDS:
            fold = f"_fold_from({source}, t{self.groups[key]}, {limit}, {key[1]!r})"
        else:
            fold = f"_fold({source}, {limit}, {key[1]!r})"
        present = " and ".join(f"{text!r} in {var}" for text in texts)
        check = f"({_lazy(var, fold)} is False or ({present}))"
        return f"(not {check} or {call})" if condition.negated else f"({check} and {call})"

    def rule(self, number: int, rule: Rule) -> str:
        """The `if` of one rule: literal conditions first, then regexes in first-use order."""
        regexes = sorted((c for c in rule.conditions if c.pattern is not None), key=self.regex_index.__getitem__)
        parts = [self.literal(c) for c in rule.conditions if c.pattern is None] + [self.regex(c) for c in regexes]
        if not parts:
            return f"    matched.append({number})"
        joiner = " and " if rule.match == "all" else " or "
        return f"    if {joiner.join(parts)}:\n        matched.append({number})"

    def setup(self) -> list[str]:
        """Read the eager fields and prepare their texts; the lazy ones start as `None`."""
        texts = [  # before the raw values: this names the raw value of every prepared field
            f"    t{index} = None" if field in _LAZY_FIELDS else f"    t{index} = _text({self.raw_var(field)}, {cs!r})"
            for (field, cs), index in self.groups.items()
        ]
        raws = [
            f"    r{number} = None" if field in _LAZY_FIELDS else f"    r{number} = values({field!r})"
            for field, number in self.raws.items()
        ]
        return raws + texts + [f"    a{index} = None" for index in self.folds.values()]

    def source(self) -> str:
        body = [self.rule(number, rule) for number, rule in enumerate(self.rules)]  # first: it names the locals
        searches = bool(self.regex_index)  # without regex conditions there is nothing to run or report
        return "\n".join(
            [
                "def matcher(values, on_timeout, tested):",
                *(["    run = _Run(_regexes, values, tested)"] if searches else []),
                *self.setup(),
                "    matched = []",
                *body,
                *(["    if run.timeouts:", "        run.report(_first_rules, on_timeout)"] if searches else []),
                "    return matched",
            ]
        )


def generate(rules: Sequence[Rule], regex_order: Sequence[Condition], first_rules: Sequence[str]) -> FastMatcher:
    """Generate the matcher for the enabled `rules`; `regex_order`: the regex conditions in first-use order."""
    source = _Writer(rules, regex_order).source()
    namespace: dict[str, object] = {
        "_text": _text,
        "_fold": _fold,
        "_fold_from": _fold_from,
        "_Run": RegexRun,
        "_regexes": tuple(regex_order),
        "_first_rules": tuple(first_rules),
    }
    exec(compile(source, "<ticketmail rules>", "exec"), namespace)  # noqa: S102 - literals embedded via repr only
    matcher = namespace["matcher"]
    matcher.__source__ = source  # type: ignore[attr-defined]
    return matcher  # type: ignore[return-value]
