"""``ticketmail serve`` and ``ticketmail apikey add/list/revoke``.

``serve`` runs osTicket's ticket API (:mod:`ticketmail.api`) on the embedded threaded server, storing into
a SQLite file; API keys live in their own table of that same file. With ``--config`` the mailboxes of that
file can be fetched through ``POST /api/tasks/cron`` by a key with the ``run_cron`` permission.

``apikey add`` prints the new key alone on the last line of its output, so scripts can take it with
``tail -n 1``; it is shown only this once (only its SHA-256 digest is stored).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from ticketmail.api.handler import DEFAULT_MAX_BODY, ApiHandler
from ticketmail.api.keys import PERMISSIONS, issue_key
from ticketmail.api.server import ApiServer, serve
from ticketmail.cli._args import positive_int
from ticketmail.errors import TicketmailError

__all__ = ["CRON_TIME_BUDGET", "register"]

CRON_TIME_BUDGET = 20.0
"""Seconds one mailbox may take in a ``POST /api/tasks/cron`` request: URL probers rarely wait long."""


def _fail(error: TicketmailError) -> int:
    print(f"ticketmail: error: {error}", file=sys.stderr)
    return 1


def _cron(args: argparse.Namespace, pipeline: Any) -> Callable[[], object]:
    """``poll_once`` over the configured mailboxes, sharing ``fetch``'s state directory (and so its locks)."""
    from ticketmail.sources.config import load_config
    from ticketmail.sources.poller import Poller, target_for

    config = load_config(args.config)
    from ticketmail.backends.url import local_state_dir

    state = local_state_dir(args.db)
    configured = config.storage.get("state_dir")
    if isinstance(configured, str) and configured:
        base = Path(config.path).resolve().parent if config.path else Path.cwd()
        state = base / configured
    targets = [
        target_for(m, skip=pipeline.is_processed, state_dir=state, time_budget=CRON_TIME_BUDGET)
        for m in config.mailboxes
        if m.protocol != "lmtp"  # delivered by the mail server to `ticketmail receive`: nothing to fetch
    ]
    make_leases = getattr(pipeline.backend, "lease_manager", None)  # PostgreSQL: leases shared by every process
    leases = make_leases([t.name for t in targets], fair_share=False) if callable(make_leases) else None
    poller = Poller(targets, pipeline, state=state, lock_factory=None if leases is None else leases.lock)
    return poller.poll_once


def _with_status_page(args: argparse.Namespace, handler: ApiHandler, backend: Any, keys: Any) -> Any:
    """`/status` and `/status.json` in front of the API, reading the health `fetch` writes for this database."""
    from ticketmail.api.status import StatusPage
    from ticketmail.backends.url import local_state_dir
    from ticketmail.sources.health import read_health

    names: list[str] = []
    state = local_state_dir(args.db)
    if args.config:
        from ticketmail.sources.config import load_config

        config = load_config(args.config)
        names = [m.name for m in config.mailboxes]
        configured = config.storage.get("state_dir")
        if isinstance(configured, str) and configured:
            base = Path(config.path).resolve().parent if config.path else Path.cwd()
            state = base / configured
    health_file = state / "health.json"
    return StatusPage(handler, backend=backend, keys=keys, health=lambda: read_health(health_file), mailboxes=names)


def _cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        from ticketmail.backends.url import open_backend, open_key_store
        from ticketmail.pipeline import Pipeline

        rules = None
        if args.rules:
            from ticketmail.rules import load_rules_file

            rules = load_rules_file(args.rules)
        backend = open_backend(args.db)
        pipeline = Pipeline(backend, rules=rules)
        keys = open_key_store(args.db)
        cron = None
        if args.config:
            cron = _cron(args, pipeline)
        handler = ApiHandler(pipeline, keys, cron=cron, max_body=args.max_body)
        app = _with_status_page(args, handler, backend, keys)
    except TicketmailError as exc:
        return _fail(exc)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)

    def ready(server: ApiServer) -> None:
        host, port = str(server.server_address[0]), int(server.server_address[1])
        print(f"ticketmail: serving the ticket API on http://{host}:{port}/api/ (Ctrl-C to stop)", flush=True)

    try:
        serve(app, args.host, args.port, ready=ready)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"ticketmail: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        keys.close()
        backend.close()
    return 0


