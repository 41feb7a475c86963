"""``ticketmail.config``: one file, every table validated, precise errors, secrets kept out of sight."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.config import TABLES, Config, did_you_mean, load, load_data, mask_url
from ticketmail.errors import ConfigError
from ticketmail.model import Choice
from ticketmail.sources.config import Secret, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ticketmail.toml"


def write(tmp_path: Path, text: str, name: str = "ticketmail.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    return info.value.message


def test_the_example_loads_every_table() -> None:
    config = load(EXAMPLE)
    assert config.storage.path == str(EXAMPLE.parent / "tickets.sqlite3")
    assert [m.name for m in config.mailboxes] == ["support", "it", "billing"]
    assert config.mailbox_errors == ()
    assert config.mailbox("billing").protocol == "pipe"
    assert config.rules is not None
    assert {r.name for r in config.rules.rules} == {"billing", "printers"}
    assert config.threading.subject_tag == "[Helpdesk #{number}]"
    assert [f.name for f in config.form.fields] == ["phone", "notes", "order_date", "product"]
    assert config.attachments.max_file_size == 10 * 1024 * 1024
    assert config.api.port == 8080
    assert config.poller["time_budget"] == 60.0


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""))
    assert config.storage.target is None
    assert config.rules is None
    assert [f.name for f in config.form.fields] == ["phone", "notes"]
    assert config == Config(path=config.path, sources=config.sources)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[treading]\nsubject_tag = 'x'\n", "[treading]: unknown table; did you mean 'threading'?"),
        ("[storage]\npth = 'x'\n", "[storage] pth: unknown key; did you mean 'path'?"),
        (
            "[threading]\nsubjet_tag = '[#{number}]'\n",
            "[threading] subjet_tag: unknown key; did you mean 'subject_tag'?",
        ),
        ("[attachments]\nmax_fil_size = 1\n", "[attachments] max_fil_size: unknown key; did you mean 'max_file_size'?"),
        ("[api]\ntrusted_proxy = []\n", "[api] trusted_proxy: unknown key; did you mean 'trusted_proxies'?"),
        ("[limits]\nmax_atachments = 1\n", "[limits] max_atachments: unknown key; did you mean 'max_attachments'?"),
        ("[limits.email]\nmax_part = 1\n", "[limits.email] max_part: unknown key; did you mean 'max_parts'?"),
        ("[poller]\ntime_budgte = 1\n", "[poller] time_budgte: unknown key; did you mean 'time_budget'?"),
        ("[rules]\nincludes = 'r.toml'\n", "[rules] includes: unknown key; did you mean 'include'?"),
        ("[forms]\nreplac = true\n", "[forms] replac: unknown key; did you mean 'replace'?"),
        ("[[forms.fields]]\nname = 'a'\ntpye = 'text'\n", "[forms.fields[0]] tpye: unknown key; did you mean 'type'?"),
        ("zzz = 1\n", "[zzz]: unknown key"),
    ],
)
def test_unknown_tables_and_keys_name_file_table_key_and_a_suggestion(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "ticketmail.toml") + ": ")
    assert expected in message


def test_unknown_mailbox_key_gets_a_suggestion(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[[mailboxes]]\nname = 'md'\nprotocol = 'maildir'\npath = 'md'\nafer = 'seen'\n"))
    (error,) = config.mailbox_errors
    assert "mailboxes[0].afer: unknown key; did you mean 'after'?" in error.message
    assert str(tmp_path) in error.message


def test_a_bad_mailbox_does_not_hide_the_good_ones(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            """
            [[mailboxes]]
            name = "good"
            protocol = "maildir"
            path = "md"
            [[mailboxes]]
            name = "bad"
            protocol = "imap"
            host = "h"
            port = "993"
            password = "x"
            username = "u"
            [[mailboxes]]
            name = "good"
            protocol = "mbox"
            path = "spool"
            """,
        )
    )
    assert [m.name for m in config.mailboxes] == ["good"]
    assert [e.field for e in config.mailbox_errors] == ["mailbox:bad", "mailbox:good"]
    assert "duplicate mailbox name" in config.mailbox_errors[1].message
    with pytest.raises(ConfigError, match="mailbox 'bad' is not usable"):
        config.mailbox("bad")
    with pytest.raises(ConfigError, match="no mailbox named 'godo'; did you mean 'good'"):
        config.mailbox("godo")


@pytest.mark.parametrize("password", ["12345", "0.5", "true", "[1, 2]"])
def test_a_wrongly_typed_password_is_never_echoed(tmp_path: Path, password: str) -> None:
    text = f"[[mailboxes]]\nname = 'a'\nhost = 'h'\nusername = 'u'\npassword = {password}\n"
    config = load(write(tmp_path, text))
    (error,) = config.mailbox_errors
    assert "password" in error.message
    for token in ("12345", "0.5", "[1, 2]", "True", "true"):
        assert token not in error.message
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "12345" not in str(info.value)
    assert "12345" not in repr(info.value)


def test_secrets_are_not_kept_in_plain_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [storage]
        url = "postgresql://desk:s3cr3t-pw@db.example/tickets"
        [[mailboxes]]
        name = "a"
        host = "h"
        username = "u"
        password = "hunter2-secret"
        """,
    )
    legacy = load_config(path)
    assert isinstance(legacy.raw["mailboxes"][0]["password"], Secret)
    assert "hunter2-secret" not in repr(legacy.raw)
    assert "hunter2-secret" not in str(legacy)
    assert legacy.mailboxes[0].secret().reveal() == "hunter2-secret"
    config = load(path)
    assert config.storage.url == "postgresql://desk:s3cr3t-pw@db.example/tickets"
    assert "s3cr3t-pw" not in repr(config)
    assert config.sources is not None
    assert "s3cr3t-pw" not in repr(config.sources.raw)
    assert "hunter2-secret" not in repr(config)


