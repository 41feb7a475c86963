"""Lenient header recovery on broken real-world mail: the right sender and subject, or no sender at all."""

from __future__ import annotations

from ticketmail.parsing.mime import parse_email


def _codes(message: object) -> set[str]:
    return {d.code for d in message.defects}  # type: ignore[attr-defined]


def test_undeclared_8bit_subject_uses_the_body_charset() -> None:
    raw = (
        b"From: a@example.jp\r\nSubject: " + "ツール".encode("shift_jis") + b"\r\n"
        b"Content-Type: text/plain; charset=Shift_JIS\r\n\r\n" + "本文".encode("shift_jis") + b"\r\n"
    )
    message = parse_email(raw)
    assert message.subject == "ツール"
    assert message.text == "本文"


def test_undeclared_8bit_subject_in_a_multipart() -> None:
    raw = (
        b"From: a@example.jp\r\nSubject: " + "件名テスト".encode("euc-jp") + b"\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=euc-jp\r\n\r\n" + "本文".encode("euc-jp") + b"\r\n--b--\r\n"
    )
    assert parse_email(raw).subject == "件名テスト"


def test_malformed_encoded_word_in_from() -> None:
    raw = b"From: =?iso-8859-1?Q?B=FCrling <smith@example.com>\r\nSubject: hi\r\n\r\nbody\r\n"
    message = parse_email(raw)
    assert message.from_ is not None
    assert message.from_.email == "smith@example.com"
    assert message.from_.name == "Bürling"


def test_leading_junk_line_is_skipped() -> None:
    raw = b"garbage line from a broken relay\r\nFrom: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
    message = parse_email(raw)
    assert message.from_ is not None
    assert message.from_.email == "a@example.com"
    assert message.subject == "hello"
    assert message.text == "body"
    assert "malformed_header_line" in _codes(message)


def test_malformed_header_line_does_not_end_the_header_block() -> None:
    raw = b"Received: x\r\n__\r\nFrom: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
    message = parse_email(raw)
    assert message.from_ is not None
    assert message.subject == "hello"
    assert message.text == "body"


def test_missing_separator_still_starts_the_body() -> None:
    raw = b"From: a@example.com\r\nSubject: hello\r\nThis is the body.\r\nSecond line.\r\n"
    message = parse_email(raw)
    assert message.subject == "hello"
    assert message.text.startswith("This is the body.")
    assert "missing_header_body_separator" in _codes(message)


def test_sender_is_never_an_encoded_word_fragment() -> None:
    raw = b"From: =?utf-8?Q?broken\r\nSubject: hi\r\n\r\nbody\r\n"
    message = parse_email(raw)
    assert message.from_ is None
    assert "invalid_sender" in _codes(message)


def test_bare_address_recovered_from_a_broken_from() -> None:
    raw = b"From: Big Bug bb@bug.example\r\nSubject: hi\r\n\r\nbody\r\n"
    message = parse_email(raw)
    assert message.from_ is not None
    assert message.from_.email == "bb@bug.example"


def test_sender_header_is_the_fallback() -> None:
    raw = b"From: nobody\r\nSender: desk@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    message = parse_email(raw)
    assert message.from_ is not None
    assert message.from_.email == "desk@example.com"
    assert "invalid_from" in _codes(message)
