"""The receiver over real sockets (LMTP on a Unix socket, SMTP on loopback TCP), storing into real backends."""

from __future__ import annotations

import socket
import sqlite3
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticketmail.backends.sqlite import SQLiteBackend
from ticketmail.rules import load_rules

pytestmark = pytest.mark.integration


def _raw(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_each_recipient_gets_its_own_reply_and_mailbox_context(start_receiver, lmtp_send, make_message):
    running = start_receiver()
    with running.client() as client:
        replies = lmtp_send(
            client, "alice@client.test", ["support@desk.test", "nobody@desk.test", "Vertrieb@Desk.Test"],
            make_message(1),
        )  # fmt: skip
    codes = [code for code, _ in replies]
    assert codes == [250, 550, 250]
    assert replies[1][1].startswith(b"5.1.1")
    tickets = {t.mailbox: t for t in running.backend.list_tickets()}
    # Global duplicate scope: the second desk's copy is the same message by another route (one ticket).
    assert set(tickets) == {"support"}
    assert tickets["support"].department == "IT"
    assert tickets["support"].priority == 2
    assert b"already delivered" in replies[2][1]


def test_destination_scope_gives_each_desk_a_ticket_with_its_defaults(start_receiver, lmtp_send, make_message):
    rules = load_rules({"settings": {"duplicate_scope": "destination"}})
    running = start_receiver(rules=rules)
    with running.client() as client:
        replies = lmtp_send(client, "alice@client.test", ["support@desk.test", "sales@desk.test"], make_message(2))
    assert [code for code, _ in replies] == [250, 250]
    tickets = {t.mailbox: t for t in running.backend.list_tickets()}
    assert set(tickets) == {"support", "sales"}
    assert tickets["sales"].category == "orders"
    assert tickets["support"].department == "IT"


def test_unknown_recipient_refused_at_rcpt_and_nothing_stored(start_receiver):
    running = start_receiver()
    with running.client() as client:
        assert client.mail("alice@client.test")[0] == 250
        code, text = client.rcpt("root@desk.test")
        assert (code, text[:5]) == (550, b"5.1.1")
        assert client.rcpt("support@elsewhere.test")[0] == 550
        client.putcmd("data")
        assert client.getreply()[0] == 503  # no recipient: no DATA
    assert running.backend.list_tickets() == []


def test_redelivery_is_a_duplicate_answered_250(start_receiver, lmtp_send, make_message):
    running = start_receiver()
    raw = make_message(3)
    with running.client() as client:
        first = lmtp_send(client, "alice@client.test", ["support@desk.test"], raw)
        second = lmtp_send(client, "alice@client.test", ["support@desk.test"], raw)
    assert first[0][0] == second[0][0] == 250
    assert b"created" in first[0][1]
    assert b"already delivered" in second[0][1]
    assert len(running.backend.list_tickets()) == 1


def test_plus_address_routes_to_the_desk_and_threads_by_its_token(start_receiver, lmtp_send, make_message):
    running = start_receiver()
    with running.client() as client:
        lmtp_send(client, "alice@client.test", ["support@desk.test"], make_message(4, subject="Printer"))
        (ticket,) = running.backend.list_tickets()
        # A reply without any threading headers, sent to support+NUMBER@ (Bcc: not in To/Cc).
        reply = make_message(5, subject="more info")
        code, text = lmtp_send(client, "alice@client.test", [f"support+{ticket.number}@desk.test"], reply)[0]
    assert code == 250
    assert b"appended" in text
    assert running.backend.get_ticket(ticket.number).entry_count == 2


def test_declared_size_over_the_limit_is_refused_at_mail(start_receiver):
    running = start_receiver(max_message_size=10_000)
    with running.client() as client:
        assert b"SIZE 10000" in client.ehlo_resp
        code, text = client.mail("alice@client.test", ["SIZE=20000"])
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.mail("alice@client.test", ["SIZE=2000"])[0] == 250


def test_oversize_data_gets_552_per_recipient_and_the_session_goes_on(start_receiver, lmtp_send, make_message):
    running = start_receiver(max_message_size=10_000)
    with running.client() as client:
        replies = lmtp_send(client, "alice@client.test", ["support@desk.test", "sales@desk.test"],
                            make_message(6, size=20_000))  # fmt: skip
        assert [(c, t[:5]) for c, t in replies] == [(552, b"5.3.4"), (552, b"5.3.4")]
        assert lmtp_send(client, "alice@client.test", ["support@desk.test"], make_message(7))[0][0] == 250
    assert len(running.backend.list_tickets()) == 1


def test_too_many_recipients_get_452(start_receiver):
    running = start_receiver(max_recipients=1)
    with running.client() as client:
        client.mail("alice@client.test")
        assert client.rcpt("support@desk.test")[0] == 250
        code, text = client.rcpt("sales@desk.test")
        assert (code, text[:5]) == (452, b"4.5.3")


def test_dot_stuffing_and_long_lines_survive(start_receiver, lmtp_send):
    running = start_receiver()
    long_line = "y" * 5000
    raw = (
        "From: alice@client.test\r\nTo: support@desk.test\r\nSubject: dots\r\nMessage-ID: <dots@client.test>\r\n\r\n"
        f".leading dot\r\n..two dots\r\n{long_line}\r\nend\r\n"
    ).encode()
    with running.client() as client:
        assert lmtp_send(client, "alice@client.test", ["support@desk.test"], raw)[0][0] == 250
    (ticket,) = running.backend.list_tickets()
    body = running.backend.entries(ticket.number)[0].body
    assert ".leading dot" in body
    assert "..two dots" in body
    assert long_line in body.replace("\n", "")


def test_lmtp_needs_lhlo_and_refuses_helo(start_receiver):
    running = start_receiver()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(running.path)
        assert _raw(sock).startswith(b"220 ")
        sock.sendall(b"HELO client.test\r\n")
        assert _raw(sock).startswith(b"500")
        sock.sendall(b"MAIL FROM:<a@client.test>\r\n")
        assert _raw(sock).startswith(b"503")
        sock.sendall(b"LHLO client.test\r\n")
        reply = b""
        while b"\r\n250 " not in reply:
            reply += _raw(sock)
        assert b"PIPELINING" in reply
        assert b"ENHANCEDSTATUSCODES" in reply
        assert b"AUTH" not in reply


def test_pipelined_transaction_is_answered_in_order(start_receiver, make_message):
    running = start_receiver()
    raw = make_message(8)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(running.path)
        _raw(sock)
        sock.sendall(
            b"LHLO c\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<support@desk.test>\r\nRCPT TO:<x@desk.test>\r\nDATA\r\n"
        )
        buf = b""
        deadline = time.monotonic() + 5
        while buf.count(b"\r\n") < 10 and time.monotonic() < deadline:  # 6 LHLO lines, MAIL, 2 RCPT, 354
            buf += sock.recv(4096)
        sock.sendall(raw + b".\r\nQUIT\r\n")
        while b"221" not in buf and time.monotonic() < deadline:
            buf += sock.recv(4096)
    lines = [line for line in buf.split(b"\r\n") if line and not line.startswith(b"250-")]
    codes = [line[:3] for line in lines]
    assert codes == [b"250", b"250", b"250", b"550", b"354", b"250", b"221"]


def test_connection_dropped_during_data_leaves_nothing(start_receiver, lmtp_send, make_message):
    running = start_receiver()
    raw = make_message(9)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(running.path)
        _raw(sock)
        sock.sendall(b"LHLO c\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<support@desk.test>\r\nDATA\r\n")
        time.sleep(0.2)
        sock.sendall(raw[: len(raw) // 2])
    time.sleep(0.3)
    assert running.backend.list_tickets() == []
    with running.client() as client:
        assert lmtp_send(client, "a@client.test", ["support@desk.test"], raw)[0][0] == 250
    assert len(running.backend.list_tickets()) == 1


def test_session_limit_greets_with_421(start_receiver):
    running = start_receiver(max_sessions=1)
    with socket.socket(socket.AF_UNIX) as first, socket.socket(socket.AF_UNIX) as second:
        first.connect(running.path)
        assert _raw(first).startswith(b"220")
        second.connect(running.path)
        assert _raw(second).startswith(b"421 4.3.2")
    time.sleep(0.2)
    with running.client() as client:  # the slot is free again
        assert client.noop()[0] == 250


def test_idle_timeout_closes_with_421(start_receiver):
    running = start_receiver(idle_timeout=0.3)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(running.path)
        assert _raw(sock).startswith(b"220")
        assert _raw(sock, timeout=3).startswith(b"421 4.4.2")
        assert sock.recv(10) == b""


def test_session_timeout_closes_an_active_session(start_receiver):
    running = start_receiver(session_timeout=0.6, idle_timeout=5)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(running.path)
        _raw(sock)
        deadline = time.monotonic() + 3
        seen = b""
        while time.monotonic() < deadline and b"421" not in seen:
            try:
                sock.sendall(b"NOOP\r\n")
                seen += _raw(sock)
            except OSError:
                break
            time.sleep(0.1)
        seen += _raw(sock)
        assert b"421 4.4.2" in seen
        assert b"250" in seen  # it was active until then


def test_policy_refusal_is_550_571_and_stays_refused_on_retry(start_receiver, lmtp_send, make_message):
    rules = load_rules(
        {"rules": [{"name": "no portal mail", "conditions": [{"field": "subject", "op": "contains", "value": "portal"}],
                    "actions": {"reject": True, "reject_reason": "Use the portal"}}]}
    )  # fmt: skip
    running = start_receiver(rules=rules)
    raw = make_message(10, subject="portal question")
    with running.client() as client:
        code, text = lmtp_send(client, "alice@client.test", ["support@desk.test"], raw)[0]
        assert (code, text[:5]) == (550, b"5.7.1")
        assert b"Use the portal" in text
        code, text = lmtp_send(client, "alice@client.test", ["support@desk.test"], raw)[0]
        assert (code, text[:5]) == (550, b"5.7.1")
    assert running.backend.list_tickets() == []
    assert [r.action for r in running.backend.audit_log()] == ["rejected"]


def test_policy_refusal_accept_drops_silently(start_receiver, lmtp_send, make_message):
    rules = load_rules(
        {"rules": [{"name": "r", "conditions": [{"field": "subject", "op": "contains", "value": "portal"}],
                    "actions": {"reject": True}}]}
    )  # fmt: skip
    running = start_receiver(rules=rules, policy_refusal="accept")
    with running.client() as client:
        code, _ = lmtp_send(client, "alice@client.test", ["support@desk.test"], make_message(11, subject="portal"))[0]
    assert code == 250
    assert running.backend.list_tickets() == []
    assert [r.action for r in running.backend.audit_log()] == ["rejected"]


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (b"Authentication-Results: mx.desk.test; spf=pass smtp.mailfrom=client.test\r\n", 550),
        (
            b"Authentication-Results: mx.desk.test 1;\r\n  dkim=fail; dmarc=pass (p=reject) header.from=c.test\r\n",
            550,
        ),
        (b"Authentication-Results: mx.desk.test; spf=softfail; dkim=none\r\n", 250),
        (b"Authentication-Results: forged.example; spf=pass\r\n", 250),  # not our server: not believed
        (b"", 250),
    ],
)
def test_policy_refusal_verified_bounces_only_authenticated_senders(
    start_receiver, lmtp_send, make_message, header, code
):
    rules = load_rules(
        {"rules": [{"name": "r", "conditions": [{"field": "subject", "op": "contains", "value": "portal"}],
                    "actions": {"reject": True, "reject_reason": "Use the portal"}}]}
    )  # fmt: skip
    running = start_receiver(rules=rules, policy_refusal="verified", trusted_authserv_ids=["MX.desk.test"])
    raw = header + make_message(19, subject="portal")
    with running.client() as client:
        assert lmtp_send(client, "alice@client.test", ["support@desk.test"], raw)[0][0] == code
        assert lmtp_send(client, "alice@client.test", ["support@desk.test"], raw)[0][0] == code  # the retry too
    assert running.backend.list_tickets() == []
    assert [r.action for r in running.backend.audit_log()] == ["rejected"]


def test_automatic_mail_is_accepted_and_ignored(start_receiver, lmtp_send, make_message):
    running = start_receiver()
    raw = make_message(12).replace(b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:")
    with running.client() as client:
        assert lmtp_send(client, "<>", ["support@desk.test"], raw)[0][0] == 250
    assert running.backend.list_tickets() == []
    assert [r.action for r in running.backend.audit_log()] == ["ignored"]


def test_backend_unavailable_is_451_then_delivered(start_receiver, lmtp_send, make_message, sockdir):
    db = sockdir / "tickets.sqlite3"
    backend = SQLiteBackend(db, timeout=0.2)
    running = start_receiver(backend=backend)
    raw = make_message(13)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with running.client() as client:
            code, text = lmtp_send(client, "alice@client.test", ["support@desk.test", "sales@desk.test"], raw)[0]
        assert (code, text[:5]) == (451, b"4.3.0")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    with running.client() as client:
        replies = lmtp_send(client, "alice@client.test", ["support@desk.test"], raw)
    assert replies[0][0] == 250
    assert len(backend.list_tickets()) == 1
    backend.close()


def test_unix_socket_mode_and_stale_socket(start_receiver, sockdir):
    path = sockdir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # left behind by a crashed run
    running = start_receiver(lmtp=f"unix:{path}", socket_mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with running.client() as client:
        assert client.noop()[0] == 250
    running.receiver.stop()
    assert not path.exists()


def test_a_regular_file_is_never_replaced_by_the_socket(start_receiver, sockdir):
    path = sockdir / "important"
    path.write_text("data")
    from ticketmail.errors import ConfigError

    with pytest.raises(ConfigError, match="not a socket"):
        start_receiver(lmtp=f"unix:{path}")
    assert path.read_text() == "data"


# -- SMTP mode ----------------------------------------------------------------------------------------------------


def test_smtp_is_no_open_relay_and_delivers_configured_recipients(start_receiver, make_message):
    import smtplib

    running = start_receiver(lmtp=None, smtp="127.0.0.1:0")
    address = running.receiver.bound["smtp"]
    with smtplib.SMTP(address.host, address.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("spammer@evil.test", ["victim@gmail.test"], make_message(14))
        refused = client.sendmail("alice@client.test", ["support@desk.test", "other@relay.test"], make_message(15))
        assert set(refused) == {"other@relay.test"}
    (ticket,) = running.backend.list_tickets()
    assert ticket.mailbox == "support"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"openssl could not make the test certificate: {result.stderr}")
    return str(cert), str(key)


def test_starttls_with_a_self_signed_certificate(start_receiver, certificate, make_message):
    import smtplib

    cert, key = certificate
    running = start_receiver(lmtp=None, smtp="127.0.0.1:0", tls_cert=cert, tls_key=key, require_tls=True)
    address = running.receiver.bound["smtp"]
    with smtplib.SMTP(address.host, address.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        code, text = client.mail("alice@client.test")
        assert (code, text[:5]) == (530, b"5.7.0")  # require_tls: nothing before STARTTLS
        client.rset()
        context = ssl.create_default_context(cafile=cert)
        client.starttls(context=context)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        assert client.sendmail("alice@client.test", ["support@desk.test"], make_message(16)) == {}
    assert len(running.backend.list_tickets()) == 1


def test_smtp_one_reply_is_temporary_when_any_copy_failed(start_receiver, make_message, sockdir):
    import smtplib

    db = sockdir / "smtp.sqlite3"
    backend = SQLiteBackend(db, timeout=0.2)
    running = start_receiver(backend=backend, lmtp=None, smtp="127.0.0.1:0")
    address = running.receiver.bound["smtp"]
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    raw = make_message(17)
    try:
        with smtplib.SMTP(address.host, address.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPDataError) as info:
                client.sendmail("alice@client.test", ["support@desk.test"], raw)
            assert info.value.smtp_code == 451
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    with smtplib.SMTP(address.host, address.port, timeout=10) as client:
        assert client.sendmail("alice@client.test", ["support@desk.test"], raw) == {}
    assert len(backend.list_tickets()) == 1
    backend.close()


def test_stop_closes_sessions_with_421_and_removes_the_socket(start_receiver, lmtp_send, make_message):
    running = start_receiver()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(running.path)
        _raw(sock)
        running.receiver.stop()
        assert _raw(sock).startswith(b"421 4.3.2")
    assert not Path(running.path).exists()


# -- transparency of the DATA phase (a recording pipeline: the protocol layer alone) -------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.items: list[tuple[bytes, object]] = []

    def process_email(self, raw, *, provenance, context=None):
        from ticketmail.pipeline import Outcome

        self.items.append((raw, provenance))
        return Outcome("created", ticket="T1", provenance=provenance)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from ticketmail.receive import Receiver, ReceiveSettings, RecipientRouter

    from .conftest import MAILBOXES

    directory = tmp_path_factory.mktemp("rec")
    recorder = _Recorder()
    receiver = Receiver(recorder, RecipientRouter(MAILBOXES), ReceiveSettings(lmtp=f"unix:{directory}/r.sock"))
    receiver.start()
    yield receiver, recorder, f"{directory}/r.sock"
    receiver.stop()


_LINE = st.binary(max_size=1200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(_LINE, st.sampled_from([b".", b"..", b". ", b".\t", b""])), max_size=30))
def test_data_arrives_byte_for_byte_and_the_key_is_deterministic(recording, lmtp_send, lines):
    import smtplib

    _, recorder, path = recording
    data = b"Subject: x\r\n\r\n" + b"".join(line + b"\r\n" for line in lines)
    recorder.items.clear()
    with smtplib.LMTP(path, timeout=10) as client:
        client.ehlo("c")
        assert [code for code, _ in lmtp_send(client, "a@client.test", ["support+T@desk.test"], data)] == [250]
        assert [code for code, _ in lmtp_send(client, "a@client.test", ["support+T@desk.test"], data)] == [250]
    (raw1, prov1), (raw2, prov2) = recorder.items
    header = b"Return-Path: <a@client.test>\r\nDelivered-To: support+T@desk.test\r\n"
    assert raw1 == raw2 == header + data
    assert prov1 == prov2
    assert prov1.mailbox == "support"
    assert prov1.kind == "lmtp"


def test_unusable_messages_are_refused_for_good_not_retried_forever(start_receiver, lmtp_send):
    running = start_receiver()
    no_sender = b"Subject: who am I\r\nMessage-ID: <anon@x>\r\n\r\nno From header\r\n"
    garbage = bytes(range(256)) * 4 + b"\r\n"
    with running.client() as client:
        code, text = lmtp_send(client, "alice@client.test", ["support@desk.test"], no_sender)[0]
        assert (code, text[:5]) == (554, b"5.6.0")
        # With a null envelope sender it is automatic mail (a bounce of sorts): accepted and ignored.
        assert lmtp_send(client, "<>", ["support@desk.test"], no_sender.replace(b"anon@", b"anon2@"))[0][0] == 250
        code, _ = lmtp_send(client, "<>", ["support@desk.test"], garbage)[0]
        assert code in (250, 550, 552, 554)
        assert client.noop()[0] == 250  # the session survives both
    assert running.backend.list_tickets() == []


def test_smtputf8_and_8bit_mail(start_receiver, lmtp_send):
    from ticketmail.sources.config import MailboxConfig

    desk = MailboxConfig(name="es", protocol="lmtp", address="soporte@señal.test")
    running = start_receiver(mailboxes=[desk])
    raw = (
        "From: Jörg <jörg@bücher.test>\r\nTo: soporte@señal.test\r\nSubject: Grüße\r\nMessage-ID: <u8@bücher.test>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nÄrger mit dem Drucker\r\n"
    ).encode()
    with running.client() as client:
        assert client.has_extn("smtputf8")
        assert client.has_extn("8bitmime")
        code, _ = client.mail("jörg@bücher.test", ["SMTPUTF8", "BODY=8BITMIME"])
        assert code == 250
        client.rset()
        client.command_encoding = "utf-8"
        replies = lmtp_send(client, "jörg@bücher.test", ["soporte@xn--seal-hqa.test"], raw)
    assert replies[0][0] == 250
    (ticket,) = running.backend.list_tickets()
    assert ticket.subject == "Grüße"
    assert "Ärger" in running.backend.entries(ticket.number)[0].body


def test_listener_errors_name_the_address(start_receiver, sockdir):
    from ticketmail.errors import ConfigError

    missing = sockdir / "no-such-dir" / "lmtp.sock"
    with pytest.raises(OSError, match=f"cannot listen on unix:{missing}"):
        start_receiver(lmtp=f"unix:{missing}")
    with pytest.raises(ConfigError, match="no group 'no-such-group-here'"):
        start_receiver(lmtp=f"unix:{sockdir}/g.sock", socket_group="no-such-group-here")
    assert not (sockdir / "g.sock").exists()
    running = start_receiver(lmtp=None, smtp="127.0.0.1:0")
    port = running.receiver.bound["smtp"].port
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
        start_receiver(lmtp=None, smtp=f"127.0.0.1:{port}")


def test_the_250_comes_after_the_commit(start_receiver, lmtp_send, make_message, sockdir):
    db = sockdir / "commit.sqlite3"
    backend = SQLiteBackend(db)
    running = start_receiver(backend=backend, workers=2)
    reader = sqlite3.connect(db)  # another connection sees only committed data
    try:
        with running.client() as client:
            for i in range(15):
                assert lmtp_send(client, "a@client.test", ["support@desk.test"], make_message(700 + i))[0][0] == 250
                assert reader.execute("SELECT count(*) FROM tickets").fetchone()[0] == i + 1
    finally:
        reader.close()
        running.receiver.stop()
        backend.close()


def test_from_config_routes_enabled_or_named_mailboxes(tmp_path):
    from ticketmail.backends.memory import InMemoryBackend
    from ticketmail.errors import ConfigError
    from ticketmail.pipeline import Pipeline
    from ticketmail.receive import Receiver, ReceiveSettings
    from ticketmail.sources.config import load_config

    file = tmp_path / "tm.toml"
    file.write_text(
        '[[mailboxes]]\nname = "a"\nprotocol = "lmtp"\naddress = "a@e.test"\n'
        '[[mailboxes]]\nname = "b"\nprotocol = "lmtp"\naddress = "b@e.test"\nenabled = false\n'
        '[[mailboxes]]\nname = "c"\nprotocol = "maildir"\npath = "m"\naddress = "c@e.test"\n'
    )
    config = load_config(file)
    pipeline = Pipeline(InMemoryBackend())
    receiver = Receiver.from_config(pipeline, config, ReceiveSettings())
    assert receiver.router.addresses == {"a@e.test": "a", "c@e.test": "c"}
    only = Receiver.from_config(pipeline, config, ReceiveSettings(mailboxes=("b",)))
    assert only.router.addresses == {"b@e.test": "b"}
    with pytest.raises(ConfigError, match="no mailbox named 'z'"):
        Receiver.from_config(pipeline, config, ReceiveSettings(mailboxes=("z",)))


def test_a_receiver_can_be_started_again(start_receiver, lmtp_send, make_message):
    running = start_receiver()
    running.receiver.stop()
    running.receiver.start()
    with running.client() as client:
        assert lmtp_send(client, "a@client.test", ["support@desk.test"], make_message(800))[0][0] == 250