def _key_store(db: str) -> Any:
    from ticketmail.backends.url import open_key_store

    return open_key_store(db)  # a postgresql:// URL or a SQLite file


def _cmd_add(args: argparse.Namespace) -> int:
    try:
        store = _key_store(args.db)
        issued = issue_key(
            store, networks=args.ip, permissions=args.permission or ("create_tickets", "submit_email"), name=args.name
        )
        store.close()
    except TicketmailError as exc:
        return _fail(exc)
    key = issued.key
    print(f"API key {key.key_id}{f' ({key.name})' if key.name else ''} added")
    print(f"  allowed from: {', '.join(str(n) for n in key.networks)}")
    print(f"  permissions:  {', '.join(sorted(key.permissions))}")
    print("  The key is shown only this once; store it now (only its digest is kept):")
    print(issued.secret, flush=True)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        store = _key_store(args.db)
        keys = store.list()
        store.close()
    except TicketmailError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps([k.to_dict() for k in keys], indent=2))
        return 0
    if not keys:
        print("no API keys")
        return 0
    print(f"{'ID':<12}  {'ACTIVE':<6}  {'PERMISSIONS':<40}  {'NETWORKS':<30}  NAME")
    for k in keys:
        print(
            f"{k.key_id:<12}  {'yes' if k.active else 'no':<6}  {','.join(sorted(k.permissions)):<40}  "
            f"{','.join(str(n) for n in k.networks):<30}  {k.name}"
        )
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    try:
        store = _key_store(args.db)
        key = store.revoke(args.key_id)
        store.close()
    except TicketmailError as exc:
        return _fail(exc)
    print(f"API key {key.key_id} revoked")
    return 0


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``apikey`` to the ``ticketmail`` command."""
    p = subparsers.add_parser(
        "serve",
        help="serve osTicket's HTTP ticket API",
        description="Serve osTicket's HTTP ticket API (POST /api/tickets.json, .xml, .email) on the SQLite default.",
    )
    p.add_argument("--db", required=True, help="a SQLite file or postgresql:// URL (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--config", help="TOML configuration with [[mailboxes]]: enables POST /api/tasks/cron")
    p.add_argument("--rules", metavar="FILE", help="a rules TOML file (default: built-in rules only)")
    p.add_argument(
        "--max-body",
        type=positive_int("a number of bytes"),
        default=DEFAULT_MAX_BODY,
        help="request body limit in bytes (default 10 MiB)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_serve)

    k = subparsers.add_parser("apikey", help="manage API keys (add, list, revoke)")
    ksub = k.add_subparsers(dest="apikey_command", metavar="ACTION", required=True)

    add = ksub.add_parser("add", help="issue a new key; prints it alone on the last line, only this once")
    add.add_argument("--db", required=True, help="tickets database: a SQLite file or postgresql:// URL")
    add.add_argument("--ip", action="append", required=True, help="allowed client address or CIDR network (repeatable)")
    add.add_argument(
        "--permission",
        action="append",
        choices=PERMISSIONS,
        help="what the key may do (repeatable; default: create_tickets and submit_email)",
    )
    add.add_argument("--name", default="", help="a label for people")
    add.set_defaults(func=_cmd_add)

    lst = ksub.add_parser("list", help="list keys (never the secrets)")
    lst.add_argument("--db", required=True, help="tickets database: a SQLite file or postgresql:// URL")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_cmd_list)

    rev = ksub.add_parser("revoke", help="deactivate a key by its id")
    rev.add_argument("--db", required=True, help="tickets database: a SQLite file or postgresql:// URL")
    rev.add_argument("key_id", metavar="KEY_ID", help="the key's id, as `apikey list` shows it")
    rev.set_defaults(func=_cmd_revoke)
