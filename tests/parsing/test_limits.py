"""Limits: payload size, attachment count/size/total/type, nesting depth."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.errors import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    ConfigError,
    MalformedJSONError,
    NestingTooDeepError,
    PayloadTooLargeError,
    TooManyAttachmentsError,
)
from ticketmail.parsing import Limits, parse_json, parse_xml
from ticketmail.parsing.json import check_json_depth, load_json_object
from ticketmail.parsing.limits import media_type_matches


def files(*contents: bytes, media_type: str = "application/octet-stream") -> list[dict[str, str]]:
    return [
        {f"f{index}.bin": f"data:{media_type};base64,{base64.b64encode(data).decode()}"}
        for index, data in enumerate(contents)
    ]


def test_safe_defaults() -> None:
    limits = Limits()
    assert limits.max_payload_bytes == 25 * 1024 * 1024
    assert limits.max_attachments == 20
    assert limits.max_attachment_bytes == 10 * 1024 * 1024
    assert limits.max_total_attachment_bytes == 20 * 1024 * 1024
    assert limits.allowed_types == ("*/*",)
    assert limits.max_depth == 16


@pytest.mark.parametrize(
    "kwargs",
    [{"max_payload_bytes": 0}, {"max_depth": -1}, {"max_attachments": True}, {"allowed_types": ["image"]}],
)
def test_invalid_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Limits(**kwargs)


def test_limits_from_mapping() -> None:
    limits = Limits.from_mapping({"max_attachments": 3, "allowed_types": ["image/*", "Application/PDF"]})
    assert limits == Limits(max_attachments=3, allowed_types=("image/*", "application/pdf"))
    with pytest.raises(ConfigError, match=r"ticketmail\.toml: unknown limit"):
        Limits.from_mapping({"max_attachment": 3}, source="ticketmail.toml")
    with pytest.raises(ConfigError, match=r"ticketmail\.toml: limits\.max_depth must be an integer > 0, got 0"):
        Limits.from_mapping({"max_depth": 0}, source="ticketmail.toml")


def test_payload_size_is_checked_first(make_payload: Any) -> None:
    body = make_payload()
    with pytest.raises(PayloadTooLargeError) as info:
        parse_json(body, limits=Limits(max_payload_bytes=len(body) - 1))
    assert info.value.status == 413
    with pytest.raises(PayloadTooLargeError):
        parse_xml(b"<ticket/>" + b" " * 100, limits=Limits(max_payload_bytes=50))
    assert parse_json(body, limits=Limits(max_payload_bytes=len(body))).subject


def test_attachment_count(make_payload: Any) -> None:
    with pytest.raises(TooManyAttachmentsError) as info:
        parse_json(make_payload(attachments=files(b"a", b"b", b"c")), limits=Limits(max_attachments=2))
    assert (info.value.field, info.value.status) == ("attachments", 413)


def test_attachment_size_and_total(make_payload: Any) -> None:
    limits = Limits(max_attachment_bytes=10, max_total_attachment_bytes=15)
    assert len(parse_json(make_payload(attachments=files(b"x" * 10)), limits=limits).attachments) == 1
    with pytest.raises(AttachmentTooLargeError) as info:
        parse_json(make_payload(attachments=files(b"x" * 11)), limits=limits)
    assert info.value.field == "attachments[0].data"
    with pytest.raises(AttachmentTooLargeError, match="total") as info:
        parse_json(make_payload(attachments=files(b"x" * 8, b"y" * 8)), limits=limits)
    assert info.value.field == "attachments[1].data"
    long_form = [{"name": "a.txt", "data": "z" * 11}]
    with pytest.raises(AttachmentTooLargeError):
        parse_json(make_payload(attachments=long_form), limits=limits)
    xml = (
        b"<ticket><name>A</name><email>a@example.com</email><subject>S</subject><message>m</message>"
        b'<attachments><file name="a" encoding="base64">' + base64.b64encode(b"q" * 11) + b"</file></attachments>"
        b"</ticket>"
    )
    with pytest.raises(AttachmentTooLargeError):
        parse_xml(xml, limits=limits)


def test_huge_base64_is_refused_without_decoding(make_payload: Any) -> None:
    # 40 MB of base64 would decode to 30 MB; the refusal must come from arithmetic, not decoding.
    body = make_payload(attachments=[{"big.bin": "data:;base64," + "A" * 40_000_000}])
    limits = Limits(max_payload_bytes=64 * 1024 * 1024)
    start = time.perf_counter()
    with pytest.raises(AttachmentTooLargeError):
        parse_json(body, limits=limits)
    assert time.perf_counter() - start < 5  # generous; the work is json.loads of the body


def test_allowed_types(make_payload: Any) -> None:
    limits = Limits(allowed_types=("image/*", "application/pdf"))
    ok = parse_json(make_payload(attachments=files(b"x", media_type="image/png")), limits=limits)
    assert ok.attachments[0].content_type == "image/png"
    with pytest.raises(AttachmentTypeError) as info:
        parse_json(make_payload(attachments=files(b"x", media_type="application/x-msdownload")), limits=limits)
    assert (info.value.code, info.value.status, info.value.field) == (
        "attachment_type_not_allowed",
        415,
        "attachments[0].type",
    )
    with pytest.raises(AttachmentTypeError):
        parse_json(make_payload(attachments=[{"name": "a.exe", "data": "x", "type": "text/x-script"}]), limits=limits)


def test_media_type_patterns() -> None:
    assert media_type_matches("image/png", "image/*")
    assert media_type_matches("IMAGE/PNG", "image/png")
    assert not media_type_matches("imagex/png", "image/*")
    assert media_type_matches("anything/else", "*/*")


def test_json_depth_checked_before_parsing() -> None:
    for depth in (17, 10_000, 1_000_000):
        with pytest.raises(NestingTooDeepError):
            parse_json(b"[" * depth + b"]" * depth)
    with pytest.raises(NestingTooDeepError):
        parse_json(b'{"a":' * 5000 + b"1" + b"}" * 5000)
    # Brackets inside strings do not count; escaped quotes do not end strings.
    check_json_depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[\\"[[[[[[[["}', 2)
    with pytest.raises(NestingTooDeepError):
        check_json_depth(b'[[["\\\\"]]]', 2)


def test_unbalanced_brackets_are_malformed_or_too_deep_never_recursion() -> None:
    with pytest.raises((NestingTooDeepError,)):
        parse_json(b"[" * 100_000)


def _reference_depth(brackets: str) -> int:
    depth = best = 0
    for ch in brackets:
        depth += 1 if ch in "[{" else -1
        best = max(best, depth)
    return best


def _never_negative(brackets: str) -> bool:
    depth = 0
    for ch in brackets:
        depth += 1 if ch in "[{" else -1
        if depth < 0:
            return False
    return True


@given(st.text(alphabet="[]{}", max_size=80).filter(_never_negative), st.integers(1, 6))
def test_depth_check_matches_a_reference_count(brackets: str, limit: int) -> None:
    # Prefixes of JSON never close more than they opened; input that does is malformed, and may be
    # reported as either malformed or too deep.
    body = brackets.encode()
    too_deep = _reference_depth(brackets) > limit
    if too_deep:
        with pytest.raises(NestingTooDeepError):
            check_json_depth(body, limit)
    else:
        check_json_depth(body, limit)


@given(
    st.recursive(
        st.integers() | st.text(alphabet='[]{}"\\\\ab', max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
        max_leaves=30,
    ),
    st.integers(1, 6),
)
def test_depth_of_real_json(value: object, limit: int) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    body = json.dumps({"v": value}).encode()
    if depth({"v": value}) > limit:
        with pytest.raises(NestingTooDeepError):
            load_json_object(body, Limits(max_depth=limit))
    else:
        assert load_json_object(body, Limits(max_depth=limit)) == {"v": value}


def test_deep_without_long_runs_is_caught() -> None:
    # "[[],[[],[[],..." grows one level every few bytes without a long run of "[".
    depth = 2000
    body = b"".join(b"[[]," for _ in range(depth)) + b"1" + b"]" * depth
    with pytest.raises(NestingTooDeepError):
        parse_json(body)
    with pytest.raises(NestingTooDeepError):
        check_json_depth(body, 16)
    with pytest.raises(MalformedJSONError):
        parse_json(b'{"a": [' + b"[1]," * 40 + b"}")
