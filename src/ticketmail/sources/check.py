"""`check(mailbox)`: a connection test that says which stage failed and what to do about it.

Why: "connection failed" is the most common support question of the seed products. A check walks the same
path a fetch does, one stage at a time, and stops at the first failure:

* `config`: the password variable/file or the token provider is unusable (`password_env` unset ...);
  checked first, before any DNS lookup or connection, since no server can fix it;
* `oauth`: the built-in OAuth2 lifecycle cannot get a token (see `ticketmail.oauth.diagnose`);
* `dns`: the host name does not resolve;
* `connect`: TCP connect refused (nothing listens: wrong port, server down) or timed out (firewall);
* `tls`: certificate verification failed (untrusted CA, or issued for another name); or the port speaks
  another security than configured (`ssl` on a plaintext port, plaintext/STARTTLS on an implicit-TLS
  port, RFC 8314); or STARTTLS is not offered;
* `protocol`: the server does not greet like IMAP/POP3 (another service on that port);
* `auth`: the server refused the credentials or the OAuth2 token;
* `folder`: the IMAP folder does not exist (the message lists those that do); for Maildir/mbox, the
  path is missing or not a mailbox.

On success the result carries the server's capabilities (`IDLE`, `MOVE`, `UIDPLUS` ...) and the number
of messages in the folder. Nothing on the server is changed: the IMAP folder is opened with `EXAMINE` (read-only,
no fetch, no store), a POP3 session ends with `QUIT` without `DELE`.
"""

from __future__ import annotations

import mailbox as stdlib_mailbox
import os
import time
from collections.abc import Callable
from typing import Any

import attrs

from ticketmail.errors import ConfigError, SourceError
from ticketmail.sources.config import MailboxConfig

__all__ = ["CheckResult", "check"]


