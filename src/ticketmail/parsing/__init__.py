"""Parsers: bytes in, normalized models out. Pure, no I/O.

OWNER: the payload work (issue 2) for JSON/XML/data URLs and the dispatcher; the email work (issue 3) for
``mime.py`` and its helpers. Public functions: ``parse_json``, ``parse_xml``, ``parse_email``, and
``parse(body, content_type=None, format="auto")`` which dispatches.
"""
