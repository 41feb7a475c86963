"""`ticketmail parse`: parse one payload or message and print the normalized result.

Usage:

    ticketmail parse [--as auto|json|xml|email] [--include-bytes] [--rules FILE] [--form FILE]
                     [--ignore-unknown-fields] [--json | --quiet] FILE|-

Output: a readable summary by default; with `--json` exactly one JSON document on one line of stdout
(schema in `docs/cli.md`):

    {"format": "json", "kind": "ticket_request", "result": {...}}            # + "decision" with --rules
    {"format": "email", "kind": "email", "result": {...}, "automatic": ...}  # + "decision" with --rules

`--quiet` prints nothing but errors (a syntax check). An error is one line on stderr with its code; with
`--json` the error document is also printed on stdout.

Exit status (sysexits-style, so a script can tell whose fault a failure is):

* `0`: parsed; the document above.
* `1`: the input was rejected (any `TicketmailError`, including a rules or
  form file that does not load): `{"error": {"code", "status", "message", "field"}}`.
* `2`: usage error: bad arguments (argparse, message on stderr) or an unreadable FILE (error document
  with code `unreadable_input`).
* `70` (`EX_SOFTWARE`): a bug, i.e. an unexpected exception: `{"error": {"code": "internal_error",
  "status": 500, ...}}` naming only the exception type; no traceback unless `TICKETMAIL_DEBUG=1`.

The email format, the automatic-mail classification and `--rules` use `ticketmail.parsing.mime` and
`ticketmail.rules`. The clock for rule evaluation is read here, at the edge, never inside the pure core.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from ticketmail.cli._output import Output, add_output_flags, short
from ticketmail.errors import ConfigError, InputError, TicketmailError
from ticketmail.jsonify import to_jsonable
from ticketmail.model import InboundEmail, MailboxContext, TicketRequest
from ticketmail.parsing.fields import Form

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

__all__ = ["EXIT_INTERNAL", "EXIT_OK", "EXIT_REJECTED", "EXIT_USAGE", "UnreadableInputError", "register", "run"]

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70


class UnreadableInputError(InputError):
    """The FILE given to `ticketmail parse` cannot be read (missing, a directory, no permission)."""

    code = "unreadable_input"
    status = 400


def register(subparsers: Any) -> None:
    """Add the `parse` sub-command."""
    parser = subparsers.add_parser(
        "parse",
        help="parse a JSON/XML ticket payload or a raw email and show the result (--json: as JSON)",
        description="Parse FILE (or stdin with '-') and print the normalized result as one JSON document.",
    )
    parser.add_argument(
        "--as",
        dest="format",
        choices=("auto", "json", "xml", "email"),
        default="auto",
        help="input format (default: auto, sniffed from the first bytes)",
    )
    parser.add_argument("--include-bytes", action="store_true", help="include attachment bytes (base64) in the output")
    parser.add_argument("--rules", metavar="FILE", help="evaluate this TOML rules file and add a 'decision' member")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the ticketmail TOML file: its [rules], [forms], [attachments] and [limits] apply (flags override)",
    )
    parser.add_argument(
        "--form",
        metavar="FILE",
        help="custom fields accepted in JSON/XML payloads: a TOML or JSON file with a 'fields' list, added to "
        "the default form (phone, notes) or the --config [forms]; 'replace = true' in the file uses only them",
    )
    parser.add_argument(
        "--ignore-unknown-fields", action="store_true", help="drop unknown payload members instead of rejecting"
    )
    parser.add_argument("file", metavar="FILE", help="the file to parse, or '-' for stdin")
    add_output_flags(parser, what="parsed input")
    parser.set_defaults(func=run)


def _error(error: TicketmailError) -> dict[str, Any]:
    return {"error": error.to_dict()}


def _person(value: object) -> str:
    if isinstance(value, dict) and "number" in value:  # a phone
        return f"{value['number']} ext {value['ext']}" if value.get("ext") else str(value["number"])
    if isinstance(value, dict) and "email" in value:
        return f"{value['name']} <{value['email']}>" if value.get("name") else str(value["email"])
    if isinstance(value, list):
        return ", ".join(_person(v) for v in value)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else str(value)


_TEXT_MEMBERS = ("from", "email", "name", "to", "cc", "reply_to", "subject", "date", "message_id",
                 "in_reply_to", "source", "priority", "topic_id", "phone", "ip", "content_type", "size")  # fmt: skip


def _reasons(reasons: object) -> str:
    if not isinstance(reasons, list):
        return ""
    return "; ".join(str(r.get("message")) for r in reasons if isinstance(r, dict) and r.get("message"))


def _result_lines(result: dict[str, Any]) -> Iterator[str]:
    for name in _TEXT_MEMBERS:
        value = result.get(name)
        if value not in (None, "", [], {}):
            yield f"  {name + ':':<13} {short(_person(value), 100)}"
    body = result.get("new_text") or result.get("text") or result.get("message")
    if isinstance(body, dict):
        body = body.get("text")
    if body:
        yield f"  {'text:':<13} {short(str(body), 100)}"
    for attachment in result.get("attachments") or ():
        yield f"  {'attachment:':<13} {attachment.get('filename')} ({attachment.get('content_type')}, " + (
            f"{attachment.get('size')} bytes)"
        )
    for name, value in (result.get("custom_fields") or {}).items():
        yield f"  {name + ':':<13} {short(_person(value), 100)}"


def document_lines(document: dict[str, Any]) -> Iterator[str]:
    """The parse document for people: the main members of the result, then the verdicts."""
    yield f"{document['kind']} ({document['format']})"
    yield from _result_lines(document["result"])
    if "automatic" in document:
        automatic = document["automatic"]
        kind = (
            "no: written by a person" if automatic is None else f"{automatic['kind']}: {_reasons(automatic['reasons'])}"
        )
        yield f"automatic:  {kind}"
    policy = document.get("attachment_policy")
    if policy:
        dropped = ", ".join(f"{r['filename']} ({r['code']})" for r in policy["rejected"]) or "none"
        yield f"attachments: kept {', '.join(policy['kept']) or 'none'}; dropped {dropped}"
    decision = document.get("decision")
    if decision:
        yield f"decision:   {decision['action']}" + (
            f" ({_reasons(decision['reasons'])})" if decision["reasons"] else ""
        )


def _emit(output: Output, document: dict[str, Any]) -> None:
    output.record(document)
    if "error" in document:
        error = document["error"]
        output.error(str(error.get("message")), str(error.get("code")))
    else:
        output.lines(document_lines(document))


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UnreadableInputError(f"cannot read {path}: {reason}", field="FILE") from exc


def _load_form(path: str, base: Form | None = None) -> Form:
    """Read a form definition (`{"fields": [...], "replace": false}`) from a TOML or JSON file.

    Its fields are added to `base` (default: the default form), replacing fields of the same name;
    with `replace = true` the file's fields are the whole form.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read form file {path}: {exc.strerror or type(exc).__name__}", field="--form"
        ) from exc
    try:
        loaded = json.loads(data) if path.endswith(".json") else tomllib.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'TOML'}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a table with a 'fields' list", field="--form")
    replace = loaded.pop("replace", False)
    if not isinstance(replace, bool):
        raise ConfigError(f"{path}: replace: expected true or false", field="--form")
    own = Form.from_mapping(loaded, source=path)
    if replace:
        return own
    names = {f.name for f in own.fields}
    kept = [f for f in (base or Form.default()).fields if f.name not in names]
    return Form((*kept, *own.fields))


