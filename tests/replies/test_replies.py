"""Scored reply corpus: `new_text` against what the writer typed.

Three sources, all in this folder:

* `cases/*.txt`: replies written for this project, one per client and language (Gmail, Outlook
  desktop/web/mobile, Exchange, Apple Mail, iPhone, Android, Thunderbird, Yahoo, Lotus Notes, Zimbra,
  GMX/Web.de, Yandex, Mail.ru, QQ/163/Foxmail, Naver, Zoho; HTML bodies of the clients that mark their
  quotes), each with the expected new text.
* `crisp/`: reply bodies from crisp-oss/email-reply-parser (MIT, see `crisp/LICENSE`), expected new text
  in `crisp/expected.json` (written for this project: the writer's text, forwards kept).
* `eml/`: whole multipart messages written for this project (plain and HTML alternatives of Gmail,
  Outlook web and desktop, Apple Mail, Thunderbird and Yahoo in languages without text tables), expected
  new text in `eml/expected.json`: the HTML marks decide.
* `talon/`: replies from mailgun/talon's fixtures (Apache-2.0, see `talon/LICENSE`): whole messages,
  and HTML replies whose new text is "Hi. I am fine. Thanks, Alex".

Scores: exact-match rate (after normalizing line ends, trailing spaces and blank lines), over-trim rate (words of
the expected text missing from the result, over all expected words) and under-trim rate (words kept
that are not in the expected text, over all quoted words). Run with `-s` to see them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import attrs
import pytest

from ticketmail.parsing.html import html_to_text, sanitize_html
from ticketmail.parsing.htmlquote import extract_reply
from ticketmail.parsing.mime import parse_email

HERE = Path(__file__).parent
EXACT_TARGET = 0.95
OVER_TRIM_TARGET = 0.01
MARK = "%%%% "


@attrs.frozen
class Case:
    name: str
    text: str
    expected: str
    html: str | None = None
    subject: str = ""


def _read_cases(path: Path) -> list[Case]:
    cases: list[Case] = []
    current: dict[str, str] = {}
    section = ""
    buffers: dict[str, list[str]] = {}

    def flush() -> None:
        if current:
            cases.append(
                Case(
                    name=f"{path.stem}/{current['name']}",
                    text="\n".join(buffers.get("text", [])),
                    expected="\n".join(buffers.get("expected", [])),
                    html="\n".join(buffers["html"]) if "html" in buffers else None,
                    subject=current.get("subject", ""),
                )
            )

    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith(MARK):
            keyword, _, value = line[len(MARK) :].partition(" ")
            if keyword == "case":
                flush()
                current, buffers, section = {"name": value.strip()}, {}, "text"
            elif keyword == "subject":
                current["subject"] = value.strip()
            else:
                section = keyword
                buffers.setdefault(section, [])
            continue
        buffers.setdefault(section, []).append(line)
    flush()
    return cases


def _written_cases() -> list[Case]:
    out: list[Case] = []
    for path in sorted((HERE / "cases").glob("*.txt")):
        for case in _read_cases(path):
            if case.html is not None and not case.text.strip():
                case = attrs.evolve(case, text=html_to_text(sanitize_html(case.html)))
            out.append(case)
    return out


def _crisp_cases() -> list[Case]:
    expected = json.loads((HERE / "crisp" / "expected.json").read_text(encoding="utf-8"))
    return [
        Case(name=f"crisp/{name}", text=(HERE / "crisp" / name).read_text(encoding="utf-8"), expected=want)
        for name, want in sorted(expected.items())
    ]


def _talon_results() -> list[tuple[str, str, str, str]]:
    """(name, input text, result, expected) for talon's messages and HTML replies."""
    root = HERE / "talon"
    out = []
    expected = json.loads((root / "expected.json").read_text(encoding="utf-8"))
    for path in sorted(root.glob("*.eml")):
        message = parse_email(path.read_bytes())
        out.append((f"talon/{path.name}", message.text, message.new_text, expected[path.name]))
    for path in sorted((HERE / "eml").glob("*.eml")):
        message = parse_email(path.read_bytes())
        want = json.loads((HERE / "eml" / "expected.json").read_text(encoding="utf-8"))[path.name]
        out.append((f"eml/{path.name}", message.text, message.new_text, want))
    for path in sorted(root.glob("*.html")):
        html = path.read_text(encoding="utf-8", errors="replace")
        text = html_to_text(sanitize_html(html))
        out.append((f"talon/{path.name}", text, extract_reply(text, html), "Hi. I am fine.\n\nThanks,\nAlex"))
    return out


