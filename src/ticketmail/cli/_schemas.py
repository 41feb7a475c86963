"""The fields of every `--json` output, as data: `docs/cli.md` shows these tables, and a test keeps both true.

Each `Schema` names the commands that print it and its fields: name, JSON type, when it is present and what
it means. `render(schema)` is the Markdown table of `docs/cli.md`; `problems(schema, obj)` says how one
printed object departs from its schema (an unknown field, a missing one, a wrong type).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["SCHEMAS", "Field", "Schema", "document", "problems", "render"]

_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


@attrs.frozen
class Field:
    """One member of a JSON object.

    `type` is `string`, `integer`, `number`, `boolean`, `array`, `object`, `null`, or several joined with
    ` or `; `present` is `always` or says when.
    """

    name: str
    type: str
    present: str
    meaning: str

    def accepts(self, value: object) -> bool:
        """Whether `value` has one of the field's JSON types (a boolean is never a number)."""
        for kind in self.type.split(" or "):
            if isinstance(value, bool) and kind in ("integer", "number"):
                continue
            if isinstance(value, _TYPES[kind]):
                return True
        return False


@attrs.frozen
class Schema:
    """The objects some commands print with `--json`, one per line."""

    name: str
    commands: str
    fields: tuple[Field, ...]


def _f(name: str, type_: str, meaning: str, present: str = "always") -> Field:
    return Field(name, type_, present, meaning)


_REASONS = _f("reasons", "array", "what fired, each `{code, message, value, source}` (rules, threading, duplicates)")
_OUTCOME: tuple[Field, ...] = (
    _f("entry", "integer or null", "the thread entry created, if any"),
    _f("message_id", "string or null", "the message's Message-ID (generated when it had none)"),
    _f("alert", "boolean", "whether staff should be alerted"),
    _f("autorespond", "boolean", "whether an auto-response may be sent"),
    _f("already_processed", "boolean", "this very item was processed before (a redelivery)"),
    _f("error", "object or null", "`{code, status, message, field}` behind a `failed` or `rejected` outcome"),
)
_ACTION = _f("action", "string", "`created`, `appended`, `ignored`, `duplicate`, `rejected` or `failed` (quarantined)")
_TICKET = _f("ticket", "string or null", "the ticket number concerned")
_DRY = _f("dry_run", "boolean", "`true`: nothing was stored", "with `--dry-run`")

_TICKET_FIELDS: tuple[Field, ...] = (
    _f("number", "string", "the ticket number"),
    _f("subject", "string", "the subject"),
    _f("requester", "string", "the requester's email address"),
    _f("requester_name", "string or null", "the requester's display name"),
    _f("status", "string", "`open`, `closed` or `merged`"),
    _f("entries", "integer", "how many thread entries (with `show`: the entries themselves, see below)"),
    _f("created", "string", "ISO 8601, UTC"),
    _f("updated", "string", "ISO 8601, UTC"),
    _f("source", "string", "where the ticket came from (`Email`, `API`, ...)"),
    _f("mailbox", "string or null", "the mailbox it was opened from"),
    _f("department", "string or null", "routing: department"),
    _f("team", "string or null", "routing: team"),
    _f("category", "string or null", "routing: category"),
    _f("priority", "string or null", "routing: priority"),
    _f("topic_id", "integer or string or null", "the help topic"),
    _f("assignee", "string or null", "who it is assigned to"),
    _f("tags", "array", "tags (strings)"),
    _f("participants", "array", "other people on the ticket (email addresses)"),
    _f("merged_into", "string or null", "the ticket it was merged into"),
    _f("custom_fields", "object", "custom field values by name"),
)

_PROVENANCE = _f("provenance", "object or null", "`{mailbox, kind, key}`: where the message came from")

