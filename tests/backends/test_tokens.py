"""Signed outbound Message-IDs: round trips, tampering, rotation, syntax, secrecy."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.errors import ConfigError, InvalidValueError
from ticketmail.tokens import SigningKey, TokenInfo, find_token, make_message_id, signing_keys, verify_message_id

OLD = SigningKey("k2025", b"o" * 32)
NEW = SigningKey("k2026", b"n" * 32)
# RFC 5322 section 3.6.4: msg-id = "<" id-left "@" id-right ">", both dot-atom-text here.
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
MSG_ID = re.compile(rf"<{ATEXT}(\.{ATEXT})*@{ATEXT}(\.{ATEXT})*>")


def test_round_trip_and_shape() -> None:
    mid = make_message_id("K7QM2XPA", 1234, keys=[NEW], domain="desk.example.org", nonce="abc")
    assert MSG_ID.fullmatch(mid)
    assert mid.startswith("<tm1.k2026.K7QM2XPA.ya.abc.")
    assert len(mid) < 80
    info = verify_message_id(mid, keys=[NEW])
    assert info == TokenInfo(ticket="K7QM2XPA", entry=1234, key_id="k2026", nonce="abc")
    assert verify_message_id(mid.strip("<>"), [NEW]) == info  # without brackets, keys positional


def test_unique_per_call() -> None:
    ids = {make_message_id("T1", 1, keys=NEW, domain="x.org") for _ in range(200)}
    assert len(ids) == 200


def test_rotation_old_mail_still_verifies() -> None:
    old_mid = make_message_id("T1", 5, keys=[OLD], domain="x.org")
    ring = [NEW, OLD]  # the new key signs; the old one still verifies
    new_mid = make_message_id("T1", 6, keys=ring, domain="x.org")
    assert ".k2026." in new_mid
    assert verify_message_id(old_mid, keys=ring) is not None
    assert verify_message_id(new_mid, keys=ring) is not None
    assert verify_message_id(old_mid, keys=[NEW]) is None  # retired key: no longer trusted


def test_same_key_id_other_secret_fails() -> None:
    mid = make_message_id("T1", 5, keys=[NEW], domain="x.org")
    assert verify_message_id(mid, keys=[SigningKey("k2026", b"z" * 32)]) is None


def test_raw_secrets_get_derived_ids() -> None:
    secret = b"s" * 16
    mid = make_message_id("T1", 5, keys=secret, domain="x.org")
    assert verify_message_id(mid, keys=(secret,)) is not None
    assert verify_message_id(mid, keys=(b"t" * 16,)) is None
    assert signing_keys(secret)[0].id == SigningKey.from_secret(secret).id


def test_every_single_character_change_is_rejected() -> None:
    mid = make_message_id("T1", 5, keys=[NEW], domain="x.org", nonce="nn")
    left = mid[1:].split("@")[0]
    for i, ch in enumerate(left):
        for repl in {"A", "b", "9", "-", "."} - {ch}:
            forged = "<" + left[:i] + repl + left[i + 1 :] + "@x.org>"
            assert verify_message_id(forged, keys=[NEW]) is None, forged


def test_domain_is_not_signed() -> None:
    mid = make_message_id("T1", 5, keys=[NEW], domain="a.example.org")
    assert verify_message_id(mid.replace("a.example.org", "b.example.org"), keys=[NEW]) is not None


def test_odd_ticket_numbers_are_encoded() -> None:
    for number in ("TK-2026.0001", "~tilde", "ünï cødé", "a@b"):
        mid = make_message_id(number, 0, keys=[NEW], domain="x.org")
        assert MSG_ID.fullmatch(mid), mid
        info = verify_message_id(mid, keys=[NEW])
        assert info is not None
        assert info.ticket == number


def test_secrets_never_shown() -> None:
    key = SigningKey("k1", b"very-secret-value-123")
    assert "very-secret" not in repr(key)
    assert "very-secret" not in repr(signing_keys([key]))
    with pytest.raises(ConfigError) as info:
        SigningKey("k1", b"short-secret")
    assert "short-secret" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"domain": "bad domain"}, InvalidValueError),
        ({"domain": ""}, InvalidValueError),
        ({"nonce": "no.dots"}, InvalidValueError),
        ({"keys": []}, ConfigError),
        ({"keys": [NEW, SigningKey("k2026", b"x" * 16)]}, ConfigError),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    args: dict[str, object] = {"keys": [NEW], "domain": "x.org", **kwargs}
    with pytest.raises(error):
        make_message_id("T1", 1, **args)  # type: ignore[arg-type]


def test_bad_key_ids() -> None:
    for bad in ("", "has.dot", "x" * 17):
        with pytest.raises(ConfigError):
            SigningKey(bad, b"x" * 16)
    with pytest.raises(InvalidValueError):
        make_message_id("T1", -1, keys=[NEW], domain="x.org")


def test_find_token_takes_the_first_valid() -> None:
    mine = make_message_id("T9", 3, keys=[NEW], domain="x.org")
    assert find_token(["<foreign@example.com>", mine, "<other@x>"], keys=[NEW]) == verify_message_id(mine, [NEW])
    assert find_token(["<foreign@example.com>"], keys=[NEW]) is None


@given(number=st.text(min_size=1, max_size=40), entry=st.integers(0, 2**62))
def test_round_trip_property(number: str, entry: int) -> None:
    mid = make_message_id(number, entry, keys=[NEW], domain="x.org")
    assert MSG_ID.fullmatch(mid)
    info = verify_message_id(mid, keys=[OLD, NEW])
    assert info is not None
    assert (info.ticket, info.entry) == (number, entry)


@given(
    st.text(max_size=120)
    | st.from_regex(r"<?tm1\.k2026\.[A-Za-z0-9~_-]*\.[0-9a-z]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*@x>?")
)
def test_any_string_gives_none_or_info(text: str) -> None:
    result = verify_message_id(text, keys=[NEW])
    assert result is None or isinstance(result, TokenInfo)
