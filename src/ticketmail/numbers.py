"""Ticket numbers: the external ids people see and quote (`[#K7QM2XPA]`), random and unguessable.

Why random: a sequential number tells anyone how many tickets a desk gets and lets them guess a
neighbour's ticket, which matters wherever a number alone opens something (a status page, a reply by
subject tag). osTicket calls these "random" numbers and lets the operator pick a format such as
`######`; this module does the same: a *format* whose placeholder characters (`#`) are replaced by
characters drawn from an *alphabet* with `secrets.randbelow()`, every other character kept literally
(`TK-####-####`).

The default alphabet leaves out characters people confuse when they read a number aloud or type it from
a printout (`0`/`O`, `1`/`I`); 8 characters of its 32 give 2**40 numbers, so a desk with a
million tickets still draws a free number on the first try almost always.

Uniqueness is not left to chance: `RandomTicketNumbers.next_number()` checks each candidate with
`uow.number_exists` inside the unit of work that will create the ticket (so the check and the insert are
one transaction) and draws again on a collision, a bounded number of times.

Pluggable: anything matching `TicketNumberGenerator` (a zero-argument callable returning a
candidate) can replace the default, e.g. a generator that embeds the year or a department prefix.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs

from ticketmail._validators import at_least
from ticketmail.errors import ConfigError

__all__ = [
    "DEFAULT_ALPHABET",
    "NumberCheck",
    "RandomTicketNumbers",
    "TicketNumberGenerator",
    "TicketNumbersExhaustedError",
    "generate_number",
]

DEFAULT_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""Digits and upper-case letters without `0`, `1`, `I` and `O`: 32 characters, 5 bits each."""

MIN_SPACE = 10_000
"""The fewest distinct numbers a format may allow; fewer would be guessable and collide constantly."""


class TicketNumbersExhaustedError(ConfigError):
    """No free number was drawn in `max_attempts` tries: the format's space is (nearly) used up."""

    code = "ticket_numbers_exhausted"


@runtime_checkable
class TicketNumberGenerator(Protocol):
    """Produces candidate ticket numbers; the caller checks each against the store."""

    def __call__(self) -> str:
        """A new candidate number (it may collide; callers check `uow.number_exists`)."""


@runtime_checkable
class NumberCheck(Protocol):
    """What `RandomTicketNumbers.next_number()` needs of a unit of work."""

    def number_exists(self, number: str) -> bool:
        """Whether `number` is taken."""


def _check_alphabet(instance: RandomTicketNumbers, attribute: attrs.Attribute[str], value: str) -> None:
    if len(set(value)) != len(value) or len(value) < 2:
        raise ConfigError(
            f"numbers.alphabet must hold at least 2 distinct characters without repeats, got {value!r}",
            field="numbers.alphabet",
        )
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ConfigError(
            f"numbers.alphabet must not contain white space or control characters, got {value!r}",
            field="numbers.alphabet",
        )


@attrs.frozen
class RandomTicketNumbers:
    """The default generator: random characters in a fixed format.

    Attributes:
        alphabet: The characters drawn for each placeholder.
        length: How many random characters when `format` is not given.
        format: A template such as `"TK-####-####"`; each `placeholder` becomes a random character,
            everything else is literal. Defaults to `placeholder * length`.
        placeholder: The template character replaced by random ones (must not be in `alphabet`).
        max_attempts: How many candidates `next_number()` tries before giving up.
        randbelow: The randomness source, `secrets.randbelow` unless a test injects a seeded one.

    Example:
        ```python
        numbers = RandomTicketNumbers(format="####-####", alphabet="0123456789")
        with backend.unit_of_work() as uow:
            number = numbers.next_number(uow)
        ```
    """

    alphabet: str = attrs.field(default=DEFAULT_ALPHABET, validator=_check_alphabet)
    length: int = attrs.field(default=8, validator=at_least(1, "numbers"))
    format: str | None = None
    placeholder: str = "#"
    max_attempts: int = attrs.field(default=32, validator=at_least(1, "numbers"))
    randbelow: Callable[[int], int] = attrs.field(default=secrets.randbelow, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if len(self.placeholder) != 1 or self.placeholder in self.alphabet:
            raise ConfigError(
                f"numbers.placeholder must be one character that is not in the alphabet, got {self.placeholder!r}",
                field="numbers.placeholder",
            )
        template = self.template
        if not template.strip() or template != template.strip():
            raise ConfigError(
                f"numbers.format must be non-empty without surrounding spaces, got {template!r}", field="numbers.format"
            )
        if self.space < MIN_SPACE:
            raise ConfigError(
                f"numbers.format {template!r} with a {len(self.alphabet)}-character alphabet allows only "
                f"{self.space} numbers; at least {MIN_SPACE} are needed",
                field="numbers.format",
            )

    @property
    def template(self) -> str:
        """The effective format (`format` or `placeholder * length`)."""
        return self.format if self.format is not None else self.placeholder * self.length

    @property
    def random_chars(self) -> int:
        """How many characters of a number are random."""
        return self.template.count(self.placeholder)

    @property
    def space(self) -> int:
        """How many distinct numbers the format allows."""
        return int(len(self.alphabet) ** self.random_chars)

    @property
    def bits(self) -> float:
        """The entropy of one number in bits (how hard it is to guess)."""
        return self.random_chars * math.log2(len(self.alphabet))

    @property
    def regex(self) -> str:
        """A regular expression matching exactly the numbers this generator makes (for subject tags)."""
        klass = "[" + "".join(re.escape(ch) for ch in self.alphabet) + "]"
        parts: list[str] = []
        for is_random, run in itertools.groupby(self.template, key=lambda ch: ch == self.placeholder):
            text = "".join(run)
            if is_random:
                parts.append(klass if len(text) == 1 else f"{klass}{{{len(text)}}}")
            else:
                parts.append(re.escape(text))
        return "".join(parts)

    def matches(self, number: str) -> bool:
        """Whether `number` has this generator's shape."""
        return re.fullmatch(self.regex, number) is not None

    def __call__(self) -> str:
        """One random candidate (not checked against the store)."""
        alphabet = self.alphabet
        size = len(alphabet)
        return "".join(alphabet[self.randbelow(size)] if ch == self.placeholder else ch for ch in self.template)

    def next_number(self, uow: NumberCheck) -> str:
        """A number that `uow` does not know yet, drawn at most `max_attempts` times.

        Raises `TicketNumbersExhaustedError` when every draw collided. Call it inside the unit of
        work that creates the ticket, so no other writer can take the number between the check and the
        insert.
        """
        for _ in range(self.max_attempts):
            candidate = self()
            if not uow.number_exists(candidate):
                return candidate
        raise TicketNumbersExhaustedError(
            f"no free ticket number in {self.max_attempts} random draws from {self.space} possible numbers;"
            " use a longer numbers.format or a larger alphabet",
            field="numbers.format",
        )


_DEFAULT = RandomTicketNumbers()


def generate_number() -> str:
    """A candidate number from the default generator (8 characters of `DEFAULT_ALPHABET`)."""
    return _DEFAULT()
