"""Outgoing headers and never-autorespond addresses."""

from __future__ import annotations

import pytest

from ticketmail.errors import InvalidValueError, TicketmailError
from ticketmail.model import InboundEmail
from ticketmail.rules import classify_automatic, never_autorespond, outgoing_headers


def test_auto_replied_headers() -> None:
    assert outgoing_headers("auto-replied", loop_token="tm-1234") == {
        "Auto-Submitted": "auto-replied",
        "X-Auto-Response-Suppress": "All",
        "Precedence": "auto_reply",
        "X-Ticketmail-Loop": "tm-1234",
    }


def test_auto_generated_headers_without_token() -> None:
    headers = outgoing_headers("auto-generated")
    assert headers["Auto-Submitted"] == "auto-generated"
    assert headers["Precedence"] == "bulk"
    assert "X-Ticketmail-Loop" not in headers


def test_our_own_headers_are_recognised_as_automatic() -> None:
    for kind in ("auto-replied", "auto-generated"):
        headers = tuple(outgoing_headers(kind, loop_token="t").items())  # type: ignore[arg-type]
        result = classify_automatic(InboundEmail(message_id="x@y", headers=headers))
        assert result is not None
        assert result.kind in ("auto_reply", "bulk")


@pytest.mark.parametrize("token", ["", "has space", "line\nbreak", "x" * 201, "ünï"])
def test_bad_loop_token(token: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        outgoing_headers("auto-replied", loop_token=token)
    assert info.value.field == "loop_token"


def test_bad_kind() -> None:
    with pytest.raises(TicketmailError):
        outgoing_headers("auto-notified")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "address",
    [
        "MAILER-DAEMON@mx.example.com",
        "mailer_daemon@example.com",
        "postmaster@example.com",
        "noreply@example.com",
        "no-reply@example.com",
        "No_Reply@Example.com",
        "donotreply@example.com",
        "do-not-reply@example.com",
        "noreply-billing@example.com",
        "bounce@example.com",
        "bounces+abc=x.com@list.example.com",
        "users-bounces@lists.example.org",
        "owner-users@lists.example.org",
        "users-request@lists.example.org",
        "listserv@example.edu",
        "majordomo@example.org",
        "notifications@github.example",
        "<MAILER-DAEMON>",
        "",
    ],
)
def test_never_autorespond(address: str) -> None:
    assert never_autorespond(address)


@pytest.mark.parametrize(
    "address",
    ["alice@example.com", "reply@example.com", "noreen@example.com", "bouncer.jim@example.com", "owner@x.com"],
)
def test_people_may_get_autoresponses(address: str) -> None:
    assert not never_autorespond(address)
