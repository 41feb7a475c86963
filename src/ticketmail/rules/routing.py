"""Routing rules: ordered conditions and actions, regexes guarded at load time.

A rule has conditions (combined with `all` or `any`; no condition means "always") and actions.
Rules run in order; each matching rule applies its actions, later rules overwrite scalar attributes set
by earlier ones and add to `tags`; `stop` ends the run; `reject` rejects and ends the run; `drop`
ignores the message silently (no ticket, no bounce; recorded with `drop_reason`) and ends the run.

Condition fields: `mailbox` (the mailbox name), `recipient` (envelope recipients, To and Cc),
`from` (sender address), `from_domain`, `from_name`, `to`, `cc`, `subject`, `body`,
`header:<Name>` (every value of that header). Multi-valued fields match when ANY value matches; a
`not_*` operator matches when NO value matches the positive operator (so `to not_contains "sales"`
means "no To address contains sales"). Comparisons are case-insensitive unless `case_sensitive`.

Regular expressions (`regex`/`not_regex`) search the value. Backtracking engines can take exponential
time on patterns such as `(a+)+$` and polynomial time on `.*a.*a.*b`; messages are attacker-controlled,
so three layers guard them:

1. At load time (`regex_problem()`): at most `MAX_PATTERN` characters; no repeated group that
   itself contains a repetition or an alternation (`(a+)+`, `(a|aa)*`); no backreferences; at most
   `MAX_UNBOUNDED` unbounded quantifiers. This removes the exponential cases.
2. At match time the subject is cut to `SUBJECT_CHARS` and any other value to `REGEX_CHARS`
   characters.
3. When the third-party `regex` package is installed, patterns are compiled with it and every condition
   has one `REGEX_TIMEOUT` deadline for all the values it examines (a header with 999 values gets
   the same budget as one value, not 999 of them); a condition that runs out raises `RegexTimeout`,
   and evaluation then treats the condition as not matching (whatever its polarity) and records a
   `rule.regex_timeout` reason. Without the package, the stdlib `re` is used and only layers 1 and
   2 apply, plus the same deadline checked between values: one polynomial search (`.*a.*a.*b`) on one
   crafted value can still cost seconds.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Mapping
from typing import Any, Literal, Protocol, cast

import attrs

from ticketmail.rules._regex_guard import MAX_PATTERN, MAX_UNBOUNDED, regex_problem, required_literal, required_literals


class _TimedPattern(Protocol):
    """A pattern compiled by the `regex` package: its search takes a timeout."""

    def search(self, string: str, *, timeout: float | None = None) -> object | None: ...


class _TimedEngine(Protocol):
    """What is used of the `regex` package: its flags and `compile`."""

    V0: int
    IGNORECASE: int

    def compile(self, pattern: str, flags: int = 0) -> _TimedPattern: ...


def _timed_engine() -> _TimedEngine | None:
    """The optional timeout-capable engine, when installed (see the module docstring)."""
    try:
        return cast("_TimedEngine", importlib.import_module("regex"))
    except ImportError:  # pragma: no cover - depends on the environment
        return None


_ENGINE = _timed_engine()

__all__ = [
    "FIELDS",
    "MAX_PATTERN",
    "MAX_UNBOUNDED",
    "OPERATORS",
    "REGEX_CHARS",
    "SUBJECT_CHARS",
    "Actions",
    "Condition",
    "RegexTimeout",
    "Rule",
    "regex_problem",
    "required_literal",
    "required_literals",
]

SUBJECT_CHARS = 1000
"""Regexes see at most this many characters of the subject."""
REGEX_CHARS = 8192
"""Regexes see at most this many characters of the body or of a header value."""
REGEX_TIMEOUT = 0.05
"""Seconds one regex condition may spend over all the values it examines (one deadline per condition)."""


class RegexTimeout(Exception):
    """A regex search ran out of its time budget (only with the `regex` package)."""


FIELDS: tuple[str, ...] = ("mailbox", "recipient", "from", "from_domain", "from_name", "to", "cc", "subject", "body")
"""Condition fields; plus `header:<Name>`."""

_POSITIVE = ("equals", "contains", "starts_with", "ends_with", "regex")
OPERATORS: tuple[str, ...] = (*_POSITIVE, *(f"not_{op}" for op in _POSITIVE))
"""Condition operators."""

Match = Literal["all", "any"]

_HEADER_NAME = re.compile(r"[!-9;-~]{1,200}")  # RFC 5322 section 3.6.8 field name: printable ASCII but ':'


@attrs.frozen
class Condition:
    """One test on a message field.

    Build through `ticketmail.rules.load_rules()` (which reports errors with file and rule names) or
    directly; the constructor validates and compiles the pattern, raising `ValueError`.
    """

    field: str
    op: str
    value: str
    case_sensitive: bool = False
    pattern: re.Pattern[str] | _TimedPattern | None = attrs.field(init=False, eq=False, repr=False)
    _kind: int = attrs.field(init=False, eq=False, repr=False)
    _negated: bool = attrs.field(init=False, eq=False, repr=False)
    _needle: str = attrs.field(init=False, eq=False, repr=False)
    _literal: str | None = attrs.field(init=False, eq=False, repr=False)
    _literals: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.field not in FIELDS and not (
            self.field.startswith("header:") and _HEADER_NAME.fullmatch(self.field[7:].strip())
        ):
            raise ValueError(f"unknown field {self.field!r}; expected one of {', '.join(FIELDS)} or header:<Name>")
        if self.op not in OPERATORS:
            raise ValueError(f"unknown operator {self.op!r}; expected one of {', '.join(OPERATORS)}")
        if "\0" in self.value:
            raise ValueError("a condition value may not contain NUL characters")
        pattern: re.Pattern[str] | _TimedPattern | None = None
        if self.op.endswith("regex"):
            problem = regex_problem(self.value)
            if problem:
                raise ValueError(f"pattern {self.value[:60]!r} {problem}")
            if _ENGINE is not None:
                flags = _ENGINE.V0 | (0 if self.case_sensitive else _ENGINE.IGNORECASE)
                pattern = _ENGINE.compile(self.value, flags)
            else:
                pattern = re.compile(self.value, 0 if self.case_sensitive else re.IGNORECASE)
        object.__setattr__(self, "pattern", pattern)
        literal = required_literal(self.value) if pattern is not None else None
        object.__setattr__(self, "_literal", literal if self.case_sensitive or literal is None else literal.lower())
        literals = required_literals(self.value) if pattern is not None else ()
        object.__setattr__(self, "_literals", literals if self.case_sensitive else tuple(t.lower() for t in literals))
        object.__setattr__(self, "_kind", _POSITIVE.index(self.op.removeprefix("not_")))
        object.__setattr__(self, "_negated", self.op.startswith("not_"))
        needle = self.value.strip() if self.case_sensitive else self.value.casefold().strip()
        object.__setattr__(self, "_needle", needle)

    def _may_match_text(self, text: str) -> bool:
        """The cheap pre-check: the pattern cannot match an ASCII text without its required literals."""
        literals = self._literals
        if literals and text.isascii():
            folded = text if self.case_sensitive else text.lower()
            for literal in literals:
                if literal not in folded:
                    return False
        return True

    def may_match(self, values: tuple[str, ...]) -> bool:
        """For a regex condition: False when the pre-check alone rules out every value.

        Then `test()` runs no search at all (and cannot time out); see `required_literals()`.
        """
        if not self._literals:
            return True
        limit = SUBJECT_CHARS if self.field == "subject" else REGEX_CHARS
        return any(self._may_match_text(value[:limit]) for value in values)

    def _search(self, text: str, timeout: float = REGEX_TIMEOUT) -> bool:
        if not self._may_match_text(text):
            return False
        pattern = self.pattern
        if pattern is None or isinstance(pattern, re.Pattern):  # the stdlib engine: no timeout
            return pattern is not None and pattern.search(text) is not None
        try:
            return pattern.search(text, timeout=timeout) is not None
        except TimeoutError as exc:
            raise RegexTimeout(f"regex {self.value[:60]!r} on {self.field} exceeded {REGEX_TIMEOUT}s") from exc

    @property
    def required_texts(self) -> tuple[str, ...]:
        """For a regex condition: the texts every match contains (lower case unless case-sensitive).

        `test()` skips the search when one of them is absent from an ASCII value (see
        `required_literals()`); the generated matcher makes that check once per message and field.
        """
        return self._literals

    @property
    def negated(self) -> bool:
        """True for the `not_*` operators."""
        return self._negated

    def prepare(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """The values as this condition compares them: trimmed, and case-folded unless case-sensitive."""
        if self.case_sensitive:
            return tuple(v.strip() for v in values)
        return tuple(v.casefold().strip() for v in values)

    def test(self, values: tuple[str, ...], prepared: tuple[str, ...] | None = None) -> tuple[bool, str | None]:
        """Apply the condition to a field's values: (matched, the value that decided it).

        Values are compared after trimming surrounding whitespace and, unless `case_sensitive`, after
        case folding; `prepared` may pass them already in that form (see `prepare()`).

        Raises:
            RegexTimeout: a regex search ran out of time (see the module docstring).
        """
        kind = self._kind
        hit = -1
        if kind == 4:
            limit = SUBJECT_CHARS if self.field == "subject" else REGEX_CHARS
            deadline = time.monotonic() + REGEX_TIMEOUT  # one deadline for all the values
            for index, value in enumerate(values):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RegexTimeout(
                        f"regex {self.value[:60]!r} on {self.field} exceeded {REGEX_TIMEOUT}s"
                        f" after {index} of {len(values)} values"
                    )
                if self._search(value[:limit], remaining):
                    hit = index
                    break
        else:
            if prepared is None:
                prepared = self.prepare(values)
            needle = self._needle
            for index, candidate in enumerate(prepared):
                if kind == 1:
                    ok = needle in candidate
                elif kind == 0:
                    ok = candidate == needle
                elif kind == 2:
                    ok = candidate.startswith(needle)
                else:
                    ok = candidate.endswith(needle)
                if ok:
                    hit = index
                    break
        if self._negated:
            return hit < 0, (values[hit] if hit >= 0 else (values[0] if values else None))
        return hit >= 0, (values[hit] if hit >= 0 else None)


@attrs.frozen
class Actions:
    """What a matching rule does. `None`/empty means "leave unchanged"."""

    department: str | None = None
    team: str | None = None
    category: str | None = None
    priority: int | None = None
    topic_id: int | None = None
    assignee: str | None = None
    tags: tuple[str, ...] = ()
    custom: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    reject: bool = False
    reject_reason: str | None = None
    drop: bool = False
    drop_reason: str | None = None
    skip_autorespond: bool = False
    stop: bool = False


@attrs.frozen
class Rule:
    """A named, ordered routing rule."""

    name: str
    conditions: tuple[Condition, ...] = ()
    match: Match = "all"
    actions: Actions = attrs.field(factory=Actions)
    enabled: bool = True