SCHEMAS: tuple[Schema, ...] = (
    Schema(
        "ingest",
        "`ingest --json` (also with `--dry-run`)",
        (
            _f("source", "string", "the input: the file; `folder#name` in a Maildir, `file#N` in an mbox"),
            _ACTION,
            _TICKET,
            _REASONS,
            _f("kind", "string", "`email`, `json` or `xml`"),
            _DRY,
            *_OUTCOME,
        ),
    ),
    Schema(
        "fetch",
        "`fetch --json` (`--once`, `--watch`, `--dry-run`)",
        (
            _f("source", "string", "`<kind>:<mailbox>/<key>`: the item's provenance (UID, UIDL, file name, hash)"),
            _ACTION,
            _TICKET,
            _REASONS,
            _f("mailbox", "string", "the configured mailbox"),
            _DRY,
            _f("truncated", "boolean", "`true`: an oversize message passed on as its headers only", "oversize only"),
            _f("note", "string or null", "what was left out of an oversize message", "oversize only"),
            *_OUTCOME,
        ),
    ),
    Schema(
        "pipe",
        "`pipe --json`",
        (
            _f("mailbox", "string", "the mailbox recorded (`pipe` by default)"),
            _f("exit", "integer", "the exit status (sysexits: 0, 65, 75)"),
            _f("result", "string", "`ok`, `data error`, `temporary failure` or `refused`"),
            _f("message", "string", "the line a person reads (also on stderr without `--json`)"),
            _f("source", "string or null", "`pipe:<mailbox>/<sha256>`, `null` when nothing was processed"),
            _f("action", "string or null", "as for `ingest`, `null` when nothing was processed"),
            _TICKET,
            _REASONS,
            *(_f(f.name, f.type, f.meaning, "when processed") for f in _OUTCOME),
        ),
    ),
    Schema(
        "retry",
        "`quarantine retry --json`",
        (_f("id", "integer", "the quarantined message retried"), _ACTION, _TICKET, _REASONS, *_OUTCOME),
    ),
    Schema("tickets", "`tickets --json`", _TICKET_FIELDS),
    Schema(
        "show",
        "`show --json` (the fields of `tickets --json`, then these)",
        (
            *(f for f in _TICKET_FIELDS if f.name != "entries"),
            _f("entry_count", "integer", "how many thread entries"),
            _f(
                "entries",
                "array",
                "the thread, oldest first: `{id, ticket, kind, author, author_name, body, html, created, "
                "message_id, attachments, files, position}` (`kind`: `message`, `reply`, `note`; `attachments`: "
                "sha256 digests; `files`: `{filename, content_type, size, disposition}`)",
            ),
        ),
    ),
    Schema(
        "audit",
        "`audit --json`, `audit show ID --json`",
        (
            _f("id", "integer or null", "the decision's id (for `audit show`)"),
            _f("at", "string", "when it was decided (ISO 8601)"),
            _f("mailbox", "string or null", "the mailbox of the message"),
            _f("origin", "string or null", "the provenance in words (mailbox, folder, UID or file name)"),
            _PROVENANCE,
            _f("sender", "string or null", "the sender's address"),
            _f("subject", "string or null", "the subject"),
            _f("outcome", "string", "the action taken, as for `ingest`"),
            _TICKET,
            _f("entry", "integer or null", "the thread entry created"),
            _f("message_id", "string or null", "the Message-ID"),
            _f("reasons", "array", "`{code, message, value}`: every rule, filter or signal that fired"),
            _f("headers", "array", "`[name, value]` pairs of the headers that mattered"),
        ),
    ),
    Schema(
        "quarantine",
        "`quarantine list --json`, `quarantine show ID --json`",
        (
            _f("id", "integer", "the quarantined message (for `show`, `retry`, `export`, `discard`)"),
            _f("at", "string", "when it was quarantined (ISO 8601)"),
            _f("mailbox", "string or null", "the mailbox it came from"),
            _PROVENANCE,
            _f("reason_code", "string", "the stable error code"),
            _f("reason", "string", "the error in words"),
            _f("attempts", "integer", "how many times it was tried"),
            _f("size", "integer", "its raw size in bytes"),
            _f("from", "string or null", "its From header, decoded"),
            _f("subject", "string or null", "its Subject header, decoded"),
            _f("message_id", "string or null", "its Message-ID header"),
        ),
    ),
    Schema(
        "apikey",
        "`apikey list --json`, `apikey add --json`",
        (
            _f("key_id", "string", "the key's id (for `apikey revoke`)"),
            _f("name", "string", "the label"),
            _f("networks", "array", "the client addresses or networks it may be used from"),
            _f("permissions", "array", "`create_tickets`, `submit_email`, `run_cron`, `view_status`"),
            _f("active", "boolean", "`false` once revoked"),
            _f("created", "string", "ISO 8601"),
            _f("secret", "string", "the key itself, shown only this once", "`apikey add` only"),
        ),
    ),
    Schema(
        "status",
        "`status --json`",
        (
            _f("name", "string", "the mailbox"),
            _f("state", "string", "`ok`, `failing`, `unreachable` or `unknown` (never polled)"),
            _f("reachable", "boolean or null", "whether the last poll reached the server"),
            _f("last_attempt", "string or null", "the last poll (ISO 8601)"),
            _f("last_success", "string or null", "the last successful poll (ISO 8601)"),
            _f("waiting", "integer or null", "messages still waiting on the server, if known"),
            _f("last_error", "object or null", "`{code, stage, message}` of the last failed poll"),
            _f("consecutive_failures", "integer", "failed polls in a row"),
            _f("last_processed", "integer", "messages the last poll processed"),
            _f("last_failed", "integer", "messages that failed in the last poll"),
            _f("last_oversized", "integer", "oversize messages the last poll left on the server"),
        ),
    ),
    Schema(
        "check",
        "`check --json`",
        (
            _f("mailbox", "string", "the mailbox"),
            _f("ok", "boolean", "whether every stage passed"),
            _f("stage", "string or null", "the stage that failed: `config`, `dns`, `connect`, `tls`, `auth`, ..."),
            _f("message", "string or null", "what failed, and what to do"),
            _f("enabled", "boolean or null", "`false`: fetch skips it; `null` for an invalid table"),
            *(
                _f(name, type_, meaning, "unless `stage` is `config`")
                for name, type_, meaning in (
                    ("capabilities", "array", "the server's capabilities (IDLE, MOVE, UIDPLUS, ...)"),
                    ("idle", "boolean", "whether IMAP IDLE is available"),
                    ("move", "boolean", "whether IMAP MOVE is available"),
                    ("uidplus", "boolean", "whether IMAP UIDPLUS is available"),
                    ("message_count", "integer or null", "messages in the folder"),
                    ("elapsed", "number", "seconds the check took"),
                )
            ),
        ),
    ),
    Schema(
        "oauth",
        "`oauth status --json`",
        (
            _f("mailbox", "string", "the mailbox"),
            _f("stored", "boolean", "whether tokens are stored for it"),
            _f("refresh_token", "boolean", "whether a refresh token is stored"),
            _f("expires_in", "integer or null", "seconds the cached access token still lasts (0: expired)"),
            _f("grant", "string", "the grant the next sign-in uses (`refresh_token`, `client_credentials`, ...)"),
            _f("scope", "string or null", "the scope granted"),
        ),
    ),
    Schema(
        "parse",
        "`parse --json` (one document)",
        (
            _f("format", "string", "`json`, `xml` or `email`: the format that was parsed", "parsed"),
            _f("kind", "string", "`ticket_request` or `email`", "parsed"),
            _f("result", "object", "the model: every attribute of `TicketRequest` or `InboundEmail`", "parsed"),
            _f("automatic", "object or null", "the automatic-mail classification, `null` for a person", "email"),
            _f("decision", "object", "the rules' verdict", "with `--rules` or `[rules]`"),
            _f("attachment_policy", "object", "`{kept, rejected}` under `[attachments]`", "with `--config`"),
            _f("error", "object", "`{code, status, message, field}` instead of the above", "rejected input"),
        ),
    ),
)
"""Every `--json` output of the CLI."""


