"""`ticketmail serve` and `ticketmail apikey add/list/revoke`.

`serve` runs osTicket's ticket API (`ticketmail.api`) on the embedded threaded server, storing into
the ticket database (`--db` or `[storage]`); API keys live in their own table of that same file (or in
`[api] keys`). `--config` applies the whole file: rules, threading, the `[forms]` custom fields, the
`[attachments]` policy, `[limits]` and `[api]` (body limit, listen address, trusted proxies); its
mailboxes can be fetched through `POST /api/tasks/cron` by a key with the `run_cron` permission.

`apikey add` prints the new key alone on the last line of its output, so scripts can take it with
`tail -n 1`; it is shown only this once (only its SHA-256 digest is stored).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import attrs

from ticketmail.api.handler import DEFAULT_MAX_BODY, ApiHandler, Request, Response
from ticketmail.api.keys import PERMISSIONS, issue_key
from ticketmail.api.server import ApiServer, serve
from ticketmail.backends.url import open_key_store
from ticketmail.cli._args import ArgSpec, add_arguments, positive_int
from ticketmail.cli._common import LeasingBackend
from ticketmail.cli._config import (
    add_config_argument,
    add_threading_arguments,
    build_pipeline,
    load_config,
    report_mailbox_errors,
    state_dir,
    storage_target,
)
from ticketmail.cli._output import Output, add_output_flags, error_line
from ticketmail.config import Config
from ticketmail.errors import ConfigError, TicketmailError

__all__ = ["CRON_TIME_BUDGET", "register"]

CRON_TIME_BUDGET = 20.0
"""Seconds one mailbox may take in a `POST /api/tasks/cron` request: URL probers rarely wait long."""


def _fail(error: TicketmailError) -> int:
    print(error_line(error), file=sys.stderr)
    return 1


def _cron(config: Config, args: argparse.Namespace, target: str, pipeline: Any) -> Callable[[], object] | None:
    """`poll_once` over the configured mailboxes, sharing `fetch`'s state directory (and so its locks)."""
    from ticketmail.sources.config import DELIVERED_PROTOCOLS
    from ticketmail.sources.poller import Poller, target_for

    # pipe and lmtp mailboxes are delivered by the mail server: nothing to fetch
    mailboxes = [m for m in config.mailboxes if m.protocol not in DELIVERED_PROTOCOLS]
    if not mailboxes:
        return None
    state = state_dir(config, args, target)
    targets = [
        target_for(m, skip=pipeline.is_processed, state_dir=state, time_budget=CRON_TIME_BUDGET) for m in mailboxes
    ]
    backend = pipeline.backend  # PostgreSQL: leases shared by every process
    leases = (
        backend.lease_manager([t.name for t in targets], ttl=config.storage.lease_ttl, fair_share=False)
        if isinstance(backend, LeasingBackend)
        else None
    )
    poller = Poller(targets, pipeline, state=state, lock_factory=None if leases is None else leases.lock)
    return poller.poll_once


def _client_address(proxies: tuple[Any, ...]) -> Callable[[Request], Request]:
    """The request with `remote_addr` set from `X-Forwarded-For` when the peer is a trusted proxy.

    The address is taken from the right: the first hop that is not itself a trusted proxy is the client
    (a client can put anything on the left of the header).
    """

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in proxies)

    def resolve(request: Request) -> Request:
        if not proxies or not trusted(request.remote_addr):
            return request
        forwarded = ",".join(value for name, value in request.headers if name == "x-forwarded-for")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not trusted(hop):
                try:
                    client = str(ipaddress.ip_address(hop.strip("[]")))
                except ValueError:
                    return request  # a garbled header: keep the proxy's own address (matches no client key)
                return attrs.evolve(request, remote_addr=client)
        return request

    return resolve


def _handler(config: Config, args: argparse.Namespace, target: str, pipeline: Any, keys: Any) -> ApiHandler:
    from ticketmail.cli._config import context_for, parse_options

    max_body = args.max_body if args.max_body is not None else config.api.max_body
    return ApiHandler(
        pipeline,
        keys,
        cron=_cron(config, args, target, pipeline) if args.config else None,
        max_body=max_body,
        context=context_for(config, config.api.mailbox),
        parse_options=parse_options(config),
    )


