"""The ``[receive]`` table, listen addresses, recipient routing, and the ``receive`` command's errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketmail.errors import ConfigError
from ticketmail.model import MailboxContext
from ticketmail.receive import (
    ReceiveSettings,
    RecipientRouter,
    load_receive_settings,
    parse_listen_address,
    receive_settings_from_table,
)
from ticketmail.sources.config import MailboxConfig, mailbox_from_dict


@pytest.mark.parametrize(
    ("text", "path", "host", "port"),
    [
        ("unix:/run/ticketmail/lmtp.sock", "/run/ticketmail/lmtp.sock", None, None),
        ("127.0.0.1:2403", None, "127.0.0.1", 2403),
        ("localhost:24", None, "localhost", 24),
        ("[::1]:2525", None, "::1", 2525),
        ("127.0.0.1:0", None, "127.0.0.1", 0),
    ],
)
def test_listen_addresses(text, path, host, port):
    address = parse_listen_address(text)
    assert (address.path, address.host, address.port) == (path, host, port)
    assert address.is_loopback


@pytest.mark.parametrize("text", ["", "unix:", "127.0.0.1", "host:port", ":25", "::1:25", "[::1]25", "1.2.3.4:70000"])
def test_bad_listen_addresses(text):
    with pytest.raises(ConfigError, match="--lmtp"):
        parse_listen_address(text, where="--lmtp")


def test_relative_socket_path_is_relative_to_the_file(tmp_path):
    file = tmp_path / "tm.toml"
    file.write_text('[receive]\nlmtp = "unix:run/lmtp.sock"\ntls_cert = "c.pem"\ntls_key = "k.pem"\n')
    settings = load_receive_settings(file)
    assert settings.lmtp is not None
    assert settings.lmtp.path == str(tmp_path / "run/lmtp.sock")
    assert settings.tls_cert == str(tmp_path / "c.pem")


def test_table_values_and_defaults():
    settings = receive_settings_from_table(
        {"lmtp": "unix:/tmp/x.sock", "smtp": "127.0.0.1:2525", "max_message_size": 1000, "socket_mode": "0666",
         "policy_refusal": "accept", "mailboxes": ["support"], "idle_timeout": 5, "workers": 2}
    )  # fmt: skip
    assert settings.socket_mode == 0o666
    assert settings.policy_refusal == "accept"
    assert settings.mailboxes == ("support",)
    assert settings.max_recipients == 100
    assert receive_settings_from_table({"socket_mode": 0o640}).socket_mode == 0o640
    assert ReceiveSettings().lmtp is None


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"lmpt": "unix:/x"}, r"tm.toml: receive.lmpt: unknown key"),
        ({"max_message_size": "10M"}, r"receive.max_message_size: expected int"),
        ({"max_sessions": 0}, r"tm.toml: receive.max_sessions must be an integer >= 1, got 0"),
        ({"idle_timeout": True}, r"receive.idle_timeout: expected int or float"),
        ({"socket_mode": "rw-rw----"}, r"receive.socket_mode: expected an octal mode"),
        ({"socket_mode": 0o1777}, r"tm.toml: receive.socket_mode must be a permission mode 0000-0777"),
        ({"policy_refusal": "bounce"}, r"tm.toml: receive.policy_refusal must be one of 'reject', 'verified'"),
        ({"policy_refusal": "verified"}, r"receive.policy_refusal: 'verified' needs trusted_authserv_ids"),
        ({"trusted_authserv_ids": "mx"}, r"receive.trusted_authserv_ids: expected list"),
        ({"tls_cert": "c.pem"}, r"receive.tls_cert: give both"),
        ({"require_tls": True}, r"receive.require_tls: needs tls_cert"),
        ({"lmtp": "192.0.2.1:24"}, r"receive.lmtp: '192.0.2.1:24' is not a loopback address"),
        ({"smtp": "nowhere"}, r"receive.smtp: expected"),
        ({"mailboxes": ["a", 1]}, r"receive.mailboxes: expected non-empty strings"),
        ({"plus_separator": "+-"}, r"receive.plus_separator"),
    ],
)
def test_table_errors_name_file_table_and_key(table, match):
    with pytest.raises(ConfigError, match=match):
        receive_settings_from_table(table, path="tm.toml")


def test_remote_listener_needs_allow_remote():
    settings = receive_settings_from_table({"smtp": "0.0.0.0:25", "allow_remote": True})
    assert settings.smtp is not None
    assert not settings.smtp.is_loopback


_KEYS = st.sampled_from(["lmtp", "smtp", "max_sessions", "socket_mode", "workers", "x"])
_VALUES = st.one_of(st.text(max_size=20), st.integers(), st.booleans(), st.floats(), st.none())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES))
def test_any_table_gives_settings_or_a_config_error(table):
    message = ""
    try:
        receive_settings_from_table(table, path="f.toml")
    except ConfigError as exc:
        message = exc.message
    assert message == "" or message.startswith("f.toml: receive")


# -- mailboxes and routing ------------------------------------------------------------------------------------------


def test_lmtp_mailbox_needs_only_an_address():
    mailbox = mailbox_from_dict({"name": "support", "protocol": "lmtp", "address": "support@example.com"})
    assert mailbox.context().addresses == ("support@example.com",)
    with pytest.raises(ConfigError, match="address: required for protocol 'lmtp'"):
        mailbox_from_dict({"name": "support", "protocol": "lmtp"})


def test_router_matches_addresses_subaddresses_and_case():
    router = RecipientRouter(
        [
            MailboxConfig(name="support", protocol="lmtp", address="Support@Example.com", department="IT"),
            MailboxContext(name="sales", addresses=("sales@example.com", "verkauf@xn--bcher-kva.example")),
        ]
    )
    assert router.route("support@example.com").mailbox == "support"
    assert router.route("SUPPORT@EXAMPLE.COM").context.department == "IT"
    route = router.route("support+ABC123@example.com")
    assert route.mailbox == "support"
    assert route.recipient == "support+abc123@example.com"
    assert router.route("verkauf@bücher.example").mailbox == "sales"
    assert router.route("verkauf@XN--BCHER-KVA.example").mailbox == "sales"
    for unknown in ("support@example.org", "supports@example.com", "+x@example.com", "support+@example.com",
                    "support", "", "support@example.com\r\nBcc: x@y", "sup port@example.com"):  # fmt: skip
        assert router.route(unknown) is None, unknown


def test_router_without_subaddresses():
    router = RecipientRouter([MailboxContext(name="s", addresses=("s@example.com",))], plus_separator="")
    assert router.route("s+x@example.com") is None


def test_an_address_in_two_mailboxes_is_a_config_error():
    with pytest.raises(ConfigError, match="two mailboxes"):
        RecipientRouter(
            [MailboxContext(name="a", addresses=("x@e.com",)), MailboxContext(name="b", addresses=("X@e.com",))]
        )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_routing_never_raises(text):
    router = RecipientRouter([MailboxContext(name="s", addresses=("s@example.com",))])
    route = router.route(text)
    assert route is None or route.mailbox == "s"


# -- the command line ---------------------------------------------------------------------------------------------


def _receive(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ticketmail", "receive", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.integration
def test_cli_reports_config_errors_with_exit_2(tmp_path):
    config = tmp_path / "tm.toml"
    config.write_text('[storage]\nsqlite = "t.db"\n[[mailboxes]]\nname = "s"\nprotocol = "lmtp"\naddress = "s@e.com"\n'
                      '[receive]\nlmtp = "unix:/tmp/x.sock"\nmax_sesions = 3\n')  # fmt: skip
    result = _receive("--config", str(config))
    assert result.returncode == 2
    assert "receive.max_sesions: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    config.write_text('[storage]\nsqlite = "t.db"\n[[mailboxes]]\nname = "s"\nprotocol = "lmtp"\naddress = "s@e.com"\n')
    result = _receive("--config", str(config))
    assert result.returncode == 2
    assert "no listener" in result.stderr
    result = _receive("--config", str(config), "--lmtp", "10.1.2.3:24")
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr


@pytest.mark.integration
def test_fetch_skips_lmtp_mailboxes(tmp_path):
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "Maildir" / sub).mkdir(parents=True)
    config = tmp_path / "tm.toml"
    config.write_text(
        '[storage]\nsqlite = "t.db"\n'
        '[[mailboxes]]\nname = "desk"\nprotocol = "lmtp"\naddress = "desk@e.com"\n'
        '[[mailboxes]]\nname = "local"\nprotocol = "maildir"\npath = "Maildir"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "ticketmail", "fetch", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "local:" in result.stderr
    assert "desk" not in result.stderr


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.text(max_size=12), max_size=3))
def test_sender_verified_never_raises(raw, ids):
    from ticketmail.receive import sender_verified

    assert sender_verified(raw, ids) in (True, False)
    assert sender_verified(b"Authentication-Results: " + raw, ["mx"]) in (True, False)


def test_sender_verified_reads_only_the_header_block():
    from ticketmail.receive import sender_verified

    body_only = b"Subject: x\r\n\r\nAuthentication-Results: mx; spf=pass\r\n"
    assert not sender_verified(body_only, ["mx"])
    folded = b"Authentication-Results: mx;\r\n\tdkim=pass\r\n  header.d=example.com\r\nSubject: x\r\n\r\n"
    assert sender_verified(folded, ["MX"])
    assert not sender_verified(folded, [])
