"""Shared payloads: osTicket's documented examples (setup/doc/api/tickets.md) and a minimal valid payload."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ticketmail.testing.osticket import GIF_B64, OSTICKET_JSON_VERBATIM, OSTICKET_XML

# The same example made valid JSON: trailing comma removed, the elided image completed, and the HTML
# message of the example.
OSTICKET_JSON = (
    b"""{
    "alert": true,
    "autorespond": true,
    "source": "API",
    "name": "Angry User",
    "email": "api@osticket.com",
    "phone": "3185558634X123",
    "subject": "Testing API",
    "ip": "123.211.233.122",
    "message": "data:text/html,MESSAGE <b>HERE</b>",
    "attachments": [
        {"file.txt": "data:text/plain;charset=utf-8,content"},
        {"image.png": "data:image/png;base64,"""
    + GIF_B64.encode()
    + b""""}
    ]
}"""
)

MINIMAL: dict[str, Any] = {
    "name": "Angry User",
    "email": "api@osticket.com",
    "subject": "Testing API",
    "message": "MESSAGE HERE",
}


def payload(**changes: Any) -> bytes:
    """The minimal valid JSON payload with members changed (``None`` removes one)."""
    data = dict(MINIMAL)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data).encode()


@pytest.fixture
def make_payload() -> Any:
    """Build a JSON payload from the minimal one: ``make_payload(ip="1.2.3.4", message=None)``."""
    return payload


@pytest.fixture
def osticket_json() -> bytes:
    """osTicket's JSON example, made valid (see the module constants)."""
    return OSTICKET_JSON


@pytest.fixture
def osticket_json_verbatim() -> bytes:
    """osTicket's JSON example exactly as documented (not valid JSON)."""
    return OSTICKET_JSON_VERBATIM


@pytest.fixture
def osticket_xml() -> bytes:
    """osTicket's XML example exactly as documented."""
    return OSTICKET_XML


@pytest.fixture
def gif_bytes() -> bytes:
    """The decoded GIF of osTicket's examples."""
    import base64

    return base64.b64decode(GIF_B64)
