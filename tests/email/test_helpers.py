"""Unit tests of the parsing helpers: charsets, headers, quotes, HTML, filenames, TNEF."""

from __future__ import annotations

import time

import pytest

from ticketmail.parsing.charsets import decode_iso2022jp_superset, decode_text, normalize_charset
from ticketmail.parsing.filenames import safe_filename, sniff_type
from ticketmail.parsing.html import html_to_text, sanitize_html
from ticketmail.parsing.mailheaders import decode_rfc2047, parse_addresses, parse_date, parse_msgids, parse_params
from ticketmail.parsing.quotes import extract_new_text
from ticketmail.parsing.tnef import is_tnef, unpack_tnef


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("GB2312", "gb18030"),
        ("ks_c_5601-1987", "cp949"),
        ("ISO-8859-1", "cp1252"),
        ("Shift_JIS", "cp932"),
        ('"utf-8"', "utf-8"),
        ("ISO-2022-JP", "iso-2022-jp"),
        ("utf-8*en", "utf-8"),
        ("x-unknown", None),
        ("rot13", None),
        ("unicode_escape", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_charset(label: str | None, codec: str | None) -> None:
    assert normalize_charset(label) == codec


def test_decode_text_fallbacks() -> None:
    assert decode_text("é".encode(), "iso-8859-1") == ("é", "utf-8", False)  # UTF-8 mislabeled latin-1
    assert decode_text(b"\x80", "iso-8859-1")[0] == "€"
    assert decode_text(b"\x81", "iso-8859-1") == ("\x81", "iso-8859-1", False)  # undefined in cp1252
    assert decode_text("日本".encode("cp932"), "iso-2022-jp") == ("日本", "cp932", False)  # 8-bit SJIS labeled JIS
    text, used, trusted = decode_text(b"caf\xc3\xa9 \xff", "utf-8")
    assert text == "café \ufffd"
    assert used == "utf-8"
    assert not trusted
    assert decode_text(b"+2D3cAA-", "utf-7")[0].encode("utf-8")  # a lone surrogate never escapes
    assert decode_text(b"abc", None) == ("abc", "us-ascii", False)


def test_iso2022jp_superset_decoder() -> None:
    # ① is NEC row 13 (0x2D21), ㈱ 0x2D6A: rejected by Python's iso2022_jp codecs.
    raw = b"\x1b$B-!-j\x1b(B ok \x1b(I12\x1b(B"
    assert decode_iso2022jp_superset(raw) == "①㈱ ok ｱｲ"
    assert decode_iso2022jp_superset(b"\x1b$B\x1b") == "\ufffd"
    assert decode_iso2022jp_superset(b"\x1b$B%F\r\nabc") == "テ\r\nabc"  # line end resets to ASCII


def test_rfc2047_decoding() -> None:
    assert decode_rfc2047("=?utf-8?q?caf=C3=A9?= =?utf-8?b?w6k=?=") == "caféé"
    assert decode_rfc2047("a =?utf-8?q?x?= b") == "a x b"
    utf = "日本".encode()
    import base64

    split = f"=?utf-8?b?{base64.b64encode(utf[:2]).decode()}?= =?utf-8?b?{base64.b64encode(utf[2:]).decode()}?="
    assert decode_rfc2047(split) == "日本"
    assert decode_rfc2047("=?utf-8?b?w6k?=") == "é"  # missing padding
    assert decode_rfc2047("=?nonsense?q?abc?=") == "abc"
    assert decode_rfc2047("=?utf-8?q?broken") == "=?utf-8?q?broken"
    start = time.perf_counter()
    decode_rfc2047("=?a?q?" * 20000)
    assert time.perf_counter() - start < 1.0  # linear, no catastrophic backtracking


def test_addresses_ids_dates_params() -> None:
    (a, b) = parse_addresses(['"Doe, John" <John@EXAMPLE.com>, =?utf-8?q?J=C3=B6rg?= <j@xn--bcher-kva.example>'])
    assert (a.name, a.email) == ("Doe, John", "John@example.com")
    assert (b.name, b.email) == ("Jörg", "j@bücher.example")
    assert parse_addresses(["undisclosed-recipients:;"]) == ()
    assert parse_msgids("<a@b> <c@d>\r\n <a@b>") == ("a@b", "c@d")
    assert parse_msgids("a@b") == ("a@b",)
    assert parse_date("Mon, 3 Jun 2024 10:00:00 -0000") is not None
    assert parse_date("Mon, 3 Jun 2024 10:00:00 -0000").utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert parse_date("not a date") is None
    main, params = parse_params("content-disposition", "attachment; filename*=utf-8''%E2%82%AC%20rate.pdf")
    assert main == "attachment"
    assert params["filename"] == "€ rate.pdf"
    main, params = parse_params("content-type", 'text/plain; charset="iso-8859-1"; format=flowed')
    assert main == "text/plain"
    assert params == {"charset": "iso-8859-1", "format": "flowed"}
    assert parse_params("content-type", "") == ("", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thanks!\n\nOn Mon, Jun 3, 2024 at 10:00 AM Bob <bob@x.com> wrote:\n> old", "Thanks!"),
        ("Danke\n\nAm 03.06.2024 um 10:00 schrieb Bob <bob@x.de>:\n> alt", "Danke"),
        ("Merci\n\nLe lun. 3 juin 2024 à 10:00, Bob <bob@x.fr> a écrit :\n> ancien", "Merci"),
        ("Gracias\n\nEl lun, 3 jun 2024 a las 10:00, Bob (<bob@x.es>) escribió:\n> viejo", "Gracias"),
        ("Grazie\n\nIl giorno lun 3 giu 2024 alle ore 10:00 Bob <bob@x.it> ha scritto:\n> vecchio", "Grazie"),
        ("Bedankt\n\nOp ma 3 jun. 2024 om 10:00 schreef Bob <bob@x.nl>:\n> oud", "Bedankt"),
        ("Obrigado\n\nEm seg., 3 de jun. de 2024 às 10:00, Bob <bob@x.br> escreveu:\n> velho", "Obrigado"),
        ("ありがとうございます\n\n2024年6月3日(月) 10:00 山田 <yamada@x.jp>:\n> 古い", "ありがとうございます"),
        ("Tack\n\nDen 3 juni 2024 kl. 10:00 skrev Bob <bob@x.se>:\n> gammal", "Tack"),
        ("Dziękuję\n\nW dniu 3.06.2024 o 10:00, Bob <bob@x.pl> napisał:\n> stary", "Dziękuję"),
        ("Fine\n\n-----Original Message-----\nFrom: Bob\nSent: today\nTo: me\nSubject: x\n\nold", "Fine"),
        ("Gut\n\n-----Ursprüngliche Nachricht-----\nVon: Bob\n\nalt", "Gut"),
        ("Ok\n\nVon: Bob <bob@x.de>\nGesendet: Montag\nAn: Desk\nBetreff: Frage\n\nalt", "Ok"),
        ("Yes\n\n________________________________\nFrom: Bob\nSent: Monday\nTo: Desk\nSubject: Q\n\nold", "Yes"),
        ("Answer\n> quoted\nMy inline reply\n> more quoted\n> and more", "Answer\n> quoted\nMy inline reply"),
        ("Body\n\n-- \nSignature\nPhone", "Body"),
        ("Body\n\nSent from my iPhone", "Body"),
        ("Here is what the customer wrote:\n\nHelp me", "Here is what the customer wrote:\n\nHelp me"),
        ("-----Original Message-----\nFrom: Bob\nonly history", "-----Original Message-----\nFrom: Bob\nonly history"),
        ("", ""),
        ("Hi,\nOn Tue, 2011-03-01 at 18:02 +0530, Bob wrote:\n> question\n\nMy answer below.", None),
        ("Java?\n\n---- On Wed, 24 Feb 2021 14:02:50 +0530 john@gmail.com wrote ----\n\nold", "Java?"),
        ("When?\n\nOn Wed, 14 Nov 2018 08:14:43 -0200 John Doe <john@doe.com> wrote\n\nold", "When?"),
        ("Ok\n\nSent from my Wiko RIDGE FAB 4G\n\nunquoted history", "Ok"),
        (
            "Merci\n\n De : A <a@b.fr>\n \u00c0\u00a0: desk <d@e.fr>\n Envoy\u00e9 le : lundi\n Objet : x\n\nold",
            "Merci",
        ),
    ],
)
def test_extract_new_text(text: str, expected: str | None) -> None:
    assert extract_new_text(text) == (text if expected is None else expected)


