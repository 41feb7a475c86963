"""Ticket numbers: shape, randomness source, collision checks, configuration errors."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.errors import ConfigError
from ticketmail.numbers import (
    DEFAULT_ALPHABET,
    RandomTicketNumbers,
    TicketNumberGenerator,
    TicketNumbersExhaustedError,
    generate_number,
)


class Taken:
    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.asked: list[str] = []

    def number_exists(self, number: str) -> bool:
        self.asked.append(number)
        return number in self.taken


def test_default_numbers() -> None:
    numbers = RandomTicketNumbers()
    assert isinstance(numbers, TicketNumberGenerator)
    assert numbers.bits == 40
    assert not set("01IO") & set(DEFAULT_ALPHABET)
    drawn = {generate_number() for _ in range(500)}
    assert len(drawn) == 500  # 2**40 space: no repeats expected
    for number in drawn:
        assert len(number) == 8
        assert set(number) <= set(DEFAULT_ALPHABET)
        assert numbers.matches(number)
    assert re.fullmatch(r"[A-Za-z0-9]{4,32}", next(iter(drawn)))  # fits the threading default pattern


def test_not_sequential() -> None:
    drawn = [generate_number() for _ in range(200)]
    assert sorted(drawn) != drawn


def test_format_keeps_literals_and_regex_matches_only_its_shape() -> None:
    numbers = RandomTicketNumbers(format="TK-####.##", alphabet="0123456789", randbelow=random.Random(1).randrange)
    number = numbers()
    assert re.fullmatch(r"TK-\d{4}\.\d{2}", number)
    assert numbers.matches(number)
    assert not numbers.matches("TK-1234X12")
    assert not numbers.matches("TK-12345.12")
    assert numbers.space == 10**6


def test_collision_check_draws_again() -> None:
    rng = random.Random(7)
    numbers = RandomTicketNumbers(format="####", alphabet="0123456789", randbelow=rng.randrange)
    first = RandomTicketNumbers(format="####", alphabet="0123456789", randbelow=random.Random(7).randrange)()
    check = Taken({first})
    number = numbers.next_number(check)
    assert number != first
    assert check.asked[0] == first
    assert number == check.asked[-1]


def test_exhausted_space_is_reported() -> None:
    numbers = RandomTicketNumbers(format="####", alphabet="0123456789", max_attempts=5)

    class Full:
        def number_exists(self, number: str) -> bool:
            return True

    with pytest.raises(TicketNumbersExhaustedError, match="5 random draws") as info:
        numbers.next_number(Full())
    assert info.value.code == "ticket_numbers_exhausted"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"alphabet": "AA"}, "numbers.alphabet"),
        ({"alphabet": "A"}, "numbers.alphabet"),
        ({"alphabet": "AB C"}, "numbers.alphabet"),
        ({"length": 0}, "numbers.length"),
        ({"length": 2}, "numbers.format"),
        ({"format": "##", "alphabet": "0123456789"}, "numbers.format"),
        ({"format": " ######"}, "numbers.format"),
        ({"placeholder": "A"}, "numbers.placeholder"),
        ({"max_attempts": 0}, "numbers.max_attempts"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        RandomTicketNumbers(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


@given(
    alphabet=st.sets(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="#"), min_size=2).map(
        "".join
    ),
    prefix=st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="#"), max_size=3),
    seed=st.integers(),
)
def test_every_number_matches_its_regex(alphabet: str, prefix: str, seed: int) -> None:
    width = 1
    while len(alphabet) ** width < 10_000:
        width += 1
    numbers = RandomTicketNumbers(
        alphabet=alphabet, format=prefix + "#" * width, randbelow=random.Random(seed).randrange
    )
    assert numbers.matches(numbers())
