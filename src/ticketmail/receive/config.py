"""The `[receive]` table: listeners and limits of the LMTP/SMTP receiver, validated strictly.

Every key is documented in `docs/receive.md`. Errors are `ticketmail.errors.ConfigError` values whose
message names the file, the table and the key (`ticketmail.toml: receive.max_sessions: expected an integer
>= 1, got 0`); an unknown key is an error too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ticketmail._validators import at_least, fail, one_of, positive
from ticketmail.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ListenAddress",
    "PolicyRefusal",
    "ReceiveSettings",
    "load_receive_settings",
    "parse_listen_address",
    "receive_settings_from_table",
]

PolicyRefusal = Literal["reject", "verified", "accept"]
DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024


@attrs.frozen
class ListenAddress:
    """Where a listener binds: a Unix socket `path`, or `host` and `port`.

    Attributes:
        text: The address as written (`unix:/run/ticketmail/lmtp.sock`, `127.0.0.1:2403`, `[::1]:2403`).
        path: The socket path for `unix:` addresses, else `None`.
        host: The host (IP address or name) for TCP addresses, else `None`.
        port: The TCP port (0 picks a free one), else `None`.
    """

    text: str
    path: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def is_unix(self) -> bool:
        """Whether this is a Unix-domain socket."""
        return self.path is not None

    @property
    def is_loopback(self) -> bool:
        """Whether the listener is reachable from this machine only (a Unix socket, or a loopback address)."""
        if self.path is not None:
            return True
        if self.host in ("localhost", "localhost.localdomain"):
            return True
        try:
            return ipaddress.ip_address(self.host or "").is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return self.text


def parse_listen_address(text: str, *, base_dir: str | Path | None = None, where: str = "address") -> ListenAddress:
    """Parse `unix:/path`, `HOST:PORT` or `[IPV6]:PORT`.

    A relative `unix:` path is resolved against `base_dir` when given.

    Raises:
        ConfigError: The text is not one of those forms; the message starts with `where`.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: expected 'unix:/path' or 'HOST:PORT', got {text!r}")
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path or "\x00" in path:
            raise ConfigError(f"{where}: expected a socket path after 'unix:', got {text!r}")
        if base_dir is not None and not Path(path).is_absolute():
            path = str(Path(base_dir, path))
        return ListenAddress(text=text, path=path)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{where}: expected '[IPV6]:PORT', got {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ConfigError(f"{where}: expected 'unix:/path', 'HOST:PORT' or '[IPV6]:PORT', got {text!r}")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"{where}: expected a host and a port 0-65535, got {text!r}")
    return ListenAddress(text=text, host=host, port=int(port_text))


def _mode(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise fail("receive", attribute, "a permission mode 0000-0777", value)


_COUNT = at_least(1, "receive")
_POLICIES = ("reject", "verified", "accept")
_SECONDS = positive("receive")


def _names(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _lower_names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v).strip().lower() for v in value)


def _listen(value: str | ListenAddress | None) -> ListenAddress | None:
    if value is None or isinstance(value, ListenAddress):
        return value
    return parse_listen_address(value)


@attrs.frozen
class ReceiveSettings:
    """Listeners and limits of the receiver (the `[receive]` table; every member has a safe default).

    Attributes:
        lmtp: The LMTP listener (RFC 2033), `unix:/path` or `HOST:PORT`; `None`: no LMTP listener.
        smtp: The SMTP listener (only configured recipients are accepted: never an open relay).
        max_message_size: Largest message accepted, in bytes (announced as `SIZE`; larger ones get
            `552 5.3.4`, before the data when the client declares the size).
        max_recipients: Recipients per message; more get `452 4.5.3` at `RCPT` (the client sends them later).
        max_sessions: Concurrent connections; more are greeted with `421 4.3.2` and closed.
        workers: Messages processed at the same time (threads running the pipeline).
        idle_timeout: Seconds without a command or data before the session is closed (`421 4.4.2`).
        session_timeout: Seconds a whole session may last; a delivery in progress is finished first.
        tls_cert: PEM certificate chain; with `tls_key` it enables `STARTTLS` on TCP listeners.
        tls_key: PEM private key of `tls_cert`.
        require_tls: Refuse `MAIL` before `STARTTLS` on TCP listeners (needs a certificate).
        socket_mode: Permissions of a Unix socket (default `0o660`: the owner and its group).
        socket_group: Group a Unix socket is given (e.g. `postfix`), else the process's group.
        policy_refusal: `reject`: a message refused by a rule gets `550 5.7.1` (the sender's mail server
            bounces it); `accept`: it is answered `250` and dropped (recorded, never bounced);
            `verified`: `550` only when an `Authentication-Results` header of a trusted server
            (`trusted_authserv_ids`) says `spf`, `dkim` or `dmarc` passed, so a bounce never goes
            to a forged sender (backscatter); otherwise as `accept`.
        trusted_authserv_ids: The authserv-ids (RFC 8601) of your own filters (the mail server, rspamd,
            OpenDMARC) whose `Authentication-Results` headers `verified` believes.
        mailboxes: Names of the mailboxes that may receive; `None`: every enabled mailbox with an address.
        plus_separator: Separator of subaddresses (`support+TOKEN@example.com`); empty turns them off.
        hostname: Name in the greeting and `LHLO`/`EHLO` reply; `None`: the machine's name.
        allow_remote: Listen on a non-loopback address (off: only loopback and Unix sockets).
    """

    lmtp: ListenAddress | None = attrs.field(default=None, converter=_listen)
    smtp: ListenAddress | None = attrs.field(default=None, converter=_listen)
    max_message_size: int = attrs.field(default=DEFAULT_MAX_MESSAGE_SIZE, validator=_COUNT)
    max_recipients: int = attrs.field(default=100, validator=_COUNT)
    max_sessions: int = attrs.field(default=50, validator=_COUNT)
    workers: int = attrs.field(default=4, validator=_COUNT)
    idle_timeout: float = attrs.field(default=300.0, validator=_SECONDS)
    session_timeout: float = attrs.field(default=1800.0, validator=_SECONDS)
    tls_cert: str | None = None
    tls_key: str | None = None
    require_tls: bool = False
    socket_mode: int = attrs.field(default=0o660, validator=_mode)
    socket_group: str | None = None
    policy_refusal: PolicyRefusal = attrs.field(default="reject", validator=one_of(_POLICIES, "receive"))
    trusted_authserv_ids: tuple[str, ...] = attrs.field(default=(), converter=_lower_names)
    mailboxes: tuple[str, ...] | None = attrs.field(default=None, converter=_names)
    plus_separator: str = "+"
    hostname: str | None = None
    allow_remote: bool = False

    def __attrs_post_init__(self) -> None:
        if self.policy_refusal == "verified" and not self.trusted_authserv_ids:
            raise ValueError("policy_refusal: 'verified' needs trusted_authserv_ids (your servers' authserv-ids)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert: give both tls_cert and tls_key, or neither")
        if self.require_tls and not self.tls_cert:
            raise ValueError("require_tls: needs tls_cert and tls_key")
        if len(self.plus_separator) > 1:
            raise ValueError(f"plus_separator: expected one character or empty, got {self.plus_separator!r}")
        for name, address in (("lmtp", self.lmtp), ("smtp", self.smtp)):
            if address is not None and not self.allow_remote and not address.is_loopback:
                raise ValueError(
                    f"{name}: {address.text!r} is not a loopback address; set allow_remote = true to listen there"
                )
        if self.lmtp is not None and self.smtp is not None and self.lmtp.text == self.smtp.text:
            raise ValueError("smtp: the same address as lmtp")


