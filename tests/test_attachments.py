"""The attachment policy: content sniffing, allow/deny lists, sizes; dropped files leave a note, never the ticket."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from email.message import EmailMessage

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.attachments import AttachmentPolicy, sniff
from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import ConfigError
from ticketmail.model import Attachment, Provenance
from ticketmail.parsing import parse_json
from ticketmail.pipeline import Pipeline

PE = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    + b"\x00" * 48
    + b"This program cannot be run in DOS mode"
)
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 40
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNg+M/A8B8ABQACAeIhO8EAAAAASUVORK5CYII="
)
PDF = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n%%EOF\n"


def zipped(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name.replace("__", "/"), data)
    return buffer.getvalue()


def att(name: str, media: str, data: bytes, **extra: object) -> Attachment:
    return Attachment(name, media, data, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PE, "application/x-msdownload"),
        (ELF, "application/x-executable"),
        (b"\xcf\xfa\xed\xfe" + b"\x00" * 20, "application/x-mach-binary"),
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (PDF, "application/pdf"),
        (zipped(a__b="x"), "application/zip"),
        (
            zipped(**{"[Content_Types].xml": b"<x/>", "word__document.xml": b"<x/>"}),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (zipped(**{"META-INF__MANIFEST.MF": b"Manifest-Version: 1.0"}), "application/java-archive"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 8, "application/x-ole-storage"),
        (b"  \n<!DOCTYPE html><html>", "text/html"),
        (b"\xef\xbb\xbf<script>alert(1)</script>", "text/html"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'>", "image/svg+xml"),
        (b"#!/bin/sh\nrm -rf /\n", "text/x-shellscript"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"plain words", None),
        (b"", None),
    ],
)
def test_sniff(data: bytes, expected: str | None) -> None:
    assert sniff(data) == expected


def test_an_executable_disguised_as_an_image_is_refused_by_its_content() -> None:
    result = AttachmentPolicy().apply([att("holiday.png", "image/png", PE), att("real.png", "image/png", PNG)])
    assert [a.filename for a in result.kept] == ["real.png"]
    (rejected,) = result.rejected
    assert (rejected.filename, rejected.code, rejected.sniffed_type) == (
        "holiday.png",
        "type_denied",
        "application/x-msdownload",
    )
    assert "content type application/x-msdownload" in rejected.message
    assert "holiday.png" in result.note()
    assert rejected.message in result.note()
    assert result.reasons()[0].code == "attachment.type_denied"


def test_declared_types_and_extensions() -> None:
    policy = AttachmentPolicy(allowed_types=["image/*", "application/pdf"], allowed_extensions=[".PNG", "pdf"])
    checks = {
        "ok.png": policy.check(att("ok.png", "image/png", PNG)),
        "doc.pdf": policy.check(att("doc.pdf", "application/pdf", PDF)),
        "notes.txt": policy.check(att("notes.txt", "text/plain", b"hello")),
        "image.jpeg": policy.check(att("image.jpeg", "image/jpeg", b"\xff\xd8\xff")),
        "fake.pdf": policy.check(att("fake.pdf", "application/pdf", b"GIF89a")),
    }
    assert checks["ok.png"] is None
    assert checks["doc.pdf"] is None
    assert checks["notes.txt"] is not None
    assert checks["notes.txt"][0] == "extension_not_allowed"
    assert checks["image.jpeg"] is not None
    assert checks["image.jpeg"][0] == "extension_not_allowed"
    assert checks["fake.pdf"] is None  # a GIF is an allowed type too
    assert AttachmentPolicy().check(att("run.EXE", "application/octet-stream", b"x"))[0] == "extension_denied"  # type: ignore[index]
    assert AttachmentPolicy().check(att("a.txt", "application/x-msdownload", b"x"))[0] == "type_denied"  # type: ignore[index]
    assert AttachmentPolicy(allowed_types=["image/*"]).check(att("a", "text/plain", b"x"))[0] == "type_not_allowed"  # type: ignore[index]


def test_archives_with_denied_members() -> None:
    policy = AttachmentPolicy()
    assert policy.check(att("photos.zip", "application/zip", zipped(a_jpg=b"x"))) is None
    problem = policy.check(att("invoice.zip", "application/zip", zipped(**{"invoice__pay.exe": PE})))
    assert problem is not None
    assert problem[0] == "archive_member_denied"
    assert "pay.exe" in problem[1]
    assert AttachmentPolicy(inspect_archives=False).check(att("i.zip", "application/zip", zipped(x_exe=PE))) is None
    assert policy.check(att("broken.zip", "application/zip", b"PK\x03\x04garbage")) is None


def test_sizes_counts_and_the_message_budget() -> None:
    files = [att(f"f{i}.txt", "text/plain", b"x" * size) for i, size in enumerate((10, 60, 30, 20, 5))]
    result = AttachmentPolicy(max_file_size=50, max_message_size=60, max_files=3).apply(files)
    assert [a.filename for a in result.kept] == ["f0.txt", "f2.txt", "f3.txt"]
    assert [(r.filename, r.code) for r in result.rejected] == [
        ("f1.txt", "too_large"),
        ("f4.txt", "too_many"),
    ]
    budget = AttachmentPolicy(max_message_size=35).apply(files)
    assert [a.filename for a in budget.kept] == ["f0.txt", "f3.txt", "f4.txt"]
    assert {r.code for r in budget.rejected} == {"message_too_large"}


def test_allow_all_keeps_everything() -> None:
    files = [att("x.exe", "application/x-msdownload", PE), att("y.zip", "application/zip", zipped(z_exe=PE))]
    assert AttachmentPolicy.allow_all().apply(files).kept == tuple(files)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bogus": 1}, "[attachments] bogus: unknown key"),
        ({"max_file_size": -1}, "attachments.max_file_size must be an integer >= 0, got -1"),
        ({"max_file_size": True}, "attachments.max_file_size must be an integer >= 0, got True"),
        ({"denied_types": ["exe"]}, "is not a media type pattern"),
        ({"denied_extensions": ["a/b"]}, "is not a file name extension"),
        ({"sniff_content": "yes"}, "expected true or false"),
    ],
)
def test_bad_policy_tables(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        AttachmentPolicy.from_mapping(data, source="t.toml")
    assert message in info.value.message
    assert info.value.message.startswith("t.toml: ")


@given(
    st.lists(
        st.tuples(
            st.text(max_size=30),
            st.sampled_from(["image/png", "text/plain", "application/zip"]),
            st.binary(max_size=200),
        ),
        max_size=8,
    )
)
def test_apply_partitions_the_files_in_order(items: list[tuple[str, str, bytes]]) -> None:
    files = [att(name or "x", media, data) for name, media, data in items]
    result = AttachmentPolicy(max_message_size=300, max_files=4).apply(files)
    assert len(result.kept) + len(result.rejected) == len(files)
    remaining = iter(files)  # kept is a subsequence of the input, by identity
    assert all(any(kept is other for other in remaining) for kept in result.kept)
    assert sum(a.size for a in result.kept) <= 300
    assert len(result.kept) <= 4


def mail_with(
    *files: tuple[str, str, bytes], html: str | None = None, inline: tuple[str, bytes] | None = None
) -> bytes:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = "support@helpdesk.example"
    message["Subject"] = "Files"
    message["Message-ID"] = "<files-1@example.org>"
    message.set_content("See the attached files.")
    if html is not None:
        message.add_alternative(html, subtype="html")
        if inline is not None:
            html_part = message.get_payload()[1]  # type: ignore[index]
            html_part.add_related(inline[1], maintype="image", subtype="png", cid=f"<{inline[0]}>")
    for name, media, data in files:
        maintype, subtype = media.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


def test_the_pipeline_drops_refused_files_and_keeps_the_ticket() -> None:
    backend = InMemoryBackend()
    pipeline = Pipeline(backend, attachments=AttachmentPolicy())
    raw = mail_with(("holiday.png", "image/png", PE), ("photo.png", "image/png", PNG))
    outcome = pipeline.process_email(raw, provenance=Provenance("support", "file", "1"))
    assert outcome.action == "created"
    assert outcome.ticket is not None
    (entry,) = backend.entries(outcome.ticket)
    assert [f.filename for f in entry.files] == ["photo.png"]
    assert "holiday.png" in entry.body
    assert "removed by the attachment policy" in entry.body
    assert "See the attached files." in entry.body
    codes = [r.code for r in outcome.reasons]
    assert "attachment.type_denied" in codes
    (kept,) = backend.quarantined()
    assert (kept.raw, kept.reason_code, kept.provenance) == (raw, "attachment_dropped", outcome.provenance)
    assert "holiday.png" in kept.reason
    assert outcome.acknowledge
    audit = [a for a in backend.audit_log() if a.action == "created"]
    assert any(code == "attachment.type_denied" for code, _, _ in audit[-1].reasons)


def test_inline_cid_images_follow_the_same_policy() -> None:
    backend = InMemoryBackend()
    pipeline = Pipeline(backend, attachments=AttachmentPolicy(allowed_types=["text/*"]))
    raw = mail_with(html='<p>Look: <img src="cid:shot@x"></p>', inline=("shot@x", PNG))
    outcome = pipeline.process_email(raw, provenance=Provenance("support", "file", "2"))
    assert outcome.action == "created"
    assert outcome.ticket is not None
    (entry,) = backend.entries(outcome.ticket)
    assert entry.files == ()
    assert entry.html is not None
    assert "cid:shot@x" not in entry.html
    assert "removed by the attachment policy" in entry.html
    assert any(r.code == "attachment.type_not_allowed" for r in outcome.reasons)


def test_without_a_policy_the_pipeline_keeps_every_file() -> None:
    backend = InMemoryBackend()
    outcome = Pipeline(backend).process_email(
        mail_with(("holiday.png", "image/png", PE)), provenance=Provenance("support", "file", "3")
    )
    assert outcome.ticket is not None
    assert [f.filename for f in backend.entries(outcome.ticket)[0].files] == ["holiday.png"]
    assert backend.quarantined() == []


def test_api_requests_keep_the_ticket_and_drop_the_bad_file() -> None:
    payload = {
        "email": "judith@example.org",
        "name": "Judith",
        "subject": "Badge",
        "message": "Please",
        "attachments": [
            {"setup.png": "data:image/png;base64," + base64.b64encode(PE).decode()},
            {"badge.png": "data:image/png;base64," + base64.b64encode(PNG).decode()},
        ],
    }
    request = parse_json(json.dumps(payload).encode())
    backend = InMemoryBackend()
    outcome = Pipeline(backend, attachments=AttachmentPolicy()).process_request(request)
    assert outcome.action == "created"
    assert outcome.ticket is not None
    (entry,) = backend.entries(outcome.ticket)
    assert [f.filename for f in entry.files] == ["badge.png"]
    assert entry.body.startswith("Please")
    assert "setup.png" in entry.body
    assert [r.value for r in outcome.reasons if r.code.startswith("attachment.")] == ["setup.png"]


@given(st.binary(max_size=600), st.sampled_from(["a.png", "b.zip", "c", ".exe", "d.tar.gz"]))
def test_sniff_and_check_never_raise(data: bytes, name: str) -> None:
    for prefix in (b"", b"PK\x03\x04", b"PK\x05\x06", b"MZ", b"RIFF", b"BM"):
        blob = prefix + data
        result = sniff(blob)
        assert result is None or "/" in result
        AttachmentPolicy().apply([att(name, "application/octet-stream", blob)])


class _BrokenPolicy(AttachmentPolicy):
    def apply(self, attachments: object) -> object:  # type: ignore[override]
        raise RuntimeError("boom")


def test_a_failing_policy_quarantines_the_message_instead_of_raising() -> None:
    backend = InMemoryBackend()
    raw = mail_with(("a.png", "image/png", PNG))
    outcome = Pipeline(backend, attachments=_BrokenPolicy()).process_email(
        raw, provenance=Provenance("support", "file", "9")
    )
    assert outcome.action == "failed"
    assert not outcome.acknowledge
    assert [q.raw for q in backend.quarantined()] == [raw]


def test_attached_messages_are_checked_for_the_files_they_carry() -> None:
    inner = EmailMessage()
    inner["From"] = "x@example.net"
    inner["Subject"] = "invoice"
    inner.set_content("see attached")
    inner.add_attachment(PE, maintype="application", subtype="octet-stream", filename="invoice.pdf.exe")
    clean = EmailMessage()
    clean["From"] = "y@example.net"
    clean.set_content("hello")
    clean.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    policy = AttachmentPolicy()
    bad = policy.check(att("fwd.eml", "message/rfc822", inner.as_bytes()))
    assert bad is not None
    assert bad[0] == "archive_member_denied"
    assert "invoice.pdf.exe" in bad[1]
    assert policy.check(att("fwd.eml", "message/rfc822", clean.as_bytes())) is None
    encoded = b"Content-Disposition: attachment; filename*=utf-8''evil%2Eexe\r\n\r\nx"
    assert policy.check(att("f.eml", "message/rfc822", encoded)) is not None

    outer = EmailMessage()
    outer["From"] = "Alice <alice@example.org>"
    outer["To"] = "support@helpdesk.example"
    outer["Subject"] = "Fwd: invoice"
    outer["Message-ID"] = "<fwd-1@example.org>"
    outer.set_content("Is this real?")
    outer.add_attachment(inner)
    backend = InMemoryBackend()
    outcome = Pipeline(backend, attachments=policy).process_email(
        outer.as_bytes(), provenance=Provenance("support", "file", "fwd")
    )
    assert outcome.ticket is not None
    (entry,) = backend.entries(outcome.ticket)
    assert all(f.content_type != "message/rfc822" for f in entry.files)
    assert "invoice.pdf.exe" in entry.body
