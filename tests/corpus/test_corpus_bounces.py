"""Bounce detection against flufl.bounce's 101 real bounces (read from ../shared/corpus, never copied).

Scoring follows the corpus's expected.json: a sample counts as detected when classify_automatic calls it a
``bounce`` or (for the MTA warnings flufl marks ``temporary``) a ``delivery_report``; address recall is the
share of expected bounced addresses found among the reported recipients (case-insensitive). The measured
rates are printed (``pytest -s``) and held above floors so a regression shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ticketmail.parsing.mime import parse_email
from ticketmail.rules import classify_automatic

DETECTION_FLOOR = 0.97
RECALL_FLOOR = 0.93
PRECISION_FLOOR = 0.95


def _samples(corpus: Path) -> list[dict[str, Any]]:
    data = json.loads((corpus / "flufl_bounce" / "expected.json").read_text(encoding="utf-8"))
    return [s for s in data["samples"] if s.get("is_bounce")]


def test_flufl_bounces(corpus: Path) -> None:
    samples = _samples(corpus)
    assert len(samples) >= 100
    detected = expected = found = extra = 0
    misses: list[str] = []
    for sample in samples:
        email = parse_email((corpus / "flufl_bounce" / "messages" / sample["file"]).read_bytes())
        result = classify_automatic(email)
        kinds = ("bounce", "delivery_report") if sample["extra"]["temporary"] else ("bounce",)
        if result is not None and result.kind in kinds:
            detected += 1
        else:
            misses.append(f"{sample['file']}: {result.kind if result else None}")
        want = {a.lower() for a in sample["extra"]["bounced_addresses"]}
        got = {r.recipient.lower() for r in (result.recipients if result else ())}
        expected += len(want)
        found += len(want & got)
        extra += len(got - want)
    detection = detected / len(samples)
    recall = found / expected
    precision = found / (found + extra)
    print(
        f"\nflufl.bounce: detected {detected}/{len(samples)} ({detection:.1%}); "
        f"address recall {found}/{expected} ({recall:.1%}); precision {precision:.1%}; misses: {misses}"
    )
    assert detection >= DETECTION_FLOOR, misses
    assert recall >= RECALL_FLOOR
    assert precision >= PRECISION_FLOOR


# imap-tools' messages that are machine mail (read by hand): its bounces and delivery warnings.
IMAP_TOOLS_MACHINE = frozenset(
    {
        "mime_emails/raw_email_with_mimepart_without_content_type.eml",
        "multipart_report_emails/multi_address_bounce1.eml",
        "multipart_report_emails/multi_address_bounce2.eml",
        "multipart_report_emails/multipart_report_multiple_status.eml",
        "multipart_report_emails/report_422.eml",
        "multipart_report_emails/report_530.eml",
    }
)
MACHINE_KINDS = ("bounce", "delivery_report", "feedback_report", "auto_reply", "out_of_office")


@pytest.mark.parametrize("folder", ["talon", "crisp", "django_helpdesk", "imap_tools"])
def test_person_written_mail_is_never_machine_mail(
    corpus: Path, folder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    checked = 0
    false_positives: list[str] = []
    machine_found = 0
    for path in sorted((corpus / folder).rglob("*")):
        if not path.is_file() or path.suffix not in ("", ".eml", ".txt") or path.name == "LICENSE":
            continue
        raw = path.read_bytes()
        if b":" not in raw[:200]:
            continue  # a bare body fixture, not a message
        try:
            email = parse_email(raw)
        except Exception:
            continue
        result = classify_automatic(email)
        name = path.relative_to(corpus / folder / "messages").as_posix() if folder == "imap_tools" else path.name
        if name in IMAP_TOOLS_MACHINE:
            machine_found += result is not None and result.kind in ("bounce", "delivery_report")
            continue
        checked += 1
        if result is not None and result.kind in MACHINE_KINDS:
            false_positives.append(f"{name}: {result.kind}")
    with capsys.disabled():
        print(f"\n{folder}: {checked} person-written messages, {len(false_positives)} taken for machine mail")
    assert checked > 0
    assert false_positives == []
    if folder == "imap_tools":
        assert machine_found == len(IMAP_TOOLS_MACHINE)