@attrs.frozen
class CheckResult:
    """The outcome of `check()`.

    Attributes:
        mailbox: The mailbox name.
        ok: True when every stage passed.
        stage: The failing stage (`config`, `dns`, `connect`, `tls`, `protocol`, `auth`, `folder`),
            or `None` on success.
        message: A sentence for the operator: what failed and what to try (and `disabled` when the mailbox
            is disabled: checked all the same, but never polled).
        capabilities: Server capabilities (upper case, sorted), on success.
        message_count: Messages in the folder / maildrop, on success.
        elapsed: Seconds the check took.
        enabled: Whether the mailbox is enabled (a disabled one is checked all the same, never polled).
    """

    mailbox: str
    ok: bool
    stage: str | None = None
    message: str = ""
    capabilities: tuple[str, ...] = ()
    message_count: int | None = None
    elapsed: float = 0.0
    enabled: bool = True

    @property
    def idle(self) -> bool:
        """Whether the server offers IMAP IDLE (real-time delivery)."""
        return "IDLE" in self.capabilities

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (used by `ticketmail check --json`)."""
        return {
            "mailbox": self.mailbox,
            "ok": self.ok,
            "stage": self.stage,
            "message": self.message,
            "capabilities": list(self.capabilities),
            "idle": self.idle,
            "move": "MOVE" in self.capabilities,
            "uidplus": "UIDPLUS" in self.capabilities,
            "message_count": self.message_count,
            "elapsed": round(self.elapsed, 3),
            "enabled": self.enabled,
        }


def _check_imap(config: MailboxConfig) -> tuple[tuple[str, ...], int]:
    from ticketmail.sources.imap import ImapSession

    session = ImapSession(config, readonly=True)
    try:
        session.open()
        return tuple(sorted(session.capabilities)), session.exists
    finally:
        session.close()


def _check_pop3(config: MailboxConfig) -> tuple[tuple[str, ...], int]:
    from ticketmail.sources.pop3 import Pop3Source

    with Pop3Source(config).session() as session:
        return tuple(sorted(session.capabilities)), session.count


def _check_local(config: MailboxConfig) -> tuple[tuple[str, ...], int]:
    path = config.path or ""
    if config.protocol == "maildir":
        if not all(os.path.isdir(os.path.join(path, sub)) for sub in ("cur", "new", "tmp")):
            raise SourceError(
                f"{path} is not a Maildir (it needs cur/, new/ and tmp/ subdirectories)",
                stage="folder",
                mailbox=config.name,
            )
        box: stdlib_mailbox.Mailbox[Any] = stdlib_mailbox.Maildir(path, create=False)
    else:
        if not os.path.isfile(path):
            raise SourceError(f"mbox file {path} does not exist", stage="folder", mailbox=config.name)
        box = stdlib_mailbox.mbox(path, create=False)
    try:
        count = len(box)
    except (OSError, stdlib_mailbox.Error) as exc:
        raise SourceError(
            f"cannot read {path}: {type(exc).__name__}: {exc}", stage="folder", mailbox=config.name
        ) from exc
    finally:
        box.close()
    return (), count


def _check_pipe(config: MailboxConfig) -> tuple[tuple[str, ...], int]:
    return (), 0


def _check_graph(config: MailboxConfig) -> tuple[tuple[str, ...], int]:
    from ticketmail.sources.graph import check_graph

    return check_graph(config)


_CHECKERS: dict[str, Callable[[MailboxConfig], tuple[tuple[str, ...], int]]] = {
    "graph": _check_graph,
    "imap": _check_imap,
    "pop3": _check_pop3,
    "maildir": _check_local,
    "mbox": _check_local,
    "pipe": _check_pipe,
    "lmtp": _check_pipe,
}


def _check_credentials(mailbox: MailboxConfig) -> None:
    """Read the password source now (`password_env` set? `password_file` readable and not empty?).

    Raises:
        ConfigError: naming the variable or file, never the value.
    """
    if mailbox.protocol in ("imap", "pop3") and mailbox.auth == "password":
        mailbox.secret()
    elif mailbox.auth == "oauth2" and mailbox.token_provider is None and mailbox.provider is None:
        raise ConfigError(f"mailbox {mailbox.name!r}: auth is 'oauth2' but no token provider is configured")


def check(
    mailbox: MailboxConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    state_dir: str | os.PathLike[str] | None = None,
) -> CheckResult:
    """Test the connection to `mailbox` stage by stage; never raises for a failing mailbox.

    Args:
        mailbox: The mailbox configuration.
        clock: Monotonic seconds (for `elapsed`).
        state_dir: The state directory, where the built-in OAuth2 lifecycle keeps its token file.

    Returns:
        A `CheckResult`: `ok` with capabilities and message count, or the failing `stage` with an
        actionable `message` (credentials never appear in it).
    """
    started = clock()
    try:
        _check_credentials(mailbox)
        if mailbox.provider is not None:  # built-in OAuth2: the token is its own stage
            from ticketmail.oauth.diagnose import check_oauth

            mailbox = check_oauth(mailbox, state_dir)
        capabilities, count = _CHECKERS[mailbox.protocol](mailbox)
    except SourceError as exc:
        message = exc.message
        if exc.stage == "auth" and mailbox.provider is not None:
            from ticketmail.oauth.diagnose import refusal_hint

            message += refusal_hint(mailbox)
        return CheckResult(mailbox.name, False, exc.stage, message, elapsed=clock() - started, enabled=mailbox.enabled)
    except ConfigError as exc:
        return CheckResult(
            mailbox.name, False, "config", exc.message, elapsed=clock() - started, enabled=mailbox.enabled
        )
    if mailbox.protocol in ("pipe", "lmtp"):
        command = "ticketmail pipe" if mailbox.protocol == "pipe" else "ticketmail receive"
        return CheckResult(
            mailbox.name,
            True,
            None,
            f"ok: delivered by the mail server ({command}); nothing to connect to",
            elapsed=clock() - started,
            enabled=mailbox.enabled,
        )
    summary = f"ok: {count} message(s)"
    if capabilities:
        wanted = [c for c in ("IDLE", "MOVE", "UIDPLUS") if c in capabilities]
        summary += f"; supports {', '.join(wanted) or 'none of IDLE, MOVE, UIDPLUS'}"
    if not mailbox.enabled:
        summary += "; disabled: fetch skips this mailbox"
    return CheckResult(
        mailbox.name,
        True,
        None,
        summary,
        capabilities=capabilities,
        message_count=count,
        elapsed=clock() - started,
        enabled=mailbox.enabled,
    )