def render(schema: Schema) -> str:
    """The Markdown table of `schema`, as `docs/cli.md` shows it."""
    lines = [f"Printed by {schema.commands}.", "", "| Field | Type | Present | Meaning |", "|---|---|---|---|"]
    lines += [f"| `{f.name}` | {f.type} | {f.present} | {f.meaning} |" for f in schema.fields]
    return "\n".join(lines)


def problems(schema: Schema, obj: Mapping[str, Any]) -> list[str]:
    """How `obj` departs from `schema`: unknown fields, missing `always` fields, values of a wrong type."""
    fields = {f.name: f for f in schema.fields}
    found = [f"unknown field {name!r}" for name in obj if name not in fields]
    found += [f"missing field {f.name!r}" for f in schema.fields if f.present == "always" and f.name not in obj]
    found += [
        f"{name!r} is {type(value).__name__}, expected {fields[name].type}"
        for name, value in obj.items()
        if name in fields and not fields[name].accepts(value)
    ]
    return found


def document() -> str:
    """Every schema as the `docs/cli.md` blocks (`python -m ticketmail.cli._schemas` prints them)."""
    return "\n\n".join(
        f"### JSON: {s.name}\n\n<!-- json-schema: {s.name} -->\n{render(s)}\n<!-- /json-schema -->" for s in SCHEMAS
    )


if __name__ == "__main__":  # pragma: no cover
    print(document())
