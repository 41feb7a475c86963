"""``parse_email`` against public corpora written by others (``../shared/corpus``, never copied here).

imap-tools' extracted values are a reference, not ground truth: we report agreement per field, assert a
floor, and pin the known differences where ticketmail is deliberately different (and, we argue, more right):

* imap-tools keeps trailing whitespace in subjects and the unfolding whitespace between words; ticketmail
  collapses whitespace runs (a subject is one line of display text).
* imap-tools appends the text of attached ``message/rfc822`` parts to the body and lists their files as
  attachments of the outer message; ticketmail keeps the outer text, attaches the ``.eml`` and exposes the
  inner message in ``attached_messages``; a forward whose body is empty besides the message is unwrapped.
* imap-tools drops undecodable subject characters (raw 8-bit Latin-1 in a header); ticketmail decodes them
  with the charset fallbacks ("Formação", not "Formao").
* ticketmail lower-cases the domain of addresses (the model's normalization).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ticketmail.errors import TicketmailError
from ticketmail.model import InboundEmail
from ticketmail.parsing.mime import parse_email

FIELDS = ("subject", "from", "text", "attachments", "html_present")


def _norm(text: str) -> str:
    return " ".join(text.split())


def _parse(raw: bytes) -> InboundEmail | TicketmailError:
    try:
        return parse_email(raw)
    except TicketmailError as exc:
        return exc


def _imap_tools(corpus: Path) -> tuple[dict[str, dict[str, object]], list[Path]]:
    root = corpus / "imap_tools"
    expected = json.loads((root / "expected.json").read_text(encoding="utf-8"))
    return expected, sorted((root / "messages").rglob("*.eml"))


def test_imap_tools_messages_parse(corpus: Path) -> None:
    _, files = _imap_tools(corpus)
    assert len(files) > 100
    parsed = [_parse(path.read_bytes()) for path in files]
    assert sum(isinstance(p, InboundEmail) for p in parsed) == len(files)


def test_imap_tools_agreement(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected, files = _imap_tools(corpus)
    agree = dict.fromkeys(FIELDS, 0)
    differences: dict[str, list[str]] = {field: [] for field in FIELDS}
    total = 0
    for path in files:
        key = str(path.relative_to(corpus / "imap_tools" / "messages"))
        want = expected.get(key)
        if want is None:
            continue
        total += 1
        got = parse_email(path.read_bytes())
        checks = {
            "subject": _norm(got.subject) == _norm(str(want["subject"])),
            "from": (got.from_.email.lower() if got.from_ else "") == str(want["from_"]).lower(),
            "text": _norm(got.text) == _norm(str(want["text"])),
            "attachments": sorted(a.sha256 for a in got.attachments)
            == sorted(str(a["payload"]["sha256"]) for a in want["attachments"]),  # type: ignore[index, union-attr]
            "html_present": (got.html is not None) == bool(want["html"]),
        }
        for field, ok in checks.items():
            agree[field] += ok
            if not ok:
                differences[field].append(key)
    with capsys.disabled():
        print(f"\nimap-tools agreement over {total} messages:")
        for field in FIELDS:
            print(f"  {field:13s} {agree[field]:4d}/{total} ({100 * agree[field] / total:.0f}%)")
            for key in differences[field][:12]:
                print(f"      differs: {key}")
    assert total >= 100
    assert agree["subject"] >= 0.95 * total
    assert agree["from"] >= 0.95 * total
    assert agree["attachments"] >= 0.85 * total
    assert agree["text"] >= 0.80 * total


def test_imap_tools_known_differences(corpus: Path) -> None:
    messages = corpus / "imap_tools" / "messages"
    subject = parse_email((messages / "error_emails" / "invalid_subject_characters.eml").read_bytes()).subject
    assert subject == "Formação FrenetikPolis: Mega Campanha Final Verão | Cursos de Setembro"
    jp = parse_email((messages / "rfc2822" / "example14.eml").read_bytes())
    assert jp.subject == "Re: TEST テストテスト"
    nested = parse_email((messages / "attachment_emails" / "attachment_message_rfc822.eml").read_bytes())
    assert nested.text == "This is the first part."
    assert [a.filename for a in nested.attached_messages[0].attachments] == ["broken.pdf"]
    forwarded = parse_email((messages / "forwarded_message.eml").read_bytes())
    assert forwarded.unwrapped
    assert "Новый заказ" in forwarded.text


def test_django_helpdesk_cases(corpus: Path) -> None:
    root = corpus / "django_helpdesk"
    qp = parse_email((root / "quoted_printable.eml").read_bytes())
    assert qp.subject == "Český test"
    assert qp.text == "Tohle je test českých písmen odeslaných z gmailu."
    special = parse_email((root / "all-special-chars.eml").read_bytes())
    assert special.text == "íářčšáíéřášč"
    blank = parse_email((root / "blank-body-with-attachment.eml").read_bytes())
    assert blank.text == ""
    assert len(blank.attachments) == 1
    forwarded = parse_email((root / "forwarded-message.eml").read_bytes())
    assert forwarded.new_text == "This is email body"
    assert "-----Original Message-----" in forwarded.text
    pgp = parse_email((root / "pgp.eml").read_bytes())
    assert pgp.text.startswith("hi, thanks for looking into this")
    assert [a.content_type for a in pgp.attachments] == ["application/pgp-signature"]
    bad = parse_email((root / "utf-nondecodable.eml").read_bytes())
    assert "Cyklozaměstnavatel" in bad.subject
    bad.text.encode("utf-8")


def test_talon_standard_replies(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = corpus / "talon" / "standard_replies"
    files = sorted(root.glob("*.eml"))
    stripped = 0
    for path in files:
        message = parse_email(path.read_bytes())
        assert message.new_text
        if len(message.new_text) < len(message.text):
            stripped += 1
        expected_file = root / f"{path.stem}_reply_text"
        if expected_file.exists():
            expected = expected_file.read_text(encoding="utf-8").strip()
            # talon keeps signatures and "Sent from my iPhone"; ticketmail drops both from new_text.
            lines = expected.splitlines()
            if "--" in [line.strip() for line in lines]:
                lines = lines[: [line.strip() for line in lines].index("--")]
            expected = "\n".join(line for line in lines if not line.startswith("Sent from my"))
            assert _norm(message.new_text) == _norm(expected), path.name
    with capsys.disabled():
        print(f"\ntalon standard replies: quoted history removed in {stripped}/{len(files)}")
    assert stripped >= 0.8 * len(files)


def test_crisp_reply_bodies(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ticketmail.parsing.quotes import extract_new_text

    files = sorted((corpus / "crisp" / "fixtures").glob("*.txt"))
    first_paragraph_kept = 0
    shortened = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        new = extract_new_text(text)
        first = text.strip().split("\n\n", 1)[0].strip()
        if _norm(new).startswith(_norm(first)[:40]):
            first_paragraph_kept += 1
        if len(new) < len(text.strip()):
            shortened += 1
    with capsys.disabled():
        print(
            f"\ncrisp reply bodies: first paragraph kept {first_paragraph_kept}/{len(files)}, "
            f"history or signature removed {shortened}/{len(files)}"
        )
    assert first_paragraph_kept >= 0.9 * len(files)


def test_flufl_bounces_parse_with_reports(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted((corpus / "flufl_bounce" / "messages").glob("*"))
    reports = 0
    for path in files:
        result = _parse(path.read_bytes())
        assert isinstance(result, InboundEmail), path.name
        reports += result.report_type is not None
    with capsys.disabled():
        print(f"\nflufl.bounce: {len(files)} messages parsed, {reports} multipart/report")
    assert reports > 10


def test_talon_html_replies(corpus: Path) -> None:
    from ticketmail.parsing.html import html_to_text, sanitize_html
    from ticketmail.parsing.quotes import extract_new_text

    files = sorted((corpus / "talon" / "html_replies").glob("*.html"))
    assert files
    for path in files:
        text = html_to_text(sanitize_html(path.read_text(encoding="utf-8", errors="replace")))
        assert _norm(extract_new_text(text)) == "Hi. I am fine. Thanks, Alex", path.name