def test_mask_url() -> None:
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:********@h/db"
    assert mask_url("postgresql://h/db") == "postgresql://h/db"


def test_storage_keys(tmp_path: Path) -> None:
    assert load(write(tmp_path, "[storage]\nsqlite = 't.db'\n")).storage.path == str(tmp_path / "t.db")
    assert load(write(tmp_path, "[storage]\npath = 't.db'\nstate_dir = 's'\n")).storage.state_dir == str(tmp_path / "s")
    assert load(write(tmp_path, "[storage]\nurl = 'sqlite:////abs/t.db'\n")).storage.path == "/abs/t.db"
    assert load(write(tmp_path, "[storage]\nurl = 'sqlite:///t.db'\n")).storage.path == str(tmp_path / "t.db")
    assert "not both" in error_of(tmp_path, "[storage]\npath = 'a'\nurl = 'postgresql://h/db'\n")
    message = error_of(tmp_path, "[storage]\nurl = 'not a url pw'\n")
    assert "expected a URL" in message
    assert "a secret-bearing value" in error_of(tmp_path, "[storage]\nurl = 5\n")


def test_rules_inline_include_and_both(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [settings]
        own_addresses = ["desk@example.org"]
        [[rules]]
        name = "from-file"
        conditions = [{ field = "subject", op = "contains", value = "a" }]
        actions = { department = "A" }
        """,
        name="rules.toml",
    )
    included = load(write(tmp_path, "[rules]\ninclude = 'rules.toml'\n")).rules
    assert included is not None
    assert [r.name for r in included.rules] == ["from-file"]
    inline = """
        [[rules.rules]]
        name = "inline"
        conditions = [{ field = "subject", op = "contains", value = "b" }]
        actions = { department = "B" }
        [[rules.filters]]
        name = "spam"
        type = "ignore"
        keywords = ["viagra"]
    """
    only = load(write(tmp_path, inline)).rules
    assert only is not None
    assert [r.name for r in only.rules] == ["inline"]
    assert len(only.filters) == 1
    both = load(write(tmp_path, "[rules]\ninclude = 'rules.toml'\n" + textwrap.dedent(inline))).rules
    assert both is not None
    assert [r.name for r in both.rules] == ["from-file", "inline"]
    assert "desk@example.org" in both.own_addresses
    bad = error_of(tmp_path, "[rules]\ninclude = 'missing.toml'\n")
    assert "missing.toml" in bad
    assert "cannot read" in bad


def test_rules_errors_name_the_included_file(tmp_path: Path) -> None:
    write(tmp_path, "[[rules]]\nname = 'x'\nconditions = [{ field = 'subject', op = 'eq', value = 'a' }]\n", "r.toml")
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "[rules]\ninclude = 'r.toml'\n"))
    assert str(tmp_path / "r.toml") in info.value.message


def test_forms_extend_the_default_or_replace_it(tmp_path: Path) -> None:
    extended = load(
        write(
            tmp_path,
            """
            [[forms.fields]]
            name = "product"
            type = "choice"
            choices = { p1 = "Printer", p2 = "Scanner" }
            [[forms.fields]]
            name = "notes"
            type = "text"
            """,
        )
    )
    assert [(f.name, f.type) for f in extended.form.fields] == [
        ("phone", "phone"),
        ("product", "choice"),
        ("notes", "text"),
    ]
    assert extended.form.get("product") is not None
    assert extended.form.get("product").choices == (Choice("p1", "Printer"), Choice("p2", "Scanner"))  # type: ignore[union-attr]
    replaced = load(write(tmp_path, "[forms]\nreplace = true\n[[forms.fields]]\nname = 'team'\n"))
    assert [f.name for f in replaced.form.fields] == ["team"]
    assert "defined twice" in error_of(tmp_path, "[[forms.fields]]\nname = 'a'\n[[forms.fields]]\nname = 'a'\n")
    assert "core ticket field" in error_of(tmp_path, "[[forms.fields]]\nname = 'email'\n")


def test_limits_and_the_type_list(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[limits]\nmax_attachments = 3\n[limits.email]\nmax_parts = 50\n"))
    assert config.limits.max_attachments == 3
    assert config.email_options.max_parts == 50
    assert "[attachments] allowed_types" in error_of(tmp_path, "[limits]\nallowed_types = ['image/*']\n")
    assert "[limits]" in error_of(tmp_path, "[limits]\nmax_attachments = -1\n")


def test_api_table(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, "[api]\nkeys = 'keys.db'\nmax_body = 100\ntrusted_proxies = ['10.0.0.0/8', '::1']\nport = 0\n")
    )
    assert config.api.keys == str(tmp_path / "keys.db")
    assert [str(n) for n in config.api.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert "not an IP address" in error_of(tmp_path, "[api]\ntrusted_proxies = ['proxy.local']\n")
    assert "api.max_body must be an integer >= 1, got 0" in error_of(tmp_path, "[api]\nmax_body = 0\n")


def test_tables_of_other_modules_are_kept_raw(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[receive]\nlisten = '127.0.0.1:2424'\n[alerts]\nwebhook = 'https://x'\n"))
    assert config.tables["receive"] == {"listen": "127.0.0.1:2424"}
    assert config.tables["alerts"] == {"webhook": "https://x"}
    assert set(TABLES) >= {"receive", "alerts"}


def test_not_toml_and_unreadable(tmp_path: Path) -> None:
    assert "not valid TOML" in error_of(tmp_path, "[storage\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml")


@given(st.text(min_size=1, max_size=20))
def test_did_you_mean_is_a_suggestion_or_the_list(name: str) -> None:
    hint = did_you_mean(name, TABLES)
    assert hint.startswith("; did you mean '") or hint.startswith(" (known: ")


@given(st.dictionaries(st.sampled_from([*TABLES, "x", "storag"]), st.dictionaries(st.text(max_size=8), st.integers())))
def test_any_document_loads_or_raises_a_config_error(doc: dict[str, dict[str, int]]) -> None:
    with contextlib.suppress(ConfigError):
        load_data(doc, source="t.toml")


def test_secrets_of_other_tables_are_masked_in_raw(tmp_path: Path) -> None:
    path = write(tmp_path, "[receive]\nsmtp_password = 'pw-123'\nsmtp_password_env = 'VAR'\nport = 24\n")
    config = load(path)
    assert config.tables["receive"]["smtp_password"] == "pw-123"  # for the module that validates it
    assert config.sources is not None
    raw = config.sources.raw
    assert isinstance(raw["receive"]["smtp_password"], Secret)
    assert raw["receive"]["smtp_password_env"] == "VAR"
    assert raw["receive"]["port"] == 24
    assert "pw-123" not in repr(raw)
    assert "pw-123" not in repr(config)


def test_alerts_are_validated_at_load_time(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[alerts]\nwebhook = 'https://hooks.example.com/x'\nevents = ['down']\n"))
    assert config.alerts is not None
    assert config.alerts.webhook == "https://hooks.example.com/x"
    message = error_of(tmp_path, "[alerts]\nwebhok = 'https://x'\n")
    assert message.startswith(str(tmp_path / "ticketmail.toml"))
    assert "did you mean 'webhook'?" in message
    assert "[alerts]" in error_of(tmp_path, "[alerts]\nwebhook = 'file:///etc/passwd'\n")


def test_server_limits_leases_and_untrusted_match_from_the_file(tmp_path: Path) -> None:
    from ticketmail.config import load

    path = tmp_path / "ticketmail.toml"
    path.write_text(
        '[storage]\npath = "t.sqlite3"\nlease_ttl = 12\n\n[threading]\nuntrusted_match = "quarantine"\n\n'
        "[api]\nmax_connections = 8\nrequest_timeout = 5\n",
        encoding="utf-8",
    )
    config = load(str(path))
    assert config.storage.lease_ttl == 12.0
    assert config.threading.untrusted_match == "quarantine"
    assert (config.api.max_connections, config.api.request_timeout) == (8, 5.0)
    path.write_text("[api]\nmax_connections = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="max_connections"):
        load(str(path))
    path.write_text('[storage]\nlease_ttl = "soon"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="lease_ttl"):
        load(str(path))


def test_untrusted_match_flag_overrides_the_file() -> None:
    import argparse

    from ticketmail.cli._config import add_threading_arguments, load_config, threading_for

    parser = argparse.ArgumentParser()
    add_threading_arguments(parser)
    args = parser.parse_args(["--untrusted-match", "append"])
    assert threading_for(load_config(None), args).untrusted_match == "append"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("[storage]\nlease_ttl = 0.1\n", "storage.lease_ttl must be a number >= 0.5, got 0.1"),
        ("[storage]\nlease_ttl = 7200\n", "storage.lease_ttl must be at most 3600, got 7200.0"),
        ("[api]\nport = 70000\n", "api.port must be at most 65535, got 70000"),
        ("[api]\nport = -1\n", "api.port must be an integer >= 0, got -1"),
        ("[api]\nrequest_timeout = 0\n", "api.request_timeout must be a number > 0, got 0.0"),
        ("[api]\nmax_connections = 0\n", "api.max_connections must be an integer >= 1, got 0"),
        ("[api]\nport = true\n", "[api.port]: expected a port number, got bool"),
    ],
)
def test_range_errors_name_the_field(tmp_path: Path, table: str, expected: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(table, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert raised.value.message == f"{path}: {expected}"
