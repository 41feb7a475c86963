"""Routing conditions: each operator and field, negation, and the regex guard."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.rules import Condition, load_rules, regex_problem
from ticketmail.rules.routing import RegexTimeout, required_literal, required_literals


@pytest.mark.parametrize(
    ("op", "value", "subject", "expected"),
    [
        ("equals", "invoice", "Invoice", True),
        ("equals", "invoice", "Invoice 42", False),
        ("contains", "voice", "Your INVOICE 42", True),
        ("contains", "refund", "Your invoice", False),
        ("starts_with", "re:", "RE: hello", True),
        ("starts_with", "re:", "Fwd: RE: hello", False),
        ("ends_with", "[urgent]", "Printer [URGENT]", True),
        ("ends_with", "urgent", "Urgent printer", False),
        ("regex", r"^\[#\d+\]", "[#123] Printer", True),
        ("regex", r"^\[#\d+\]", "Re: [#123] Printer", False),
        ("not_equals", "invoice", "Invoice 42", True),
        ("not_contains", "refund", "Your invoice", True),
        ("not_contains", "voice", "Your invoice", False),
        ("not_starts_with", "re:", "Hello", True),
        ("not_ends_with", "!", "Hello!", False),
        ("not_regex", r"\d{5}", "Order 1234", True),
    ],
)
def test_operators_on_subject(op: str, value: str, subject: str, expected: bool) -> None:
    matched, _ = Condition("subject", op, value).test((subject,))
    assert matched is expected


def test_case_sensitive() -> None:
    assert Condition("subject", "contains", "VIP", case_sensitive=True).test(("a VIP",))[0]
    assert not Condition("subject", "contains", "VIP", case_sensitive=True).test(("a vip",))[0]
    assert not Condition("subject", "regex", "VIP", case_sensitive=True).test(("a vip",))[0]
    assert Condition("subject", "regex", "VIP").test(("a vip",))[0]


def test_multi_valued_any_and_negation_none() -> None:
    to = ("alice@a.example", "sales@desk.example")
    assert Condition("to", "contains", "sales").test(to) == (True, "sales@desk.example")
    assert Condition("to", "not_contains", "sales").test(to)[0] is False
    assert Condition("to", "not_contains", "billing").test(to)[0] is True
    assert Condition("to", "contains", "x").test(()) == (False, None)
    assert Condition("to", "not_contains", "x").test(())[0] is True


def test_unicode_case_folding() -> None:
    assert Condition("subject", "contains", "STRASSE").test(("Hauptstraße 1",))[0]


@pytest.mark.parametrize("field", ["header:X-Priority", "from", "from_domain", "from_name", "body", "recipient", "cc"])
def test_fields_accepted(field: str) -> None:
    Condition(field, "contains", "x")


@pytest.mark.parametrize(
    ("field", "op", "value", "message"),
    [
        ("subjekt", "contains", "x", "unknown field"),
        ("header:", "contains", "x", "unknown field"),
        ("subject", "eq", "x", "unknown operator"),
        ("subject", "regex", "(", "not a valid regular expression"),
    ],
)
def test_invalid_conditions(field: str, op: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Condition(field, op, value)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(a+)+$", "repeats a group that contains a repetition"),
        ("(a*)*", "repeats a group that contains a repetition"),
        ("(?:x+y?)+z", "repeats a group that contains a repetition"),
        ("(a|aa)*$", "repeats a group that contains an alternation"),
        ("((ab)+c)+", "repeats a group that contains a repetition"),
        ("(\\w+\\s?){2,}x", "repeats a group that contains a repetition"),
        ("(a)\\1", "backreference"),
        ("(?P<x>a)(?P=x)", "backreference"),
        ("a*b*c*d*", "more than 3 unbounded quantifiers"),
        ("x" * 501, "at most 500"),
        ("[", "not a valid regular expression"),
    ],
)
def test_regex_guard_refuses(pattern: str, problem: str) -> None:
    found = regex_problem(pattern)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    "pattern",
    [
        r"^\[#\d+\]",
        r"(?i)invoice\s+no\.?\s*\d+",
        r"(?:re|fwd?):\s*",
        r"[(+*]+",  # quantifier characters inside a class are not quantifiers
        r"\(a+\)+",  # escaped parentheses are not groups
        r"(ab){2}",
        r"(?P<num>\d{3,6})",
        r"(?<=#)\d+",
        r"^(urgent|asap)\b",
    ],
)
def test_regex_guard_accepts(pattern: str) -> None:
    assert regex_problem(pattern) is None


def test_polynomial_regex_times_out_instead_of_hanging() -> None:
    # Accepted by the static guard (no nesting), but polynomial on a crafted value: the timeout stops it.
    cond = Condition("body", "regex", r".*a.*a.*b")
    start = time.perf_counter()
    with pytest.raises(RegexTimeout):
        cond.test(("a" * 1_000_000,))
    assert time.perf_counter() - start < 2


def test_regex_sees_a_bounded_slice() -> None:
    assert Condition("subject", "regex", "needle").test(("x" * 2000 + "needle",)) == (False, None)
    assert Condition("body", "regex", "needle").test(("x" * 2000 + "needle",))[0]


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        (r"\bvpn\s+order\b", "order"),
        (r"invoice\s*no\.?\s*\d+", "invoice"),
        (r"colou?r", "colo"),
        (r"(foo)bar+baz", "baz"),
        (r"\.com$", ".com"),
        (r"a|bcd", None),
        (r"(?i)abcd", None),
        (r"x{2,3}yz", None),
        (r"^\[#\d+\]", None),
    ],
)
def test_required_literal(pattern: str, literal: str | None) -> None:
    assert required_literal(pattern) == literal


_pieces = st.sampled_from(
    ["ab", "abc", "x", "\\s+", "\\d*", "c?", "(de)", "(?:fg)+", "[a-c]", ".", "q{1,2}", "\\.", " ", "\\b", "e+"]
)


@given(st.lists(_pieces, min_size=1, max_size=6), st.text(alphabet="abcdefgqx .1 ABCDE", max_size=40))
def test_required_literal_never_skips_a_match(pieces: list[str], text: str) -> None:
    import re as stdlib_re

    pattern = "".join(pieces)
    literal = required_literal(pattern)
    if literal is None:
        return
    for flags, haystack in ((0, text), (stdlib_re.IGNORECASE, text.lower())):
        if stdlib_re.search(pattern, text, flags) is not None:
            folded = literal.lower() if flags else literal
            assert folded in haystack, (pattern, literal, text)


@pytest.mark.parametrize(
    ("pattern", "expected"), [("abc{x", ("abc",)), ("invoice{", ("invoice",)), ("{ab}cde", ("cde",))]
)
def test_a_brace_that_is_no_quantifier_ends_a_literal_run(pattern: str, expected: tuple[str, ...]) -> None:
    """`{` not followed by a count is a plain character to `re`; reading the pattern once looped forever."""
    assert regex_problem(pattern) is None
    assert required_literals(pattern) == expected
    load_rules({"rules": [{"name": "r", "conditions": [{"field": "subject", "op": "regex", "value": pattern}]}]})


@pytest.mark.filterwarnings("ignore::FutureWarning")  # re warns of "[[" (a possible nested set)
@given(st.text(alphabet="ab{}()[]|*+?\\d1,^$:", max_size=16))
def test_reading_the_required_literals_of_any_accepted_pattern_ends(pattern: str) -> None:
    if regex_problem(pattern) is None:
        assert all(len(text) >= 3 for text in required_literals(pattern))
