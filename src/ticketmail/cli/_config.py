"""What every command does with `--config`: load the file once, then let command-line flags override it.

The commands share these helpers so that `fetch`, `pipe`, `ingest`, `serve`, `check`, `status`
and `parse` apply the same storage, rules, threading, forms, attachment policy and limits from one file.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from ticketmail.config import Config, load
from ticketmail.errors import ConfigError
from ticketmail.model import MailboxContext
from ticketmail.rules import RuleSet
from ticketmail.threading import ThreadingOptions

__all__ = [
    "DEFAULT_DB",
    "UNSET_DB",
    "add_config_argument",
    "add_threading_arguments",
    "build_pipeline",
    "context_for",
    "load_config",
    "parse_options",
    "report_mailbox_errors",
    "rules_for",
    "state_dir",
    "storage_target",
    "threading_for",
]

DEFAULT_DB = "tickets.sqlite3"


class _UnsetDb(str):
    """The default of `--db`: reads as `tickets.sqlite3`, but `storage_target` knows it was not given."""

    __slots__ = ()


UNSET_DB = _UnsetDb(DEFAULT_DB)
"""Default value of `--db`; a command given no `--db` uses `[storage]` first (see `storage_target`)."""

# Flag destination -> ThreadingOptions attribute.
_THREADING_FLAGS = {
    "requester_header": "requester",
    "unknown_sender": "unknown_sender",
    "closed_ticket": "closed_ticket",
    "subject_tag": "subject_tag",
    "recipients_as_participants": "recipients_as_participants",
    "untrusted_match": "untrusted_match",
}


def add_config_argument(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """`--config FILE`: the ticketmail TOML file (`docs/configuration.md`)."""
    parser.add_argument(
        "--config",
        required=required,
        metavar="FILE",
        help="the ticketmail TOML file (storage, mailboxes, rules, threading, forms, attachments, limits, "
        "api); command-line flags override it",
    )


def add_threading_arguments(parser: argparse.ArgumentParser) -> None:
    """The threading flags; each overrides the `[threading]` key of the same meaning."""
    group = parser.add_argument_group("threading (override [threading])")
    group.add_argument(
        "--requester-header",
        choices=("from", "reply_to"),
        default=None,
        help="which header names the requester (default: from)",
    )
    group.add_argument(
        "--unknown-sender",
        choices=("participant", "new_ticket", "reject"),
        default=None,
        help="a reply from an address not on the ticket: add it as a participant (default), open a new "
        "ticket, or reject it",
    )
    group.add_argument(
        "--closed-ticket",
        choices=("reopen", "new_linked"),
        default=None,
        help="a reply to a closed ticket: reopen it (default) or open a new linked ticket",
    )
    group.add_argument(
        "--subject-tag",
        default=None,
        metavar="FORMAT",
        help="the ticket tag format in subjects (default: '[#{number}]')",
    )
    group.add_argument(
        "--untrusted-match",
        choices=("new_ticket", "quarantine", "reject", "append"),
        default=None,
        help="a reply matched only by the subject tag or a plus address, from someone not on the ticket: "
        "open a new ticket (default), quarantine it, reject it, or append it (then --unknown-sender decides)",
    )
    group.add_argument(
        "--recipients-as-participants",
        action="store_true",
        default=None,
        help="add the people in To/Cc (not the desk's own addresses) as participants of the ticket",
    )


def load_config(path: str | None) -> Config:
    """The configuration in `path`, or the built-in defaults without a file."""
    return load(path) if path else Config(path=None)


def threading_for(config: Config, args: argparse.Namespace) -> ThreadingOptions:
    """`[threading]` with the command-line threading flags applied over it."""
    overrides = {
        option: getattr(args, flag)
        for flag, option in _THREADING_FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    if not overrides:
        return config.threading
    try:
        return attrs.evolve(config.threading, **overrides)
    except (ConfigError, ValueError, TypeError) as exc:
        message = exc.message if isinstance(exc, ConfigError) else str(exc)
        raise ConfigError(f"threading option: {message}", field="threading") from exc


def rules_for(config: Config, args: argparse.Namespace) -> RuleSet | None:
    """`--rules FILE` when given (it replaces `[rules]`), else the file's `[rules]`."""
    path = getattr(args, "rules", None)
    if path:
        from ticketmail.rules import load_rules_file

        return load_rules_file(path)
    return config.rules


def storage_target(config: Config, args: argparse.Namespace, *, default: str | None = DEFAULT_DB) -> str:
    """`--db` (a path or URL) when given, else `[storage]` (`url` or `path`), else `default`."""
    given = getattr(args, "db", None)
    if isinstance(given, _UnsetDb):
        given = None
    target = given or config.storage.target or default
    if not target:
        where = config.path or "the configuration"
        raise ConfigError(f"{where}: [storage] names no database; set path (or url) or pass --db", field="storage")
    return target


def state_dir(config: Config, args: argparse.Namespace, target: str) -> Path:
    """`--state-dir`, else `[storage] state_dir`, else `<database>.state` next to the database."""
    explicit = getattr(args, "state_dir", None)
    if explicit:
        return Path(explicit)
    if config.storage.state_dir:
        return Path(config.storage.state_dir)
    if "://" in target:  # a database URL: the per-machine state lives next to the configuration
        return config.base_dir / "ticketmail.state"
    from ticketmail.sources.poller import default_state_dir  # the poller's own default, loaded when needed

    return default_state_dir(target)


def context_for(config: Config, name: str, addresses: Sequence[str] = ()) -> MailboxContext:
    """The context of mailbox `name`: its configured defaults when the file defines it, plus `addresses`."""
    for mailbox in config.mailboxes:
        if mailbox.name == name:
            context = mailbox.context()
            if addresses:
                merged = tuple(dict.fromkeys((*context.addresses, *addresses)))
                context = attrs.evolve(context, addresses=merged)
            return context
    return MailboxContext(name=name, addresses=tuple(addresses))


def build_pipeline(
    config: Config,
    backend: Any,
    args: argparse.Namespace,
    *,
    context: MailboxContext | None = None,
    hooks: Any = None,
) -> Any:
    """A `Pipeline` with everything the file and the flags say."""
    from ticketmail.pipeline import Pipeline

    return Pipeline(
        backend,
        rules=rules_for(config, args),
        threading=threading_for(config, args),
        email_options=config.email_options,
        attachments=config.attachments,
        context=context,
        hooks=hooks,
    )


def parse_options(config: Config) -> dict[str, Any]:
    """Keyword options for `parse_json`/`parse_xml`: the form, the limits, unknown-field handling.

    The type allow-list is left to the attachment policy, which drops a refused file instead of refusing
    the whole request.
    """
    return {
        "form": config.form,
        "limits": attrs.evolve(config.limits, allowed_types=("*/*",)),
        "ignore_unknown_fields": config.ignore_unknown_fields,
    }


def report_mailbox_errors(config: Config, stream: IO[str], names: Sequence[str] = ()) -> int:
    """Print each invalid mailbox's error (only those in `names` when given); return how many."""
    count = 0
    for error in config.mailbox_errors:
        name = (error.field or "").removeprefix("mailbox:")
        if names and name not in names:
            continue
        count += 1
        print(f"ticketmail: error: {error.message} [{error.code}]", file=stream)
    return count