_TYPES: dict[str, tuple[type, ...]] = {
    "lmtp": (str,),
    "smtp": (str,),
    "max_message_size": (int,),
    "max_recipients": (int,),
    "max_sessions": (int,),
    "workers": (int,),
    "idle_timeout": (int, float),
    "session_timeout": (int, float),
    "tls_cert": (str,),
    "tls_key": (str,),
    "require_tls": (bool,),
    "socket_mode": (str, int),
    "socket_group": (str,),
    "policy_refusal": (str,),
    "trusted_authserv_ids": (list,),
    "mailboxes": (list,),
    "plus_separator": (str,),
    "hostname": (str,),
    "allow_remote": (bool,),
}


def receive_settings_from_table(
    table: Mapping[str, Any], *, path: str | Path | None = None, base_dir: str | Path | None = None
) -> ReceiveSettings:
    """Validate a `[receive]` table (a mapping of plain TOML values) into `ReceiveSettings`.

    Relative `tls_cert`/`tls_key` and `unix:` socket paths are resolved against `base_dir` (by
    default the directory of `path`). `socket_mode` is an octal string (`"0660"`) or an integer
    (`0o660` in TOML).

    Raises:
        ConfigError: Unknown key, wrong type or invalid value; the message names the file, table and key.
    """
    where = f"{path}: receive" if path is not None else "receive"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table ([receive]), got {type(table).__name__}", field="receive")
    if base_dir is None and path is not None:
        base_dir = Path(path).resolve().parent
    kwargs = {key: _value(key, value, where, base_dir) for key, value in table.items()}
    try:
        return ReceiveSettings(**kwargs)
    except ConfigError as exc:  # a field validator: its message already names `receive.<key>`
        message = f"{path}: {exc.message}" if path is not None else exc.message
        raise ConfigError(message, field=exc.field) from exc
    except (ValueError, TypeError) as exc:  # a check across fields: `<key>: <what is wrong>`
        text = str(exc)
        bad_key = text.split(":", 1)[0] if ":" in text else None
        raise ConfigError(f"{where}.{text}", field=bad_key) from exc


def _value(key: str, value: Any, where: str, base_dir: str | Path | None) -> Any:
    """One `[receive]` value checked for its type and converted (addresses, paths, an octal mode)."""
    if key not in _TYPES:
        raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(_TYPES))})", field=key)
    expected = _TYPES[key]
    ok = False if isinstance(value, bool) and bool not in expected else isinstance(value, expected)
    if not ok:
        names = " or ".join(t.__name__ for t in expected)
        raise ConfigError(f"{where}.{key}: expected {names}, got {value!r}", field=key)
    if key in ("lmtp", "smtp"):
        return parse_listen_address(value, base_dir=base_dir, where=f"{where}.{key}")
    if key in ("tls_cert", "tls_key") and base_dir is not None:
        return str(Path(base_dir, value))
    if key == "socket_mode" and isinstance(value, str):
        text = value.strip().removeprefix("0o")
        if not text or any(c not in "01234567" for c in text):
            raise ConfigError(f"{where}.{key}: expected an octal mode such as '0660', got {value!r}", field=key)
        return int(text, 8)
    if key in ("mailboxes", "trusted_authserv_ids"):
        bad = [v for v in value if not isinstance(v, str) or not v]
        if bad:
            raise ConfigError(f"{where}.{key}: expected non-empty strings, got {bad!r}", field=key)
    return value


def load_receive_settings(path: str | Path) -> ReceiveSettings:
    """Read the `[receive]` table of a TOML file (an absent table gives the defaults).

    Raises:
        ConfigError: The file cannot be read, is not TOML, or the table is invalid.
    """
    file = Path(path)
    try:
        with file.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    return receive_settings_from_table(doc.get("receive", {}), path=file)
