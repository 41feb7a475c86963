"""`ticketmail oauth`: sign a mailbox in once (`login`), see its token state (`status`), forget it (`logout`).

`ticketmail oauth login --config tickets.toml --mailbox support` runs the device-code flow (prints a URL and
a code; the default for Microsoft and generic servers with a device endpoint) or `--flow browser`, the
authorization-code flow with PKCE on a loopback redirect (the default for Google; `--no-browser` only
prints the URL). The refresh token goes to `<state dir>/oauth/<mailbox>.json` (0600), where `fetch`,
`check` and the poller read it. Exit codes: 0 signed in, 1 the sign-in failed, 2 usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ticketmail.cli._output import Output, add_output_flags, error_line
from ticketmail.errors import ConfigError, TicketmailError

__all__ = ["register"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add the `oauth` command group (`login`, `status`, `logout`)."""
    oauth = subparsers.add_parser(
        "oauth",
        help="sign mailboxes in with OAuth2 (Microsoft 365, Google, generic servers)",
        description="Obtain and manage the OAuth2 refresh tokens of mailboxes with auth = 'oauth2'.",
    )
    sub = oauth.add_subparsers(dest="oauth_command", metavar="ACTION")
    login = sub.add_parser("login", help="sign a mailbox in and store its refresh token")
    _common(login)
    login.add_argument(
        "--flow", choices=("device", "browser"), default=None,
        help="device code (URL + code, works headless) or browser (authorization code + PKCE on a loopback "
        "redirect); default: device, browser for Google",
    )  # fmt: skip
    login.add_argument("--no-browser", action="store_true", help="only print the sign-in URL (browser flow)")
    login.add_argument("--port", type=int, default=0, metavar="N", help="loopback redirect port (default: any)")
    login.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS", help="how long to wait (900)")
    login.set_defaults(func=run_login)
    status = sub.add_parser("status", help="show whether a refresh token is stored and when the access token expires")
    _common(status)
    add_output_flags(status, quiet=False, what="mailbox")
    status.set_defaults(func=run_status)
    logout = sub.add_parser("logout", help="delete the stored tokens of a mailbox")
    _common(logout)
    logout.set_defaults(func=run_logout)
    oauth.set_defaults(func=lambda args: (oauth.print_help(sys.stderr), EXIT_USAGE)[1])


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the ticketmail TOML file")
    parser.add_argument("--mailbox", required=True, metavar="NAME", help="the mailbox to sign in")
    parser.add_argument("--state-dir", metavar="DIR", help="where tokens are kept (default: <database>.state)")


def _manager(args: argparse.Namespace) -> Any:
    from ticketmail.cli._health import _check_state_dir
    from ticketmail.oauth import tokens_for
    from ticketmail.sources.config import load_config

    config = load_config(args.config)
    mailbox = config.mailbox(args.mailbox)
    if mailbox.provider is None:
        raise ConfigError(
            f"mailbox {mailbox.name!r} has no OAuth2 provider; set auth = 'oauth2' and provider = 'microsoft', "
            "'google' or 'generic'",
            field="provider",
        )
    state = _check_state_dir(args, config)
    if state is None and not mailbox.token_store:
        raise ConfigError(
            f"mailbox {mailbox.name!r}: nowhere to keep the token: set [storage] sqlite or state_dir, --state-dir "
            "or token_store",
            field="token_store",
        )
    return tokens_for(mailbox, state)


def _fail(exc: TicketmailError) -> int:
    print(error_line(exc), file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


def run_login(args: argparse.Namespace) -> int:
    """Sign the mailbox in; return the exit code."""
    from ticketmail.oauth.login import (
        authorization_code_login,
        default_flow,
        device_code_login,
        with_discovered_endpoints,
    )

    try:
        manager = with_discovered_endpoints(_manager(args))
        flow = args.flow or default_flow(manager)
        if flow == "device":
            device_code_login(manager, out=sys.stdout, timeout=args.timeout)
        else:
            authorization_code_login(
                manager, out=sys.stdout, open_browser=not args.no_browser, port=args.port, timeout=args.timeout
            )
    except TicketmailError as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        print("ticketmail: sign-in interrupted; nothing was stored", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    """Print the stored token state (never the tokens); return the exit code."""
    output = Output(args)
    try:
        manager = _manager(args)
        stored = manager.store.load() if manager.store is not None else None
    except TicketmailError as exc:
        return _fail(exc)
    grant = manager.grant(stored)
    left = None if stored is None else stored.expires_at - time.time()
    output.record(
        {
            "mailbox": args.mailbox,
            "stored": stored is not None,
            "refresh_token": bool(stored is not None and stored.refresh_token),
            "expires_in": None if left is None else max(0, int(left)),
            "grant": grant,
            "scope": None if stored is None else (stored.scope or None),
        }
    )
    if stored is None or left is None:
        output.text(f"{args.mailbox}: no tokens stored (grant: {grant})")
        return EXIT_OK if grant != "refresh_token" else EXIT_FAILED
    expiry = f"access token valid for {int(left)} s" if left > 0 else "access token expired"
    refresh = "refresh token stored" if stored.refresh_token else "no refresh token"
    output.text(f"{args.mailbox}: {refresh}; {expiry}; grant: {grant}; scope: {stored.scope or '-'}")
    return EXIT_OK


def run_logout(args: argparse.Namespace) -> int:
    """Delete the stored tokens; return the exit code."""
    try:
        manager = _manager(args)
    except TicketmailError as exc:
        return _fail(exc)
    if manager.store is not None:
        manager.store.delete()
        manager.invalidate()
    print(f"{args.mailbox}: stored tokens deleted")
    return EXIT_OK