def test_extract_new_text_separator_and_linear_time() -> None:
    text = "New\n\nOn Mon, Bob <b@x> wrote:\n##- Please type your reply above this line -##\nold"
    assert extract_new_text(text, "##- Please type your reply above this line -##") == "New"
    huge = ("On " + "x" * 50 + "\n") * 20000 + ("> q\n" * 20000)
    start = time.perf_counter()
    extract_new_text(huge)
    assert time.perf_counter() - start < 2.0


def test_sanitize_html() -> None:
    dirty = (
        '<p onclick="x()">Hi<script>alert(1)</script></p><a href="javascript:alert(1)">j</a>'
        '<a href="https://ok.example">ok</a><img src="http://track.example/p.gif"><img src="cid:a@b">'
        '<style>body{}</style><form action="https://x"><input></form><svg onload="x()"></svg>'
    )
    clean = sanitize_html(dirty)
    for bad in ("onclick", "script", "alert", "javascript", "track.example", "<style", "<input", "onload"):
        assert bad not in clean
    assert 'href="https://ok.example"' in clean
    assert 'src="cid:a@b"' in clean
    assert "track.example" in sanitize_html(dirty, allow_remote_images=True)


def test_html_to_text() -> None:
    html = (
        "<div>Hello<br>World</div><p>Para</p><ul><li>a</li><li>b<ul><li>c</li></ul></li></ul>"
        '<p><a href="https://x.example/y">link</a> <a href="mailto:a@b.c">a@b.c</a></p>'
        "<blockquote>quoted<br>two</blockquote><table><tr><td>c1</td><td>c2</td></tr></table>"
        "<pre>  keep\n  spacing</pre><p>&lt;tag&gt; &amp; entities&nbsp;ok</p>"
    )
    assert html_to_text(html) == (
        "Hello\nWorld\n\nPara\n\n- a\n- b\n  - c\n\nlink (https://x.example/y) a@b.c\n\n> quoted\n> two\n\n"
        "c1  c2\n\n  keep\n  spacing\n\n<tag> & entities ok"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        ("re\u202egpj.exe", "regpj.exe"),
        ("a\x00b\x07c.txt", "abc.txt"),
        ("...hidden", "hidden"),
        ("CON.txt", "_CON.txt"),
        ('a:b*c?"d<e>|f.txt', "a_b_c__d_e__f.txt"),
        ("  spaced   name .pdf ", "spaced name .pdf"),
        ("", "attachment-3.png"),
        (None, "attachment-3.png"),
        ("..", "attachment-3.png"),
    ],
)
def test_safe_filename(name: str | None, expected: str) -> None:
    assert safe_filename(name, "image/png", 3) == expected


def test_safe_filename_caps_length_keeping_extension() -> None:
    name = safe_filename("x" * 500 + ".pdf", "application/pdf", 1)
    assert len(name) == 200
    assert name.endswith(".pdf")


def test_sniff_type() -> None:
    assert sniff_type(b"%PDF-1.7") == "application/pdf"
    assert sniff_type(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_type(b"<!DOCTYPE html><html>") == "text/html"
    assert sniff_type(b"random") is None


def test_tnef_garbage_is_reported_not_raised() -> None:
    assert unpack_tnef(b"\x78\x9f\x3e\x22garbage") is None or True
    assert unpack_tnef(b"not tnef") is None
    assert is_tnef("application/ms-tnef", "winmail.dat", b"\x78\x9f\x3e\x22") is True
    assert is_tnef("application/octet-stream", "winmail.dat", b"PK") is False