def _document(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    from ticketmail.cli._config import load_config
    from ticketmail.parsing import parse, sniff_format
    from ticketmail.rules import classify_automatic, evaluate, load_rules_file

    config = load_config(args.config)
    ruleset = load_rules_file(args.rules) if args.rules else config.rules
    form = _load_form(args.form, config.form) if args.form else config.form
    unknown_ok = bool(args.ignore_unknown_fields) or config.ignore_unknown_fields
    options: dict[str, Any] = {"form": form, "ignore_unknown_fields": unknown_ok}
    if config.path is not None:
        import attrs

        options["limits"] = attrs.evolve(config.limits, allowed_types=("*/*",))
    model = parse(body, format=args.format, **options)
    include = bool(args.include_bytes)
    document: dict[str, Any]
    if isinstance(model, TicketRequest):
        fmt = args.format if args.format != "auto" else sniff_format(body)
        document = {"format": fmt, "kind": "ticket_request", "result": to_jsonable(model, include_bytes=include)}
    else:
        assert isinstance(model, InboundEmail)  # noqa: S101 - parse returns one of the two models
        document = {"format": "email", "kind": "email", "result": to_jsonable(model, include_bytes=include)}
        ignore = ruleset.ignore_signals if ruleset is not None else ()
        document["automatic"] = to_jsonable(classify_automatic(model, ignore=ignore))
    if config.path is not None:
        # What the attachment policy of the file would keep of this input (the ticket keeps the rest out).
        files = config.attachments.apply(model.attachments)
        document["attachment_policy"] = {
            "kept": [a.filename for a in files.kept],
            "rejected": [to_jsonable(r) for r in files.rejected],
        }
    if ruleset is not None:
        now = _dt.datetime.now(_dt.timezone.utc)
        decision = evaluate(model, ruleset, context=MailboxContext(), now=now)
        document["decision"] = to_jsonable(decision)
    return document


def run(args: argparse.Namespace) -> int:
    """Run `ticketmail parse` with parsed arguments; returns the exit status."""
    output = Output(args)
    try:
        body = _read(args.file)
        document = _document(args, body)
    except UnreadableInputError as exc:
        _emit(output, _error(exc))
        return EXIT_USAGE
    except TicketmailError as exc:
        _emit(output, _error(exc))
        return EXIT_REJECTED
    except Exception as exc:  # the CLI boundary: report a bug without a traceback
        if os.environ.get("TICKETMAIL_DEBUG") == "1":
            traceback.print_exc()
        message = f"internal error ({type(exc).__name__}); please report it (TICKETMAIL_DEBUG=1 shows details)"
        _emit(output, {"error": {"code": "internal_error", "status": 500, "message": message, "field": None}})
        return EXIT_INTERNAL
    _emit(output, document)
    return EXIT_OK
