"""Mailbox configuration: one frozen attrs value per mailbox, loadable from TOML or a dict.

Why a dedicated module: the poller, the CLI, `check` and every adapter read the same settings, and the
operator's mistakes must surface once, at load time, as a `ConfigError` that names
the file, the `[[mailboxes]]` index and the key (``tickets.toml: mailboxes[2].port: expected an integer
1-65535, got 'x'``), never as a socket error at 3 a.m.

Secrets (passwords, OAuth2 tokens) are held in `Secret`, whose `repr`/`str` are masked, so a
config object can be logged, printed or put into an exception message without leaking them.

The TOML file shape (every key is documented in `docs/sources.md`)::

    [storage]
    sqlite = "tickets.sqlite3"

    [[mailboxes]]
    name = "support"
    protocol = "imap"          # imap | pop3 | maildir | mbox
    host = "127.0.0.1"
    port = 10993               # default by protocol and security: 143/993 (IMAP), 110/995 (POP3)
    security = "ssl"           # ssl | starttls | none
    ca_file = "cert.pem"       # optional; relative paths are relative to the TOML file
    username = "alice"
    password = "secret"        # or password_env = "VAR" / password_file = "path"
    folder = "INBOX"
    after = "delete"           # delete | seen | move:Processed
"""

from __future__ import annotations

from ticketmail.sources._config_load import load_config, mailbox_from_dict
from ticketmail.sources._config_secrets import Secret, mask_secrets
from ticketmail.sources._mailbox_config import (
    DEFAULT_PORTS,
    DELIVERED_PROTOCOLS,
    MailboxConfig,
    Protocol_,
    Security,
    SourcesConfig,
    TokenProvider,
)

__all__ = [
    "DEFAULT_PORTS",
    "DELIVERED_PROTOCOLS",
    "MailboxConfig",
    "Protocol_",
    "Security",
    "Secret",
    "SourcesConfig",
    "TokenProvider",
    "load_config",
    "mailbox_from_dict",
    "mask_secrets",
]
