# ruff: noqa: RUF001
"""Properties of reply extraction: total, never invents text, keeps the start, linear on hostile input."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from ticketmail.parsing.htmlquote import extract_reply, quote_start
from ticketmail.parsing.quotes import extract_new_text

LINES = st.sampled_from(
    [
        "Hello,", "", "> quoted", ">> deeper", "On Mon, Jun 3, 2024 at 10:00 AM Bob <b@x.example> wrote:",
        "-- ", "Sent from my iPhone", "From: Bob <b@x.example>", "Sent: Monday", "To: Desk", "Subject: Re: x",
        "-----Original Message-----", "________________________________", "Le 4 janv. 2016 19:03, \"Name\"",
        "<name@x.example>", "a écrit :", "Thanks, the printer works.", "差出人： 山田", "Von: Bob", "件名： RE",
        "---------- Forwarded message ---------", "Am 03.06.2024 um 10:00 schrieb Support:", "\u00a0",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(LINES, st.text(max_size=40)), max_size=40), st.sampled_from(["", "Re: x", "Fwd: x"]))
def test_new_text_is_total_and_made_of_input_lines(lines: list[str], subject: str) -> None:
    text = "\n".join(lines)
    result = extract_new_text(text, subject=subject)
    assert isinstance(result, str)
    if text.strip():
        assert result.strip()
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    for line in result.split("\n"):
        assert line.strip() in normalized  # nothing invented, lines are kept whole or trimmed


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.text(max_size=400))
def test_extract_reply_is_total(text: str, html: str) -> None:
    result = extract_reply(text, html or None)
    assert isinstance(result, str)
    assert quote_start(html) is None or isinstance(quote_start(html), tuple)


@given(st.text(min_size=1, max_size=200).filter(lambda t: t.strip() != ""))
def test_a_message_without_history_is_kept(text: str) -> None:
    plain = "".join(ch for ch in text if ch.isalnum() or ch == " ").strip() or "hello"
    assert extract_new_text(plain) == plain


def test_hostile_inputs_stay_linear() -> None:
    cases = [
        "Hi\n\n" + "> > > quoted line of text\n" * 400_000,  # ~10 MB of quote lines
        "From: a\n" * 300_000,
        ("On 1 Jun 2024 Bob <b@x> wrote:\n> q\nanswer\n") * 50_000,
        ("Le 4 janv. 2016 19:03, \"N\"\n<n@x>\n") * 100_000,
        ">" * 5_000_000,
    ]
    for text in cases:
        start = time.perf_counter()
        extract_new_text(text)
        assert time.perf_counter() - start < 15.0  # linear: seconds on a loaded machine, not minutes
    html_cases = [
        "<div>" * 200_000 + '<blockquote type="cite">' + "<div>a</div>" * 100_000,
        "<a" * 1_000_000,
        "<!--" * 500_000,
        '<div class="gmail_quote">' + "<div>" * 300_000,
    ]
    for html in html_cases:
        start = time.perf_counter()
        extract_reply("a b c", html)
        assert time.perf_counter() - start < 15.0
