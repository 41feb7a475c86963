"""check(): every failure stage for real against the private Dovecot, plus success details."""

from __future__ import annotations

import mailbox
import os
import tempfile

import pytest

from ticketmail.sources.check import CheckResult, check
from ticketmail.sources.config import mailbox_from_dict

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("protocol", "security"), [("imap", "ssl"), ("imap", "starttls"), ("pop3", "ssl")])
def test_success_reports_capabilities_and_count(dovecot, mail_user, make_message, protocol, security):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    result = check(dovecot.config(mail_user, protocol=protocol, security=security))
    assert result.ok, result.message
    assert result.stage is None
    assert result.message_count == 3
    if protocol == "imap":
        assert {"IDLE", "MOVE", "UIDPLUS"} <= set(result.capabilities)
        assert result.idle
        assert "IDLE, MOVE, UIDPLUS" in result.message
    data = result.to_dict()
    assert data["ok"] is True
    assert data["message_count"] == 3
    # check changes nothing on the server
    assert all("\\Seen" not in m.flags for m in dovecot.state(mail_user))


def test_dns_failure(dovecot, mail_user):
    result = check(dovecot.config(mail_user, host="mail.does-not-exist.invalid"))
    assert not result.ok
    assert result.stage == "dns"
    assert "mail.does-not-exist.invalid" in result.message


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_closed_port_is_connect_refused(dovecot, mail_user, protocol):
    result = check(dovecot.config(mail_user, protocol=protocol, port=dovecot.closed_port))
    assert result.stage == "connect"
    assert "refused" in result.message


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_ssl_against_plaintext_port(dovecot, mail_user, protocol):
    result = check(dovecot.config(mail_user, protocol=protocol, security="ssl", port=dovecot.ports[protocol]))
    assert result.stage == "tls"
    assert "does not speak implicit TLS" in result.message
    assert "starttls" in result.message


@pytest.mark.parametrize(("protocol", "security"), [("imap", "none"), ("imap", "starttls"), ("pop3", "none")])
def test_plaintext_against_implicit_tls_port(dovecot, mail_user, protocol, security):
    cfg = dovecot.config(mail_user, protocol=protocol, security=security, port=dovecot.ports[protocol + "s"], timeout=2)
    result = check(cfg)
    assert result.stage == "tls"
    assert "speaks implicit TLS" in result.message
    assert "security = 'ssl'" in result.message


def test_untrusted_certificate(dovecot, mail_user):
    result = check(dovecot.config(mail_user, ca_file=None))  # system CA store does not know our test CA
    assert result.stage == "tls"
    assert "certificate verification failed" in result.message
    assert "ca_file" in result.message


def test_untrusted_certificate_over_starttls(dovecot, mail_user):
    result = check(dovecot.config(mail_user, security="starttls", ca_file=None))
    assert result.stage == "tls"
    assert "certificate verification failed" in result.message


def test_verify_false_is_explicit_opt_out(dovecot, mail_user):
    result = check(dovecot.config(mail_user, verify=False))
    assert result.ok, result.message


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_bad_password(dovecot, mail_user, protocol):
    result = check(dovecot.config(mail_user, protocol=protocol, password="definitely-wrong"))
    assert result.stage == "auth"
    assert "definitely-wrong" not in result.message
    assert mail_user in result.message


def test_missing_folder(dovecot, mail_user):
    result = check(dovecot.config(mail_user, folder="Support/Inbound"))
    assert result.stage == "folder"
    assert "Support/Inbound" in result.message


def test_missing_password_env_is_config_stage(dovecot, mail_user, monkeypatch):
    monkeypatch.delenv("TM_TEST_NO_SUCH_VAR", raising=False)
    result = check(dovecot.config(mail_user, password_env="TM_TEST_NO_SUCH_VAR"))
    assert result.stage == "config"
    assert "TM_TEST_NO_SUCH_VAR" in result.message


def test_password_file_works(dovecot, mail_user):
    fd, path = tempfile.mkstemp()
    os.write(fd, dovecot.password.encode() + b"\n")
    os.close(fd)
    try:
        assert check(dovecot.config(mail_user, password_file=path)).ok
    finally:
        os.unlink(path)


def test_failing_token_provider_is_auth_stage(dovecot, mail_user):
    def broken() -> str:
        raise RuntimeError("refresh token expired: AADSTS700082 secret-ish detail")

    result = check(dovecot.config(mail_user, auth="oauth2", token_provider=broken))
    assert result.stage == "auth"
    assert "token provider failed" in result.message
    assert "secret-ish" not in result.message


def test_oauth2_token_rejected(dovecot, mail_user):
    result = check(dovecot.config(mail_user, auth="oauth2", token_provider=lambda: "not-a-valid-token"))
    assert result.stage == "auth"
    token = dovecot.issue_token(mail_user)
    assert check(dovecot.config(mail_user, auth="oauth2", token_provider=lambda: token)).ok


def test_local_maildir_and_mbox(tmp_path):
    md = mailbox.Maildir(tmp_path / "md", create=True)
    md.add(b"Subject: x\r\n\r\nbody\r\n")
    md.close()
    ok = check(mailbox_from_dict({"name": "md", "protocol": "maildir", "path": str(tmp_path / "md")}))
    assert ok.ok
    assert ok.message_count == 1
    missing = check(mailbox_from_dict({"name": "mb", "protocol": "mbox", "path": str(tmp_path / "nope.mbox")}))
    assert missing.stage == "folder"
    not_md = check(mailbox_from_dict({"name": "md2", "protocol": "maildir", "path": str(tmp_path)}))
    assert not_md.stage == "folder"


def test_result_is_a_value():
    r = CheckResult("x", False, "dns", "cannot resolve")
    assert r.to_dict()["stage"] == "dns"
    assert not r.idle


@pytest.fixture
def silent_server():
    """A TCP listener that accepts connections (kernel backlog) but never says anything."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def test_silent_server_with_tls_times_out_in_tls_stage(dovecot, mail_user, silent_server):
    result = check(dovecot.config(mail_user, port=silent_server, timeout=1))
    assert result.stage == "tls"
    assert "timed out" in result.message


def test_silent_server_plaintext_is_protocol_stage(dovecot, mail_user, silent_server):
    result = check(dovecot.config(mail_user, security="none", port=silent_server, timeout=1))
    assert result.stage == "protocol"
    assert "no IMAP greeting" in result.message


def test_wrong_service_on_port(dovecot, mail_user):
    # a POP3 server where IMAP is expected: the greeting gives it away
    result = check(dovecot.config(mail_user, security="none", port=dovecot.ports["pop3"]))
    assert result.stage == "protocol"
    assert "+OK" in result.message


def test_connect_timeout_is_told_apart_from_refused(dovecot, mail_user):
    import socket

    # a listener whose accept queue is full drops further SYNs: a real connect timeout on loopback
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    try:
        result = check(dovecot.config(mail_user, port=port, timeout=1))
    finally:
        filler.close()
        server.close()
    assert result.stage == "connect"
    assert "timed out" in result.message
    assert "firewall" in result.message


def test_certificate_for_another_name(dovecot, mail_user):
    # the server also listens on 127.0.0.2; its certificate names only localhost and 127.0.0.1
    result = check(dovecot.config(mail_user, host="127.0.0.2"))
    assert result.stage == "tls"
    assert "certificate verification failed" in result.message
    assert "mismatch" in result.message.lower()
    assert "set host to a name the certificate lists" in result.message
