"""osTicket's documented API examples (`setup/doc/api/tickets.md`), verbatim, for tests of clients and servers.

They are reference inputs, not valid samples: the JSON example as osTicket prints it has a trailing comma and
elided base64, so a strict parser must refuse it clearly (`malformed_json`); the XML example parses.
"""

from __future__ import annotations

__all__ = ["GIF_B64", "OSTICKET_JSON_VERBATIM", "OSTICKET_XML"]

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
"""The JSON example exactly as documented (trailing comma, `...` in the base64)."""

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
"""The XML example exactly as documented (CDATA message, a trimmed text file and a base64 GIF)."""

GIF_B64 = "".join(OSTICKET_XML.split(b'encoding="base64">')[1].split(b"</file>")[0].decode("ascii").split())
"""The GIF of the XML example as one base64 string (for building valid variants)."""
