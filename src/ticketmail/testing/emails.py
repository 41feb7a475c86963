# ruff: noqa: RUF001
"""Hypothesis strategies for raw email messages, built with the stdlib `email` API.

Use them to test code that consumes `ticketmail.model.InboundEmail`:

```python
from hypothesis import given
from ticketmail.testing.emails import generated_emails

@given(generated_emails())
def test_round_trip(sample):
    parsed = parse_email(sample.raw)
    assert parsed.subject == sample.subject
```

Every `GeneratedEmail` carries the raw bytes and the values a correct parser must recover from them
(already normalized the way ticketmail normalizes: folded whitespace in the subject collapsed, the body's
surrounding blank lines removed). Bodies are encoded in several charsets (UTF-8, Latin-1, cp1252, KOI8-R,
Shift_JIS, ISO-2022-JP, GB2312, EUC-KR), with and without an HTML alternative; attachments have non-ASCII
names (which the stdlib writes as RFC 2231 parameters) and arbitrary bytes. `mutated_emails()` damages
such messages (truncation, flipped and inserted bytes, removed line ends) for robustness tests.

This module imports hypothesis, a test dependency: import it from tests only.
"""

from __future__ import annotations

import html
from email.headerregistry import Address as _StdAddress
from email.message import EmailMessage
from email.policy import SMTP

import attrs
from hypothesis import strategies as st

__all__ = [
    "CHARSET_ALPHABETS",
    "GeneratedAttachment",
    "GeneratedEmail",
    "addresses",
    "generated_emails",
    "header_texts",
    "mutated_emails",
]

_ASCII_WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_PUNCT = " .,;:!?-()'\"/&%+#"
CHARSET_ALPHABETS: dict[str, str] = {
    "utf-8": _ASCII_WORD + _PUNCT + "äöüßéèçñ€日本語中文한국어Ωπ😀\t",
    "iso-8859-1": _ASCII_WORD + _PUNCT + "äöüßéèçñÅØ©®",
    "windows-1252": _ASCII_WORD + _PUNCT + "€“”‘’–—…äöüé",
    "koi8-r": _ASCII_WORD + _PUNCT + "приветмирабвгд",
    "shift_jis": _ASCII_WORD + _PUNCT + "日本語のテストです漢字カタカナ",
    "iso-2022-jp": _ASCII_WORD + _PUNCT + "日本語のテストですお世話になっております",
    "gb2312": _ASCII_WORD + _PUNCT + "中文测试邮件你好世界",
    "euc-kr": _ASCII_WORD + _PUNCT + "한국어테스트안녕하세요",
}
"""Per charset, characters a generated body in that charset may use (all encodable in it)."""

_NAME_ALPHABET = _ASCII_WORD + " .,-'()\\\"äöüéñ日本王Ωй"
_FILE_ALPHABET = _ASCII_WORD + "-_äöüéñ日本王Ωй"
_SUBJECT_ALPHABET = _ASCII_WORD + _PUNCT + "[]äöüßé€日本語中文한국😀Ωπ"
_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)
_MEDIA_TYPES = (
    ("application", "octet-stream", "bin"),
    ("application", "pdf", "pdf"),
    ("image", "png", "png"),
    ("image", "jpeg", "jpg"),
    ("application", "zip", "zip"),
    ("text", "csv", "csv"),
)


@attrs.frozen
class GeneratedAttachment:
    """An attachment put into a generated message: what a parser must give back."""

    filename: str
    content_type: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen
class GeneratedEmail:
    """A generated raw message and the values a parser must recover from it."""

    raw: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    sender_email: str
    sender_name: str | None
    subject: str
    text: str
    charset: str
    html: str | None
    attachments: tuple[GeneratedAttachment, ...]


def header_texts(alphabet: str = _SUBJECT_ALPHABET, max_size: int = 60) -> st.SearchStrategy[str]:
    """Header text (subjects, display names) with non-ASCII characters; never an RFC 2047 look-alike."""
    return st.text(alphabet=alphabet, max_size=max_size).filter(lambda s: "=?" not in s and "?=" not in s)