def _behind_proxies(config: Config, app: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """`app` seeing the client's address behind `[api] trusted_proxies` (`app` itself without any)."""
    if not config.api.trusted_proxies:
        return app
    resolve = _client_address(config.api.trusted_proxies)

    def behind_proxy(request: Request) -> Response:
        return app(resolve(request))

    return behind_proxy


def _with_status_page(
    config: Config, args: argparse.Namespace, target: str, handler: ApiHandler, backend: Any, keys: Any
) -> Any:
    """`/status` and `/status.json` in front of the API, reading the health `fetch` writes for this database."""
    from ticketmail.api.status import StatusPage
    from ticketmail.sources.health import read_health

    names = [m.name for m in config.mailboxes if m.protocol not in ("pipe", "lmtp")]
    health_file = state_dir(config, args, target) / "health.json"
    return StatusPage(handler, backend=backend, keys=keys, health=lambda: read_health(health_file), mailboxes=names)


def _cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    backend = keys = None
    try:
        from ticketmail.cli.ingest import _open_backend

        config = load_config(args.config)
        report_mailbox_errors(config, sys.stderr)
        target = storage_target(config, args, default=None)
        backend = _open_backend(target, create=True)
        pipeline = build_pipeline(config, backend, args)
        keys = open_key_store(_keys_path(config, args, target))
        handler = _handler(config, args, target, pipeline, keys)
        app = _behind_proxies(config, _with_status_page(config, args, target, handler, backend, keys))
    except TicketmailError as exc:
        if keys is not None:
            keys.close()
        if backend is not None:
            backend.close()
        return _fail(exc)
    host = args.host if args.host is not None else config.api.host
    port = args.port if args.port is not None else config.api.port
    max_connections: int = args.max_connections or config.api.max_connections
    request_timeout: float = args.request_timeout or config.api.request_timeout

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)

    def ready(server: ApiServer) -> None:
        host, port = str(server.server_address[0]), int(server.server_address[1])
        print(f"ticketmail: serving the ticket API on http://{host}:{port}/api/ (Ctrl-C to stop)", flush=True)

    try:
        serve(app, host, port, ready=ready, max_connections=max_connections, request_timeout=request_timeout)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"ticketmail: error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        keys.close()
        backend.close()
    return 0


def _keys_path(config: Config, args: argparse.Namespace, target: str | None = None) -> str:
    """Where API keys live: `--db` when given, else `[api] keys`, else the ticket store itself.

    A SQLite file or a `postgresql://` URL (the keys then sit in the same database and schema).
    """
    if getattr(args, "db", None):
        return str(args.db)
    if config.api.keys:
        return config.api.keys
    target = target or config.storage.target
    if target:
        return target
    raise ConfigError("name the database of the API keys with --db (or --config)", field="db")


def _key_store(args: argparse.Namespace) -> Any:
    return open_key_store(_keys_path(load_config(args.config), args))


def _cmd_add(args: argparse.Namespace) -> int:
    output = Output(args)
    try:
        store = _key_store(args)
        issued = issue_key(
            store, networks=args.ip, permissions=args.permission or ("create_tickets", "submit_email"), name=args.name
        )
        store.close()
    except TicketmailError as exc:
        return _fail(exc)
    key = issued.key
    output.record({**key.to_dict(), "secret": issued.secret})
    output.text(f"API key {key.key_id}{f' ({key.name})' if key.name else ''} added")
    output.text(f"  allowed from: {', '.join(str(n) for n in key.networks)}")
    output.text(f"  permissions:  {', '.join(sorted(key.permissions))}")
    output.text("  The key is shown only this once; store it now (only its digest is kept):")
    output.text(issued.secret)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    output = Output(args)
    try:
        store = _key_store(args)
        keys = store.list()
        store.close()
    except TicketmailError as exc:
        return _fail(exc)
    for k in keys:  # with --json: one object per key per line, like every other --json
        output.record(k.to_dict())
    if not keys:
        output.text("no API keys")
    rows = [["ID", "ACTIVE", "PERMISSIONS", "NETWORKS", "NAME"]]
    rows += [
        [k.key_id, "yes" if k.active else "no", ",".join(sorted(k.permissions)), ",".join(map(str, k.networks)), k.name]
        for k in keys
    ]
    output.table(rows)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    try:
        store = _key_store(args)
        key = store.revoke(args.key_id)
        store.close()
    except TicketmailError as exc:
        return _fail(exc)
    print(f"API key {key.key_id} revoked")
    return 0