def _norm(text: str) -> str:
    """Line ends, trailing spaces and blank lines (HTML paragraphs render them differently) normalized."""
    lines = (line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))
    return "\n".join(line for line in lines if line.strip())


def _words(text: str) -> Counter[str]:
    return Counter(text.split())


def _all_results() -> list[tuple[str, str, str, str]]:
    results = []
    for case in _written_cases() + _crisp_cases():
        got = extract_reply(case.text, case.html, subject=case.subject)
        results.append((case.name, case.text, got, case.expected))
    return results + _talon_results()


def test_reply_corpus_scores(capsys: pytest.CaptureFixture[str]) -> None:
    results = _all_results()
    assert len(results) >= 200
    exact = lost = expected_words = kept_quote = quoted_words = 0
    misses = []
    for name, text, got, want in results:
        if _norm(got) == _norm(want):
            exact += 1
        else:
            misses.append(name)
        want_words, got_words = _words(want), _words(got)
        lost += sum((want_words - got_words).values())
        expected_words += sum(want_words.values())
        kept_quote += sum((got_words - want_words).values())
        quoted_words += max(sum((_words(text) - want_words).values()), 0)
    exact_rate = exact / len(results)
    over = lost / expected_words
    under = kept_quote / max(quoted_words, 1)
    with capsys.disabled():
        print(
            f"\nreply corpus: {len(results)} replies, exact {exact}/{len(results)} ({exact_rate:.1%}), "
            f"over-trim {over:.2%} of reply words, under-trim {under:.2%} of quoted words; misses: {misses}"
        )
    assert exact_rate >= EXACT_TARGET, misses
    assert over <= OVER_TRIM_TARGET, misses


@pytest.mark.parametrize("case", _written_cases(), ids=lambda c: c.name)
def test_written_case(case: Case) -> None:
    assert _norm(extract_reply(case.text, case.html, subject=case.subject)) == _norm(case.expected)


def test_corpus_covers_languages_and_clients() -> None:
    names = {case.name.split("/", 1)[1] for case in _written_cases()}
    for needle in (
        "gmail-en", "gmail-de", "gmail-fr", "gmail-es", "gmail-it", "gmail-pt", "gmail-nl", "gmail-sv", "gmail-no",
        "gmail-da", "gmail-pl", "gmail-cs", "gmail-ru", "gmail-uk", "gmail-ja", "gmail-zh", "gmail-ko",
        "outlook-mobile", "lotus-notes", "zimbra-de", "gmx", "yandex", "qq", "163", "foxmail", "naver",
        "html-gmail", "html-outlook-web", "html-apple", "html-yahoo", "html-thunderbird",
    ):  # fmt: skip
        assert any(name.startswith(needle) for name in names), needle


def test_replies_are_never_machine_mail(capsys: pytest.CaptureFixture[str]) -> None:
    """Every reply in the corpus, as a message from a person, is not automatic mail of any kind."""
    from ticketmail.model import Address, InboundEmail
    from ticketmail.rules import classify_automatic

    taken = []
    cases = _written_cases() + _crisp_cases()
    for case in cases:
        email = InboundEmail(
            message_id=f"{case.name}@customer.example",
            subject=case.subject or "Re: [#1234] Your request",
            from_=Address("someone@customer.example", "Some One"),
            return_path="someone@customer.example",
            text=case.text,
            html=case.html,
            headers=(("From", "Some One <someone@customer.example>"), ("Subject", case.subject or "Re: x")),
        )
        if classify_automatic(email) is not None:
            taken.append(case.name)
    for path in sorted((HERE / "talon").glob("*.eml")):
        if classify_automatic(parse_email(path.read_bytes())) is not None:
            taken.append(path.name)
    with capsys.disabled():
        print(f"\nreply corpus: {len(cases)} replies checked for machine-mail signals, {len(taken)} flagged")
    assert taken == []