@st.composite
def addresses(draw: st.DrawFn) -> str:
    """A plain `local@domain` address (lower case)."""
    local = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12))
    sep = draw(st.sampled_from(["", ".", "+", "_"]))
    tail = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6))
    domain = draw(st.sampled_from(["example.com", "mail.example.org", "desk.example", "xn--bcher-kva.example"]))
    return f"{local}{sep}{tail}@{domain}"


def _body_text(charset: str) -> st.SearchStrategy[str]:
    line = st.text(alphabet=CHARSET_ALPHABETS[charset], max_size=80)
    return st.lists(line, min_size=1, max_size=8).map("\n".join)


def _normalized_text(text: str) -> str:
    lines = text.split("\n")
    return "\n".join(lines).strip("\n") if text.strip() else ""


@st.composite
def _attachment(draw: st.DrawFn) -> GeneratedAttachment:
    maintype, subtype, ext = draw(st.sampled_from(_MEDIA_TYPES))
    # Names a safe-filename policy keeps as they are (Windows device names such as "COM1" are renamed).
    stem = draw(st.text(alphabet=_FILE_ALPHABET, min_size=1, max_size=40).filter(lambda s: s.lower() not in _DEVICES))
    data = draw(st.binary(max_size=3000))
    return GeneratedAttachment(filename=f"{stem}.{ext}", content_type=f"{maintype}/{subtype}", data=data)


@st.composite
def generated_emails(draw: st.DrawFn, *, max_attachments: int = 3) -> GeneratedEmail:
    """A message built with `email.message.EmailMessage`; see `GeneratedEmail`."""
    sender = draw(addresses())
    name = " ".join(draw(header_texts(_NAME_ALPHABET, 30)).split()) or None
    subject = draw(header_texts())
    charset = draw(st.sampled_from(sorted(CHARSET_ALPHABETS)))
    text = draw(_body_text(charset))
    with_html = draw(st.booleans())
    attachments = tuple(draw(st.lists(_attachment(), max_size=max_attachments)))

    msg = EmailMessage(policy=SMTP)
    msg["From"] = _StdAddress(display_name=name or "", addr_spec=sender)
    msg["To"] = "support@desk.example"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{draw(st.integers(0, 10**12))}@generated.example>"
    msg.set_content(text, charset=charset)
    html_body = None
    if with_html:
        html_body = "<p>" + html.escape(text).replace("\n", "<br>") + "</p>"
        msg.add_alternative(html_body, subtype="html", charset="utf-8")
    for item in attachments:
        maintype, subtype = item.content_type.split("/")
        msg.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.filename)
    token = draw(st.integers(0, 10**9))
    for index, part in enumerate(msg.walk()):
        if part.is_multipart():
            # Fixed boundaries: the stdlib would draw them from `random`, which hypothesis cannot replay.
            part.set_boundary(f"=_tm_{index}_{token}")
    return GeneratedEmail(
        raw=msg.as_bytes(),
        sender_email=sender,
        sender_name=name,
        subject=" ".join(subject.split()),
        text=_normalized_text(text),
        charset=charset,
        html=html_body,
        attachments=attachments,
    )


@st.composite
def mutated_emails(draw: st.DrawFn) -> bytes:
    """Raw bytes of a generated message, damaged: truncated, bytes flipped or inserted, line ends dropped."""
    raw = bytearray(draw(generated_emails(max_attachments=2)).raw)
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["truncate", "flip", "insert", "drop_eol", "nul", "dup"]))
        if not raw:
            break
        pos = draw(st.integers(0, len(raw) - 1))
        if action == "truncate":
            del raw[pos:]
        elif action == "flip":
            raw[pos] = draw(st.integers(0, 255))
        elif action == "insert":
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=20))
        elif action == "drop_eol":
            raw[:] = raw.replace(b"\r\n", draw(st.sampled_from([b"\n", b"\r", b""])), draw(st.integers(1, 50)))
        elif action == "nul":
            raw[pos:pos] = b"\x00"
        else:
            end = min(len(raw), pos + draw(st.integers(1, 200)))
            raw[pos:pos] = raw[pos:end]
    return bytes(raw)