_SERVE_ARGS: tuple[ArgSpec, ...] = (
    (("--db",), {"metavar": "FILE|URL", "help": "the tickets database (created if missing; overrides [storage])"}),
    (("--host",), {"default": None, "help": "address to listen on (overrides [api] host; default 127.0.0.1)"}),
    (("--port",), {"type": int, "default": None, "help": "port to listen on (overrides [api] port; default 8080)"}),
    (("--config",), {"metavar": "FILE",
                     "help": "the ticketmail TOML file: storage, rules, threading, forms, attachment policy, limits "
                     "and [api]; its [[mailboxes]] enable POST /api/tasks/cron"}),
    (("--rules",), {"metavar": "FILE", "help": "a rules TOML file (replaces [rules])"}),
    (("--max-body",), {"type": positive_int("a number of bytes"), "default": None,
                       "help": "request body limit in bytes (overrides [api] max_body; default "
                       f"{DEFAULT_MAX_BODY // 1048576} MiB)"}),
    (("--max-connections",), {"type": positive_int("a number of connections"), "default": None,
                              "help": "connections served at once; one more is answered 503 (overrides [api] "
                              "max_connections; default 64)"}),
    (("--request-timeout",), {"type": float, "default": None, "metavar": "SECONDS",
                              "help": "time a client has to send its whole request (overrides [api] "
                              "request_timeout; default 30)"}),
)  # fmt: skip

_KEYS_DB: ArgSpec = (
    ("--db",),
    {"help": "SQLite tickets database (default: [api] keys or [storage] path of --config)"},
)


def register(subparsers: Any) -> None:
    """Add `serve` and `apikey` to the `ticketmail` command."""
    p = subparsers.add_parser(
        "serve",
        help="serve osTicket's HTTP ticket API",
        description="Serve osTicket's HTTP ticket API (POST /api/tickets.json, .xml, .email) on the SQLite default.",
    )
    add_arguments(p, _SERVE_ARGS)
    add_threading_arguments(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_serve)
    _register_apikey(subparsers)


def _register_apikey(subparsers: Any) -> None:
    k = subparsers.add_parser("apikey", help="manage API keys (add, list, revoke)")
    ksub = k.add_subparsers(dest="apikey_command", metavar="ACTION", required=True)

    add = ksub.add_parser("add", help="issue a new key; prints it alone on the last line, only this once")
    add_arguments(add, [_KEYS_DB])
    add_config_argument(add)
    add.add_argument("--ip", action="append", required=True, help="allowed client address or CIDR network (repeatable)")
    add.add_argument(
        "--permission",
        action="append",
        choices=PERMISSIONS,
        help="what the key may do (repeatable; default: create_tickets and submit_email)",
    )
    add.add_argument("--name", default="", help="a label for people")
    add_output_flags(add, quiet=False, what="key issued (with its secret)")
    add.set_defaults(func=_cmd_add)

    lst = ksub.add_parser("list", help="list keys (never the secrets)")
    add_arguments(lst, [_KEYS_DB])
    add_config_argument(lst)
    add_output_flags(lst, quiet=False, what="key")
    lst.set_defaults(func=_cmd_list)

    rev = ksub.add_parser("revoke", help="deactivate a key by its id")
    add_arguments(rev, [_KEYS_DB])
    add_config_argument(rev)
    rev.add_argument("key_id", metavar="KEY_ID", help="the key's id, as `apikey list` shows it")
    rev.set_defaults(func=_cmd_revoke)
