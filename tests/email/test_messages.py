# ruff: noqa: RUF001
"""The project's own corpus: messages in several clients' styles, each with the values we expect."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from pathlib import Path

import attrs
import pytest

from ticketmail.errors import (
    ConfigError,
    MalformedEmailError,
    PayloadTooLargeError,
    TicketmailError,
    TypeMismatchError,
)
from ticketmail.model import InboundEmail
from ticketmail.parsing.mime import EmailOptions, looks_like_email, parse_email

MESSAGES = Path(__file__).parent / "messages"


def load(name: str, **options: object) -> InboundEmail:
    return parse_email((MESSAGES / name).read_bytes(), options=EmailOptions(**options) if options else None)  # type: ignore[arg-type]


def codes(message: InboundEmail) -> set[str]:
    return {d.code for d in message.defects}


def test_every_corpus_message_parses_and_is_eager() -> None:
    files = sorted(MESSAGES.glob("*.eml"))
    assert len(files) >= 25
    for path in files:
        message = parse_email(path.read_bytes())
        assert isinstance(message, InboundEmail)
        attrs.asdict(message)  # eager: nothing left to compute, and nothing raises
        assert message.size == path.stat().st_size
        assert message.text.encode("utf-8") or message.text == ""
        assert looks_like_email(path.read_bytes())


def test_outlook_reply_cp1252_labeled_latin1() -> None:
    m = load("outlook_reply_cp1252.eml")
    assert m.subject == "RE: Rechnung für März"
    assert m.from_ is not None
    assert m.from_.email == "anna@kunde.example"
    assert m.from_.name == "Anna Müller"
    assert m.to[0].name == "Support"
    assert m.in_reply_to == ("ticket-42@desk.example",)
    assert m.references == ("ticket-40@desk.example", "ticket-42@desk.example")
    assert m.date == dt.datetime(2024, 6, 3, 10, 20, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert "20 € ist “angekommen”" in m.text
    assert m.charsets == ("cp1252", "cp1252")
    assert m.new_text == "Hallo Team,\n\ndie Rechnung über 20 € ist “angekommen”.\n\nGrüße\nAnna"
    assert "From: Support" in m.text  # the full text is kept
    assert m.html is not None
    assert "<style" not in m.html
    assert "color:red" not in m.html
    assert m.signal_headers["x-auto-response-suppress"] == ("All",)
    assert m.content_type == "multipart/alternative"


def test_gmail_reply_wrapped_attribution_and_signature() -> None:
    m = load("gmail_reply.eml")
    assert m.new_text == "Thanks, that fixed it!"
    assert m.delivered_to == ("help@desk.example", "inbox@desk.example")
    assert m.html is not None
    assert 'class="gmail_quote"' not in m.html
    assert m.text.startswith("Thanks, that fixed it!")
    html_first = load("gmail_reply.eml", prefer="html")
    assert html_first.text.startswith("Thanks, that fixed it!")
    assert "> Please restart the printer." in html_first.text  # blockquote rendered as a quote
    assert html_first.new_text == "Thanks, that fixed it!"


def test_apple_mail_flowed_inline_image_and_text_after_attachment() -> None:
    m = load("apple_mail_flowed_mixed.eml")
    assert m.text.startswith("Hier ist der Screenshot, der Fehler erscheint jedes Mal wenn ich auf Speichern klicke.")
    assert "Danke und Grüße\nMax" in m.text  # the text part after the image is kept, in order
    assert m.new_text.endswith("Danke und Grüße\nMax")
    assert "schrieb" not in m.new_text
    (image,) = m.attachments
    assert image.filename == "Bildschirmfoto.png"
    assert image.disposition == "inline"
    assert image.sniffed_type == "image/png"
    assert m.signal_headers["x-mailer"] == ("Apple Mail (2.3731.500.231)",)


def test_thunderbird_french_signature_and_attribution() -> None:
    m = load("thunderbird_fr.eml")
    assert m.subject == "Re: Commande n° 1234"
    assert m.new_text == "Bonjour,\n\nLe colis n'est toujours pas arrivé.\n\nCordialement,"


def test_iphone_reply() -> None:
    m = load("iphone_reply.eml")
    assert m.new_text == "Yes please, Tuesday works."


def test_japanese_iso2022jp_with_vendor_characters() -> None:
    m = load("japanese_iso2022jp_vendor.eml")
    assert m.subject == "①の件について㈱テスト"
    assert m.from_ is not None
    assert m.from_.name == "山田太郎"
    assert "株式会社の件で①と②について確認します。" in m.text
    assert "㈱テスト商事" in m.text
    assert m.charsets == ("cp50220",)
    assert "\ufffd" not in m.text


def test_shift_jis_and_missing_charset_japanese() -> None:
    m = load("japanese_shift_jis.eml")
    assert m.subject == "お問い合わせ～①"
    assert m.text == "ご確認ください～ ① ㈱ ﾃｽﾄ"
    assert m.charsets == ("cp932",)
    n = load("japanese_missing_charset.eml")
    assert n.text == "日本語のメールです。"
    assert n.charsets == ("iso-2022-jp",)
    assert "charset_missing" in codes(n)


def test_gb2312_label_carrying_gb18030_and_cp949() -> None:
    m = load("chinese_gb2312_label.eml")
    assert m.subject == "关于朱镕基的问题"
    assert m.from_ is not None
    assert m.from_.name == "王小明"
    assert "朱镕基" in m.text
    assert m.charsets == ("gb18030",)
    k = load("korean_ks_c_5601.eml")
    assert k.subject == "똠방 문의"
    assert "똠방각하" in k.text
    assert k.charsets == ("cp949",)


def test_latin1_label_is_read_as_cp1252_and_missing_charsets() -> None:
    m = load("latin1_is_cp1252.eml")
    assert m.text == "“The price” is 30 € – isn’t it?"
    assert m.from_ is not None
    assert m.from_.name == "O'Brien, Pat"
    u = load("missing_charset_utf8.eml")
    assert u.text == "Größe: 42 – naïve café"
    assert u.charsets == ("utf-8",)
    c = load("missing_charset_cp1252.eml")
    assert c.text.startswith("Le café est très bon, déjà servi à la crème brûlée.")
    assert c.charsets == ("cp1252",)


def test_rfc2231_and_unsafe_filenames() -> None:
    m = load("rfc2231_filenames.eml")
    names = [a.filename for a in m.attachments]
    assert names[0] == "Überweisungsbestätigung für die Rechnung Nummer 2024-0815 vom Juni – sehr lange Datei.pdf"
    assert names[1] == "Angebot Müller.docx"
    assert names[2] == "evilname.txt"  # path components and control characters removed
    assert names[3] == "attachment-4.png"  # fallback by type
    for name in names:
        assert "/" not in name
        assert "\\" not in name
        assert not name.startswith(".")
    pdf = m.attachments[0]
    assert pdf.data == b"%PDF-1.4 test"
    assert pdf.sha256 == hashlib.sha256(b"%PDF-1.4 test").hexdigest()
    assert pdf.size == 13
    assert pdf.sniffed_type == "application/pdf"
    assert m.text == "See attached."


def test_broken_encoded_words() -> None:
    m = load("broken_encoded_words.eml")
    # split multi-byte character, wrong charset label (UTF-8 bytes labeled latin-1), spaces inside Q text
    assert m.subject == "日本語テスト and caféwith space"
    assert m.from_ is not None
    assert m.from_.name == "Jürgen Müller"
    assert m.reply_to[0].name == "Zoë Ünicode"  # raw 8-bit UTF-8 header
    assert [(a.name, a.email) for a in m.cc] == [("Müller, Hans", "hans@example.de"), ("Bad Label", "bad@example.de")]
    assert "8bit_header" in codes(m)


def test_nested_message_rfc822_attached_and_parsed() -> None:
    m = load("nested_rfc822.eml")
    assert m.text == "See the attached conversation."
    (eml,) = m.attachments
    assert eml.filename == "Middle message.eml"
    assert eml.content_type == "message/rfc822"
    assert eml.data.startswith(b"From: Middle")
    (middle,) = m.attached_messages
    assert middle.subject == "Middle message"
    assert middle.from_ is not None
    assert middle.from_.email == "mid@example.com"
    assert middle.text == "Middle text."
    (innermost,) = middle.attached_messages
    assert innermost.subject == "Innermost"
    assert innermost.text == "The very first message."
    assert parse_email(eml.data).subject == "Middle message"


def test_forwarded_wrapper_is_unwrapped_keeping_envelope() -> None:
    m = load("forwarded_wrapper.eml")
    assert m.unwrapped
    assert m.from_ is not None
    assert m.from_.email == "relay@desk.example"
    assert m.message_id == "wrapper-1@desk.example"
    assert m.subject == "Forwarded by rule"
    assert m.signal_headers["auto-submitted"] == ("auto-forwarded",)
    assert m.return_path == "relay@desk.example"
    assert m.text == "Does the product ship to Norway?"
    assert [a.filename for a in m.attachments] == ["spec.pdf"]
    (inner,) = m.attached_messages
    assert inner.from_ is not None
    assert inner.from_.email == "customer@example.net"


def test_related_cid_images_and_sanitizing() -> None:
    m = load("related_cid_hostile_html.eml")
    html = m.html or ""
    for bad in ("<script", "alert", "onload", "onclick", "javascript:", "tracker.example", "evil.example", "<iframe"):
        assert bad not in html
    assert 'src="cid:logo@example.com"' in html
    assert 'href="https://example.com/docs"' in html
    (logo,) = m.attachments
    assert logo.content_id == "logo@example.com"
    assert logo.disposition == "inline"
    assert m.text.startswith("Hello click and the docs (https://example.com/docs).")
    allowed = load("related_cid_hostile_html.eml", allow_remote_images=True)
    assert "https://tracker.example/pixel.gif" in (allowed.html or "")


def test_html_only_mail_gets_readable_text() -> None:
    m = load("html_only.eml")
    assert m.text == (
        "New request\n\nName: Ada\nEmail: ada@example.com\n\n- First item\n- Second item\n\n1. one\n2. two\n\n"
        "Details at this page (https://example.com/r/1)."
    )
    assert m.html is not None
    assert "<h1>New request</h1>" in m.html


def test_bounce_report_parts() -> None:
    m = load("bounce_report.eml")
    assert m.report_type == "delivery-status"
    assert [p.content_type for p in m.report_parts] == ["message/delivery-status", "text/rfc822-headers"]
    assert "Status: 5.1.1" in m.report_parts[0].text
    assert "Message-ID: <ticket-9-reply@desk.example>" in m.report_parts[1].text
    assert m.return_path == ""
    assert m.text.startswith("I'm sorry")
    assert m.attachments == ()


def test_malformed_bare_cr_nul_boundaries_truncation() -> None:
    cr = load("malformed_bare_cr.eml")
    assert cr.subject == "Old Mac"
    assert cr.text == "Line one\nLine two"
    nul = load("malformed_nul.eml")
    assert nul.subject == "HasNUL"
    assert nul.text == "Beforeafter"
    assert {"nul_in_header", "nul_in_body"} <= codes(nul)
    bb = load("malformed_boundaries.eml")
    assert "First part text." in bb.text
    assert "never uses its boundary" in bb.text
    assert [a.filename for a in bb.attachments] == ["cut.bin"]
    assert {"missing_close_boundary", "boundary_not_found"} <= codes(bb)
    tr = load("malformed_truncated.eml")
    assert tr.text.startswith("Café ends badly")
    assert tr.attachments[0].data == b"0123456789abcde"[: tr.attachments[0].size]
    assert "invalid_base64" in codes(tr)


def test_winmail_dat_is_unpacked() -> None:
    m = load("outlook_winmail_dat.eml")
    assert [a.filename for a in m.attachments] == ["report.txt"]
    assert m.attachments[0].content_type == "text/plain"
    assert m.attachments[0].data == b"quarterly numbers\n"
    assert m.text == "Please see the attachment."


def test_missing_message_id_is_deterministic_and_signals() -> None:
    raw = (MESSAGES / "no_message_id_bad_date.eml").read_bytes()
    a, b = parse_email(raw), parse_email(raw)
    assert a.message_id_generated
    assert a.message_id == b.message_id == f"{hashlib.sha256(raw).hexdigest()[:32]}@ticketmail.invalid"
    assert parse_email(raw + b"x").message_id != a.message_id
    assert a.date is None
    assert "invalid_date" in codes(a)
    assert a.signal_headers == {
        "x-autoreply": ("yes",),
        "precedence": ("bulk",),
        "list-id": ("<news.example.com>",),
        "x-ticketmail-loop": ("desk.example",),
    }
    assert "reply above this line" in a.new_text  # no separator configured
    sep = parse_email(raw, options=EmailOptions(reply_separator="-- reply above this line --"))
    assert sep.new_text == "Thanks for the update."
    assert sep.text == a.text


def test_auto_reply_signals_and_header_access() -> None:
    m = load("auto_reply_outlook.eml")
    assert m.signal_headers["auto-submitted"] == ("auto-replied",)
    assert m.signal_headers["x-ms-exchange-inbox-rules-loop"] == ("away@example.com",)
    assert m.header("SUBJECT") == ["Automatic reply: [#12] Help"]
    assert ("Auto-Submitted", "auto-replied") in m.headers


def test_headers_only_message() -> None:
    m = load("headers_only.eml")
    assert m.subject == "nothing else"
    assert m.text == ""
    assert m.message_id_generated


@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n", b"\x00\x00"])
def test_empty_input_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedEmailError) as info:
        parse_email(raw)
    assert info.value.code == "malformed_email"


def test_body_without_headers_is_kept() -> None:
    m = parse_email(b"just some text\nwith no header at all\n")
    assert "just some text" in m.text
    assert "no_headers" in codes(m)


def test_limits() -> None:
    with pytest.raises(PayloadTooLargeError):
        parse_email(b"Subject: x\r\n\r\n" + b"a" * 200, options=EmailOptions(max_size=100))
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"Subject: late\r\n\r\nbody\r\n"
    m = parse_email(many, options=EmailOptions(max_headers=100))
    assert len(m.headers) == 100
    assert "too_many_headers" in codes(m)
    assert m.text == "body"
    deep = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for i in range(1, 60):
        deep += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
    deep += b"--b59\r\nContent-Type: text/plain\r\n\r\ndeep text\r\n"
    d = parse_email(deep)
    assert "nesting_too_deep" in codes(d)
    parts = (
        b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 3000
    )
    p = parse_email(parts, options=EmailOptions(max_parts=50))
    assert "too_many_parts" in codes(p)


def test_deep_message_rfc822_nesting_is_bounded() -> None:
    raw = b"Subject: level 0\r\n\r\nbottom\r\n"
    for level in range(1, 200):
        raw = b"Subject: level %d\r\nContent-Type: message/rfc822\r\n\r\n" % level + raw
    m = parse_email(raw)
    depth = 0
    while m.attached_messages:
        m = m.attached_messages[0]
        depth += 1
    assert depth == 3  # max_attached_depth
    deeper = parse_email(raw, options=EmailOptions(max_attached_depth=30))
    depth = 0
    while deeper.attached_messages:
        deeper = deeper.attached_messages[0]
        depth += 1
    assert depth <= 20  # max_depth still bounds the structure


def test_options_validation_and_type_errors() -> None:
    with pytest.raises(ConfigError, match=r"limits\.email\.prefer must be one of 'text', 'html', got 'rtf'"):
        EmailOptions(prefer="rtf")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"limits\.email\.max_depth must be an integer > 0, got 0"):
        EmailOptions(max_depth=0)
    with pytest.raises(TypeMismatchError):
        parse_email("text")  # type: ignore[arg-type]
    assert parse_email(bytearray(b"Subject: x\r\n\r\ny")).subject == "x"


def test_only_ticketmail_errors_escape() -> None:
    for raw in (b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n", b"\xff\xfe" * 100, b":\r\n:\r\n\r\n"):
        with contextlib.suppress(TicketmailError):
            parse_email(raw)


def test_outlook_mobile_reply() -> None:
    m = load("outlook_ios_mobile.eml")
    assert m.new_text == "It works now, thank you!"
    assert m.signal_headers["x-microsoft-original-message-id"] == (
        "<SN6PR01MB0001@SN6PR01MB0001.namprd01.prod.outlook.com>",
    )
    assert m.to[0].email == "support@desk.example"


def test_meeting_request_calendar_alternative_is_a_file() -> None:
    m = load("outlook_meeting_request.eml")
    assert m.text == "Let us meet on Wednesday."
    assert m.html == "<p>Let us meet on <b>Wednesday</b>.</p>"
    (ics,) = m.attachments
    assert ics.filename == "attachment-1.ics"
    assert ics.content_type == "text/calendar"
    assert ics.charset == "utf-8"
    assert ics.data.startswith(b"BEGIN:VCALENDAR")


def test_japanese_gmail_reply_attribution_without_verb() -> None:
    m = load("japanese_gmail_reply.eml")
    assert m.subject == "Re: 請求書について"
    assert m.new_text == "ご連絡ありがとうございます。\n承知しました。"


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def test_base64_encoded_attached_message_and_digest() -> None:
    import base64

    inner = crlf("From: inner@example.com\nSubject: Inner\n\nInner body\n")
    raw = (
        crlf(
            "From: outer@example.com\nSubject: Outer\nContent-Type: multipart/mixed; boundary=x\n\n--x\n"
            "Content-Type: text/plain\n\nOuter body\n--x\nContent-Type: message/rfc822\n"
            "Content-Transfer-Encoding: base64\n\n"
        )
        + base64.encodebytes(inner)
        + crlf("--x--\n")
    )
    m = parse_email(raw)
    assert m.text == "Outer body"
    assert m.attached_messages[0].subject == "Inner"
    assert m.attachments[0].data == inner
    digest = crlf(
        "From: list@example.com\nSubject: Digest\nContent-Type: multipart/digest; boundary=d\n\n"
        "--d\n\nFrom: a@example.com\nSubject: One\n\nfirst\n--d\n\nFrom: b@example.com\nSubject: Two\n\nsecond\n--d--\n"
    )
    d = parse_email(digest)
    assert [x.subject for x in d.attached_messages] == ["One", "Two"]


def test_prefix_boundaries_mbox_line_and_uuencode() -> None:
    raw = crlf(
        "From sender@example.com Mon Jun  3 10:00:00 2024\n"
        "From: a@example.com\nSubject: nested\nContent-Type: multipart/mixed; boundary=abc\n\n"
        "--abc\nContent-Type: multipart/alternative; boundary=abc-1\n\n"
        "--abc-1\nContent-Type: text/plain\n\nplain\n--abc-1\nContent-Type: text/html\n\n<p>html</p>\n--abc-1--\n"
        "--abc\nContent-Type: application/octet-stream; name=u.bin\nContent-Transfer-Encoding: x-uuencode\n\n"
        "begin 644 u.bin\n#86)C\n`\nend\n--abc--\n"
    )
    m = parse_email(raw)
    assert m.subject == "nested"
    assert m.text == "plain"
    assert m.html == "<p>html</p>"
    assert m.attachments[0].data == b"abc"


def test_plain_and_html_parts_in_sequence_and_signed() -> None:
    raw = crlf(
        "From: a@example.com\nSubject: seq\nContent-Type: multipart/signed; boundary=s; protocol=x\n\n"
        "--s\nContent-Type: multipart/mixed; boundary=m\n\n"
        "--m\nContent-Type: text/plain\n\nfirst <plain>\n--m\nContent-Type: text/html\n\n<p>second</p>\n--m--\n"
        "--s\nContent-Type: application/pkcs7-signature; name=smime.p7s\n\nSIG\n--s--\n"
    )
    m = parse_email(raw)
    assert m.text == "first <plain>\n\nsecond"
    assert m.html == "<pre>first &lt;plain&gt;</pre>\n<p>second</p>"
    assert [a.filename for a in m.attachments] == ["smime.p7s"]


def test_invalid_content_type_and_unknown_encoding() -> None:
    raw = crlf("From: a@example.com\nContent-Type: garbage\nContent-Transfer-Encoding: x-weird\n\nhello\n")
    m = parse_email(raw)
    assert m.text == "hello"
    assert {"invalid_content_type", "unknown_transfer_encoding"} <= codes(m)


def test_html_meta_charset_and_cid_reference_outside_related() -> None:
    raw = (
        b"From: a@b.example\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n"
        b'Content-Type: text/html\r\n\r\n<html><head><meta http-equiv="Content-Type" '
        b'content="text/html; charset=windows-1251"></head><body><p>'
        + "Привет мир".encode("cp1251")
        + b'</p><img src="cid:Logo1"></body></html>\r\n--m\r\nContent-Type: image/png; name=l.png\r\n'
        b"Content-ID: <logo1>\r\nContent-Disposition: attachment; filename=l.png\r\n\r\nPNG\r\n--m--\r\n"
    )
    m = parse_email(raw)
    assert m.text == "Привет мир"
    assert m.charsets == ("cp1251",)
    assert [(a.filename, a.disposition) for a in m.attachments] == [("l.png", "inline")]


def test_text_enriched_alternative_is_body() -> None:
    raw = crlf(
        "From: a@example.com\nSubject: rich\nContent-Type: multipart/alternative; boundary=r\n\n"
        "--r\nContent-Type: text/plain\n\nplain version\n--r\nContent-Type: text/enriched\n\n"
        "<bold>Rich</bold> version\nsame line\n\nnext <<tag>\n--r--\n"
    )
    m = parse_email(raw)
    assert m.text == "Rich version same line\nnext <tag>"
    assert m.attachments == ()


def test_unreadable_winmail_dat_is_kept_with_a_defect() -> None:
    import base64

    blob = base64.b64encode(b"\x78\x9f\x3e\x22\x01\x00garbage that is not TNEF").decode()
    raw = crlf(
        "From: a@example.com\nSubject: t\nContent-Type: multipart/mixed; boundary=w\n\n"
        "--w\nContent-Type: text/plain\n\nbody\n"
        "--w\nContent-Type: application/ms-tnef; name=winmail.dat\nContent-Transfer-Encoding: base64\n\n"
        f"{blob}\n--w--\n"
    )
    m = parse_email(raw)
    assert [a.filename for a in m.attachments] == ["winmail.dat"]
    assert "invalid_tnef" in codes(m)
