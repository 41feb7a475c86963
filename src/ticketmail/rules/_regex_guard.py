"""The load-time guard on rule regexes, and the literal texts every match of a pattern must contain.

Both read the pattern once, left to right, atom by atom (a character, an escape, a class, a group) with
the quantifier that follows it; neither runs the pattern. See `ticketmail.rules.routing` for how the
guard fits with the match-time limits.
"""

from __future__ import annotations

import re

__all__ = ["MAX_PATTERN", "MAX_UNBOUNDED", "regex_problem", "required_literal", "required_literals"]

MAX_PATTERN = 500
"""Longest accepted regular expression."""
MAX_UNBOUNDED = 3
"""Most unbounded quantifiers (`*`, `+`, `{n,}`, `{n,m}` with m > 100) in one pattern."""
def _quantifier(pattern: str, index: int) -> tuple[str | None, int]:
    """Read a quantifier at `index`: returns (`"repeat"`, `"unbounded"`, `"optional"` or None, next index)."""
    if index >= len(pattern):
        return None, index
    char = pattern[index]
    kind: str | None = None
    if char in "*+":
        kind, index = "unbounded", index + 1
    elif char == "?":
        kind, index = "optional", index + 1
    elif char == "{":
        close = pattern.find("}", index)
        body = pattern[index + 1 : close] if close != -1 else ""
        low, comma, high = body.partition(",")
        if close != -1 and low.strip().isdigit() and (not comma or not high.strip() or high.strip().isdigit()):
            if comma and not high.strip():
                kind = "unbounded"
            else:
                top = int(high) if comma else int(low)
                kind = "unbounded" if top > 100 else ("repeat" if top > 1 else "optional")
            index = close + 1
    if kind is not None and index < len(pattern) and pattern[index] in "?+":
        index += 1  # lazy or possessive modifier
    return kind, index


def _group_prefix_end(pattern: str, index: int) -> int:
    """Skip `?:`, `?=`, `?!`, `?<=`, `?<!`, `?P<name>`, `?i:` after an opening parenthesis."""
    if index >= len(pattern) or pattern[index] != "?":
        return index
    index += 1
    if pattern.startswith(("<=", "<!"), index):
        return index + 2
    if pattern.startswith("P<", index) or pattern.startswith("<", index):
        close = pattern.find(">", index)
        return close + 1 if close != -1 else len(pattern)
    while index < len(pattern) and (pattern[index].isalpha() or pattern[index] == "-"):
        index += 1
    if index < len(pattern) and pattern[index] in ":=!":
        index += 1
    return index


