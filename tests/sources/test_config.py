"""MailboxConfig, Secret and the TOML/dict loaders: defaults, validation, error messages, secrecy."""

from __future__ import annotations

import textwrap
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.errors import ConfigError, SourceError
from ticketmail.model import MailboxContext
from ticketmail.sources.config import MailboxConfig, Secret, load_config, mailbox_from_dict
from ticketmail.sources.oauth import static_token, xoauth2_base64, xoauth2_responder, xoauth2_string

BASE = {"name": "support", "host": "mail.example.com", "username": "alice", "password": "hunter2"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ticketmail.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_issue_example_loads(tmp_path):
    path = _write(
        tmp_path,
        """
        [storage]
        sqlite = "tickets.sqlite3"
        [[mailboxes]]
        name = "support"
        protocol = "imap"
        host = "127.0.0.1"
        port = 10993
        security = "ssl"
        ca_file = "cert.pem"
        username = "alice"
        password = "secret"
        folder = "INBOX"
        after = "delete"
        """,
    )
    cfg = load_config(path)
    assert cfg.sqlite == str(tmp_path.resolve() / "tickets.sqlite3")
    (mb,) = cfg.mailboxes
    assert mb.port == 10993
    assert mb.ca_file == str(tmp_path.resolve() / "cert.pem")
    assert mb.after_action == "delete"
    assert mb.fetch_mode == "all"
    assert mb.secret().reveal() == "secret"
    assert cfg.mailbox("support") is mb
    with pytest.raises(ConfigError, match="no mailbox named"):
        cfg.mailbox("sales")


@pytest.mark.parametrize(
    ("protocol", "security", "port"),
    [
        ("imap", "ssl", 993),
        ("imap", "starttls", 143),
        ("imap", "none", 143),
        ("pop3", "ssl", 995),
        ("pop3", "none", 110),
    ],
)
def test_default_ports(protocol, security, port):
    mb = mailbox_from_dict({**BASE, "protocol": protocol, "security": security})
    assert mb.effective_port == port


def test_after_variants():
    assert mailbox_from_dict({**BASE, "after": "move:Done/2026"}).move_folder == "Done/2026"
    assert mailbox_from_dict({**BASE, "after": "seen"}).fetch_mode == "unseen"
    assert mailbox_from_dict({**BASE, "after": "seen", "fetch": "all"}).fetch_mode == "all"
    with pytest.raises(ConfigError, match="after"):
        mailbox_from_dict({**BASE, "after": "move:"})
    with pytest.raises(ConfigError, match="POP3 has no folders"):
        mailbox_from_dict({**BASE, "protocol": "pop3", "after": "move:X"})


def test_context_carries_rule_defaults():
    mb = mailbox_from_dict(
        {**BASE, "address": "help@example.com", "addresses": ["desk@example.com"], "department": "IT", "priority": 2}
    )
    assert mb.context() == MailboxContext(
        name="support", addresses=("help@example.com", "desk@example.com"), department="IT", priority=2
    )


def test_error_names_file_index_and_key(tmp_path):
    path = _write(
        tmp_path,
        """
        [[mailboxes]]
        name = "a"
        host = "h"
        username = "u"
        password = "p"
        [[mailboxes]]
        name = "b"
        host = "h"
        username = "u"
        password = "p"
        port = "993"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message
    assert "mailboxes[1].port" in info.value.message
    assert info.value.field == "port"


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"protocol": "smtp"}, "protocol"),
        ({"security": "tls"}, "security"),
        ({"port": 70000}, "port"),
        ({"max_per_run": 0}, "max_per_run"),
        ({"oversize": "truncate"}, "oversize"),
        ({"colour": "blue"}, "colour"),
        ({"verify": "no"}, "verify"),
        ({"password_env": "X"}, "password"),
        ({"auth": "oauth2"}, "token_provider"),
        ({"verify": False, "ca_file": "x.pem"}, "verify"),
        ({"protocol": "pop3", "folder": "Archive"}, "folder"),
    ],
)
def test_invalid_values_name_the_key(patch, key):
    with pytest.raises(ConfigError) as info:
        mailbox_from_dict({**BASE, **patch}, where="f.toml: mailboxes[0]")
    assert info.value.message.startswith(f"f.toml: mailboxes[0].{key}")


def test_required_keys():
    with pytest.raises(ConfigError, match="host"):
        mailbox_from_dict({"name": "x", "username": "u", "password": "p"})
    with pytest.raises(ConfigError, match="path"):
        mailbox_from_dict({"name": "x", "protocol": "maildir"})
    with pytest.raises(ConfigError, match="name"):
        mailbox_from_dict({"host": "h", "username": "u", "password": "p"})


def test_duplicate_names_and_bad_toml(tmp_path):
    path = _write(tmp_path, '[[mailboxes]]\nname="a"\nprotocol="mbox"\npath="x"\n' * 2)
    with pytest.raises(ConfigError, match=r"mailboxes\[1\]\.name: duplicate"):
        load_config(path)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[[mailboxes]\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_secret_never_shows():
    mb = mailbox_from_dict({**BASE, "password": "hunter2"})
    for text in (repr(mb), str(mb), f"{mb.password}", repr(mb.password), str(attrs.asdict(mb))):
        assert "hunter2" not in text
    assert mb.password == Secret("hunter2")
    assert mb.secret().reveal() == "hunter2"


def test_password_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TM_PW", "from-env")
    assert mailbox_from_dict({**BASE, "password": None, "password_env": "TM_PW"}).secret().reveal() == "from-env"
    (tmp_path / "pw").write_text("from-file\n")
    path = _write(
        tmp_path,
        '[[mailboxes]]\nname="a"\nhost="h"\nusername="u"\npassword_file="pw"\n',
    )
    assert load_config(path).mailboxes[0].secret().reveal() == "from-file"
    monkeypatch.delenv("TM_PW")
    with pytest.raises(ConfigError, match="TM_PW"):
        mailbox_from_dict({**BASE, "password": None, "password_env": "TM_PW"}).secret()
    with pytest.raises(ConfigError, match="only one of"):
        mailbox_from_dict({**BASE, "password_env": "TM_PW"})


def test_token_sources(tmp_path, monkeypatch):
    oauth = {"name": "o", "host": "h", "username": "u", "auth": "oauth2"}
    monkeypatch.setenv("TM_TOKEN", "tok-env")
    assert mailbox_from_dict({**oauth, "token_env": "TM_TOKEN"}).access_token().reveal() == "tok-env"
    (tmp_path / "tok").write_text("tok-file\n")
    assert mailbox_from_dict({**oauth, "token_file": "tok"}, base_dir=tmp_path).access_token().reveal() == "tok-file"
    mb = mailbox_from_dict({**oauth, "token_provider": "ticketmail.sources.oauth:static_token"})
    with pytest.raises(SourceError, match="token provider failed"):
        mb.access_token()  # static_token() needs an argument: the provider raises, reported as stage auth
    mb = mailbox_from_dict({**oauth, "token_provider": lambda: ""})
    with pytest.raises(ConfigError, match="expected a non-empty str"):
        mb.access_token()
    with pytest.raises(ConfigError, match="cannot import"):
        mailbox_from_dict({**oauth, "token_provider": "no.such.module:fn"})
    mb = MailboxConfig(name="o", host="h", username="u", auth="oauth2", token_provider=static_token("abc"))
    assert mb.access_token().reveal() == "abc"
    assert "abc" not in repr(mb)

    def boom() -> str:
        raise OSError("network down")

    with pytest.raises(SourceError) as info:
        MailboxConfig(name="o", host="h", username="u", auth="oauth2", token_provider=boom).access_token()
    assert info.value.stage == "auth"


def test_xoauth2_strings():
    assert xoauth2_string("a@b.c", "T") == b"user=a@b.c\x01auth=Bearer T\x01\x01"
    assert xoauth2_base64("a@b.c", Secret("T")) == "dXNlcj1hQGIuYwFhdXRoPUJlYXJlciBUAQE="
    respond = xoauth2_responder("u", "T")
    assert respond(b"") == xoauth2_string("u", "T")
    assert respond(b'{"status":"401"}') == b""


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=False), st.text(max_size=12),
    st.lists(st.text(max_size=5), max_size=2),
)  # fmt: skip
_keys = st.sampled_from(
    ["name", "protocol", "host", "port", "security", "username", "password", "after", "fetch", "max_per_run",
     "max_message_size", "oversize", "timeout", "verify", "ca_file", "path", "auth", "priority", "bogus"]
)  # fmt: skip


@given(st.dictionaries(_keys, _values, max_size=10))
def test_any_dict_gives_a_config_or_a_config_error(data):
    try:
        mb = mailbox_from_dict(data)
    except ConfigError as exc:
        message = exc.message
    else:
        assert isinstance(mb, MailboxConfig)
        assert mb.effective_port >= 0
        return
    assert message.startswith("mailbox")


def test_unknown_mailbox_key_suggests_the_closest_one() -> None:
    with pytest.raises(ConfigError) as info:
        mailbox_from_dict({**BASE, "pasword_env": "X"}, where="t.toml: mailboxes[0]")
    assert "t.toml: mailboxes[0].pasword_env: unknown key; did you mean 'password_env'?" in info.value.message


def test_a_pipe_mailbox_needs_no_host_or_path() -> None:
    mailbox = mailbox_from_dict({"name": "billing", "protocol": "pipe", "department": "Billing"})
    assert mailbox.protocol == "pipe"
    assert mailbox.context().department == "Billing"


def test_secret_values_are_masked_in_raw_but_not_their_sources() -> None:
    from ticketmail.sources.config import mask_secrets

    raw = mask_secrets({"mailboxes": [{"password_env": "TM_PW", "client_secret": "cs-value", "token_file": "f"}]})
    entry = raw["mailboxes"][0]
    assert entry["password_env"] == "TM_PW"
    assert entry["token_file"] == "f"
    assert isinstance(entry["client_secret"], Secret)
    assert entry["client_secret"].reveal() == "cs-value"
