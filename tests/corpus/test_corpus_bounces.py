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


@pytest.mark.parametrize("folder", ["talon", "crisp", "django_helpdesk"])
def test_person_written_mail_is_never_a_bounce(corpus: Path, folder: str) -> None:
    checked = 0
    for path in sorted((corpus / folder).rglob("*")):
        if not path.is_file() or path.suffix not in ("", ".eml", ".txt"):
            continue
        raw = path.read_bytes()
        if b":" not in raw[:200]:
            continue  # a bare body fixture, not a message
        try:
            email = parse_email(raw)
        except Exception:
            continue
        result = classify_automatic(email)
        assert result is None or result.kind not in ("bounce", "delivery_report", "feedback_report"), path.name
        checked += 1
    assert checked > 0