_REPEATING = ("repeat", "unbounded")
_BACKREFERENCE = "uses a backreference, which is not allowed"


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` is refused (a sentence), or `None` when it is accepted. See the module docstring."""
    if len(pattern) > MAX_PATTERN:
        return f"is {len(pattern)} characters long; at most {MAX_PATTERN} are allowed"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"is not a valid regular expression ({exc})"
    return _structure_problem(pattern)


def _structure_problem(pattern: str) -> str | None:
    """The backreference, nested repetition or unbounded-quantifier count that refuses a valid `pattern`."""
    # Per open group: [contains a repetition, contains an alternation].
    stack: list[list[bool]] = [[False, False]]
    unbounded = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if _backreference_at(pattern, index):
            return _BACKREFERENCE
        if char == "(":
            stack.append([False, False])
            index = _group_prefix_end(pattern, index + 1)
            continue
        if char == "|":
            stack[-1][1] = True
            index += 1
            continue
        kind, index = _quantifier(pattern, index + 1 if char == ")" else _atom_end(pattern, index))
        if char == ")":
            problem = _close_group(stack, kind)
            if problem:
                return problem
        if kind in _REPEATING:
            stack[-1][0] = True
        unbounded += kind == "unbounded"
        if unbounded > MAX_UNBOUNDED:
            return f"has more than {MAX_UNBOUNDED} unbounded quantifiers"
    return None


def _backreference_at(pattern: str, index: int) -> bool:
    r"""Whether a backreference (`\1`, `\g<name>`, `(?P=name)`) starts at `index`."""
    if pattern.startswith("(?P=", index):
        return True
    if pattern[index] != "\\":
        return False
    following = pattern[index + 1 : index + 2]
    return (following.isdigit() and following != "0") or pattern.startswith("g<", index + 1)


def _close_group(stack: list[list[bool]], kind: str | None) -> str | None:
    """Close the innermost group, repeated as `kind` says: refused when it repeats a repetition or an alternation."""
    inner_repeat, inner_alt = stack.pop() if len(stack) > 1 else [False, False]
    if kind in _REPEATING and (inner_repeat or inner_alt):
        what = "a repetition" if inner_repeat else "an alternation"
        return f"repeats a group that contains {what} (catastrophic backtracking risk)"
    stack[-1][0] = stack[-1][0] or inner_repeat
    return None


def _class_end(pattern: str, index: int) -> int:
    """The index just after the character class that starts at `index` (a `[`)."""
    index += 1
    if pattern.startswith("^", index):
        index += 1
    if pattern.startswith("]", index):
        index += 1
    while index < len(pattern) and pattern[index] != "]":
        index += 2 if pattern[index] == "\\" else 1
    return index + 1


def _group_end(pattern: str, index: int) -> int:
    """The index just after the group that starts at `index` (a `(`), nested groups included."""
    depth = 0
    while index < len(pattern):
        if pattern[index] == "\\":
            index += 2
            continue
        depth += {"(": 1, ")": -1}.get(pattern[index], 0)
        index += 1
        if depth == 0:
            break
    return index


def _atom_end(pattern: str, index: int) -> int:
    """The index just after the escape, character class or single character at `index` (not a group)."""
    char = pattern[index]
    if char == "\\":
        return index + 2
    if char == "[":
        return _class_end(pattern, index)
    return index + 1


_LITERAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-:@#/,;'\"=<>!%&~`")
_ESCAPED_LITERALS = frozenset(".-:@#/,;'\"=<>!%&~`[](){}*+?|^$\\ ")


def required_literal(pattern: str) -> str | None:
    r"""An ASCII text every match of `pattern` must contain (at least 3 characters), or `None`.

    Conservative: only top-level runs of plain characters count; groups, classes, escapes such as
    `\s`, optional or repeated characters end a run; a pattern with `|` or inline flags gives `None`.
    Used to skip a regex search when the literal is absent from an ASCII text (searching for a substring is
    much cheaper than starting the regex engine).
    """
    runs = _literal_runs(pattern)
    if not runs:
        return None
    best = max(runs, key=len)
    return best if len(best) >= 3 else None


def required_literals(pattern: str) -> tuple[str, ...]:
    r"""Every ASCII text of at least 3 characters that every match of `pattern` must contain.

    The top-level runs `required_literal()` chooses its longest from: `\binvoice\s+overdue\b`
    gives `("invoice", "overdue")`. A match contains all of them, so a search can be skipped when any one
    is absent from an ASCII text.
    """
    return tuple(dict.fromkeys(run for run in _literal_runs(pattern) if len(run) >= 3))


def _literal_runs(pattern: str) -> list[str]:
    """The top-level runs of plain characters of `pattern` (empty for `|` or inline flags).

    The pattern is read atom by atom (a character, an escape, a class, a whole group); a run grows by
    each plain character that no quantifier follows and ends at anything else.
    """
    if "|" in pattern or "(?" in pattern.replace("(?:", ""):
        return []
    runs: list[str] = []
    run: list[str] = []
    index = 0
    while index < len(pattern):
        literal, end = _atom(pattern, index)
        kind, index = _quantifier(pattern, end)
        if literal is not None and kind is None:
            run.append(literal)
        else:  # the quantified character is optional (or its count unknown); anything else is not plain
            runs.append("".join(run))
            run = []
    runs.append("".join(run))
    return runs


def _atom(pattern: str, index: int) -> tuple[str | None, int]:
    """(the plain character the atom at `index` stands for, or `None`; the index after the atom)."""
    char = pattern[index]
    if char == "\\" and index + 1 < len(pattern) and pattern[index + 1] in _ESCAPED_LITERALS:
        return pattern[index + 1], index + 2
    if char in _LITERAL_CHARS:
        return char, index + 1
    if char == "(":
        return None, _group_end(pattern, index)
    return None, _atom_end(pattern, index)
