"""Shared payloads: osTicket's documented examples (setup/doc/api/tickets.md) and a minimal valid payload."""

from __future__ import annotations

import json
from typing import Any

import pytest

# The GIF of osTicket's XML example, as one base64 string.
GIF_B64 = (
    "R0lGODdhMAAwAPAAAAAAAP///ywAAAAAMAAwAAAC8IyPqcvt3wCcDkiLc7C0qwy"
    "GHhSWpjQu5yqmCYsapyuvUUlvONmOZtfzgFzByTB10QgxOR0TqBQejhRNzOfkVJ"
    "+5YiUqrXF5Y5lKh/DeuNcP5yLWGsEbtLiOSpa/TPg7JpJHxyendzWTBfX0cxOnK"
    "PjgBzi4diinWGdkF8kjdfnycQZXZeYGejmJlZeGl9i2icVqaNVailT6F5iJ90m6"
    "mvuTS4OK05M0vDk0Q4XUtwvKOzrcd3iq9uisF81M1OIcR7lEewwcLp7tuNNkM3u"
    "Nna3F2JQFo97Vriy/Xl4/f1cf5VWzXyym7PHhhx4dbgYKAAA7"
)

# Verbatim from osTicket's docs: note the trailing comma and the elided base64 ("...").
OSTICKET_JSON_VERBATIM = b"""{
    "alert": true,
    "autorespond": true,
    "source": "API",
    "name": "Angry User",
    "email": "api@osticket.com",
    "phone": "3185558634X123",
    "subject": "Testing API",
    "ip": "123.211.233.122",
    "message": "MESSAGE HERE",
    "attachments": [
        {"file.txt": "data:text/plain;charset=utf-8,content"},
        {"image.png": "data:image/png;base64,R0lGODdhMAA..."},
    ]
}"""

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

# Verbatim from osTicket's docs.
OSTICKET_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<ticket alert="true" autorespond="true" source="API">
    <name>Angry User</name>
    <email>api@osticket.com</email>
    <subject>Testing API</subject>
    <phone ext="123">318-555-8634</phone>
    <message><![CDATA[Message content here]]></message>
    <attachments>
        <file name="file.txt" type="text/plain"><![CDATA[
            File content is here and is automatically trimmed
        ]]></file>
        <file name="image.gif" type="image/gif" encoding="base64">
            R0lGODdhMAAwAPAAAAAAAP///ywAAAAAMAAwAAAC8IyPqcvt3wCcDkiLc7C0qwy
            GHhSWpjQu5yqmCYsapyuvUUlvONmOZtfzgFzByTB10QgxOR0TqBQejhRNzOfkVJ
            +5YiUqrXF5Y5lKh/DeuNcP5yLWGsEbtLiOSpa/TPg7JpJHxyendzWTBfX0cxOnK
            PjgBzi4diinWGdkF8kjdfnycQZXZeYGejmJlZeGl9i2icVqaNVailT6F5iJ90m6
            mvuTS4OK05M0vDk0Q4XUtwvKOzrcd3iq9uisF81M1OIcR7lEewwcLp7tuNNkM3u
            Nna3F2JQFo97Vriy/Xl4/f1cf5VWzXyym7PHhhx4dbgYKAAA7
        </file>
    </attachments>
    <ip>123.211.233.122</ip>
</ticket>
"""

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
