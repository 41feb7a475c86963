"""`ticketmail receive`: the LMTP/SMTP receiver (see `ticketmail.receive`).

`receive --config FILE [--lmtp ADDR] [--smtp ADDR] [--rules FILE]` serves until SIGTERM/SIGINT. `ADDR` is
`unix:/path/to/socket` or `HOST:PORT`; the command line overrides `[receive] lmtp`/`smtp`. Mailboxes
(their addresses, department, category, priority), `[storage] sqlite` and `[threading]` come from the same
file. A delivery is logged as one line on standard error with `--verbose`.

Exit codes: 0 stopped by a signal; 2 bad usage or configuration; 3 the database cannot be opened; 1 a listener
cannot be set up (address in use, permission denied).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import Any

from ticketmail.cli._output import error_line
from ticketmail.errors import BackendError, ConfigError, TicketmailError

__all__ = ["register"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BACKEND = 0, 1, 2, 3


def register(subparsers: Any) -> None:
    """Add the `receive` sub-command."""
    receive = subparsers.add_parser(
        "receive",
        help="receive mail from the mail server over LMTP (or SMTP) and answer per recipient at delivery",
        description="Run an LMTP and/or SMTP server that stores each message before it answers: 250 after the "
        "commit, 550/552/554 for a refusal (the mail server bounces), 451 when storage is unavailable (it retries).",
    )
    receive.add_argument("--config", required=True, metavar="FILE", help="the ticketmail TOML file")
    receive.add_argument("--lmtp", metavar="ADDR", help="LMTP listener: unix:/path/to/socket or HOST:PORT")
    receive.add_argument("--smtp", metavar="ADDR", help="SMTP listener: HOST:PORT (only configured recipients)")
    receive.add_argument("--rules", metavar="FILE", help="a rules TOML file (default: built-in rules only)")
    receive.add_argument("-v", "--verbose", action="store_true", help="log every delivery (and tracebacks) on stderr")
    receive.set_defaults(func=run_receive)


def _error(exc: TicketmailError) -> None:
    print(error_line(exc), file=sys.stderr)


def run_receive(args: argparse.Namespace) -> int:
    """Serve until a signal; return the exit code."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ticketmail: %(levelname)s: %(message)s"))
    logger = logging.getLogger("ticketmail")
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    logger.propagate = False
    try:
        return _receive(args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _settings(args: argparse.Namespace, config: Any) -> Any:
    """`[receive]` with `--lmtp`/`--smtp` over it; a `ConfigError` without any listener."""
    import attrs

    from ticketmail.receive import parse_listen_address, receive_settings_from_table

    settings = receive_settings_from_table(config.tables.get("receive", {}), path=args.config, base_dir=config.base_dir)
    overrides: dict[str, Any] = {
        kind: parse_listen_address(value, where=f"--{kind}")
        for kind, value in (("lmtp", args.lmtp), ("smtp", args.smtp))
        if value
    }
    if overrides:
        try:
            settings = attrs.evolve(settings, **overrides)
        except ValueError as exc:
            raise ConfigError(f"{args.config}: receive.{exc}") from exc
    if settings.lmtp is None and settings.smtp is None:
        raise ConfigError(f"{args.config}: no listener: give --lmtp/--smtp or [receive] lmtp/smtp", field="lmtp")
    return settings


def _open(target: str) -> Any:
    """The backend, or the exit code after saying why it cannot be opened."""
    from ticketmail.cli._common import open_backend

    try:
        return open_backend(target, create=True)
    except TicketmailError as exc:
        _error(exc)
        return EXIT_BACKEND if isinstance(exc, BackendError) else EXIT_USAGE


def _serve(args: argparse.Namespace, config: Any, settings: Any, backend: Any) -> int:
    from ticketmail.cli._config import build_pipeline
    from ticketmail.receive import Receiver

    try:
        pipeline = build_pipeline(config, backend, args)
        assert config.sources is not None  # noqa: S101 - load() always sets it
        receiver = Receiver.from_config(pipeline, config.sources, settings)

        def ready() -> None:
            for kind, address in receiver.bound.items():
                print(f"ticketmail: receiving {kind.upper()} on {address}; SIGTERM or Ctrl-C stops", file=sys.stderr)
            sys.stderr.flush()

        receiver.serve_forever(on_ready=ready)
    except TicketmailError as exc:
        _error(exc)
        return EXIT_BACKEND if isinstance(exc, BackendError) else EXIT_USAGE
    except OSError as exc:
        print(f"ticketmail: error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        with contextlib.suppress(TicketmailError):
            backend.close()
    return EXIT_OK


def _receive(args: argparse.Namespace) -> int:
    try:
        import ticketmail.receive  # noqa: F401 - needs aiosmtpd
    except ModuleNotFoundError as exc:  # aiosmtpd missing
        print(f"ticketmail: error: {exc.name} is not installed; pip install 'ticketmail[lmtp]'", file=sys.stderr)
        return EXIT_USAGE
    from ticketmail.cli._config import load_config, storage_target

    try:
        # The one configuration: storage, rules, threading, forms, attachment policy and email limits apply
        # to received mail as to fetched mail; [receive] is validated here.
        config = load_config(args.config)
        settings = _settings(args, config)
        target = storage_target(config, args, default=None)
    except TicketmailError as exc:
        _error(exc)
        return EXIT_USAGE
    backend = _open(target)
    if isinstance(backend, int):
        return backend
    return _serve(args, config, settings, backend)
