"""Pop3Source against the real private Dovecot: POP3S, STLS, plain, UIDL tracking, DELE after commit."""

from __future__ import annotations

import pytest

from ticketmail.errors import SourceError
from ticketmail.sources.base import SourceSession
from ticketmail.sources.oauth import static_token
from ticketmail.sources.pop3 import Pop3Source

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("security", ["ssl", "starttls", "none"])
def test_fetch_exact_bytes_and_dele_after_commit(dovecot, mail_user, make_message, security):
    raws = [make_message(i) for i in range(4)]
    dovecot.append_many(mail_user, raws)
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3", security=security, after="delete"))
    with source.session() as s:
        assert isinstance(s, SourceSession)
        items = list(s.fetch())
        assert [i.data for i in items] == raws
        assert {"UIDL", "TOP"} <= s.capabilities
        s.acknowledge(items[0])
        s.acknowledge(items[2])
        s.release(items[1], failed=False)
        # DELE is applied only at QUIT: still all four on the server
        assert len(dovecot.state(mail_user)) == 4
    remaining = dovecot.state(mail_user)
    assert [m.data for m in remaining] == [raws[1], raws[3]]


def test_provenance_is_uidl_and_stable(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3"))
    with source.session() as s:
        first = [i.provenance for i in s.fetch()]
    assert len({p.key for p in first}) == 3
    assert {p.kind for p in first} == {"pop3"}
    again = Pop3Source(dovecot.config(mail_user, protocol="pop3"))
    with again.session() as s:
        assert [i.provenance for i in s.fetch()] == first


def test_crash_before_quit_deletes_nothing(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(2)])
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3", after="delete"))

    def worker() -> None:
        with source.session() as s:
            for item in s.fetch():
                s.acknowledge(item)
            raise RuntimeError("worker died before QUIT")

    with pytest.raises(RuntimeError):
        worker()
    assert len(dovecot.state(mail_user)) == 2


def test_kept_mailbox_not_reingested_via_skip(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    ledger: set[str] = set()
    cfg = dovecot.config(mail_user, protocol="pop3", after="seen")
    with Pop3Source(cfg, skip=lambda p: p.key in ledger).session() as s:
        for item in s.fetch():
            ledger.add(item.provenance.key)  # "committed"
            s.acknowledge(item)
    dovecot.append(mail_user, make_message(9))
    # a new process (fresh source object): only the new message is downloaded
    with Pop3Source(cfg, skip=lambda p: p.key in ledger).session() as s:
        items = list(s.fetch())
        assert s.acknowledged_skipped == 3
    assert len(items) == 1
    assert b"message 9" in items[0].data
    assert len(dovecot.state(mail_user)) == 4  # kept on the server


def test_same_source_remembers_kept_uidls(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(2)])
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3", after="seen"))
    with source.session() as s:
        for item in s.fetch():
            s.acknowledge(item)
    with source.session() as s:
        assert list(s.fetch()) == []


def test_skip_with_delete_heals_lost_acknowledgement(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(2)])
    cfg = dovecot.config(mail_user, protocol="pop3", after="delete")
    with Pop3Source(cfg).session() as s:
        keys = [i.provenance.key for i in s.fetch()]
    with Pop3Source(cfg, skip=lambda p: p.key == keys[0]).session() as s:
        assert len(list(s.fetch())) == 1
    assert len(dovecot.state(mail_user)) == 1


def test_failures_bounded_never_deleted(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1))
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3", after="delete", max_retries=2))
    for _ in range(2):
        with source.session() as s:
            (item,) = list(s.fetch())
            s.release(item, failed=True)
    with source.session() as s:
        assert list(s.fetch()) == []
    assert item.provenance.key in source.quarantined
    assert len(dovecot.state(mail_user)) == 1


def test_limit(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(5)])
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3", max_per_run=3))
    with source.session() as s:
        assert len(list(s.fetch())) == 3
        assert len(list(s.fetch(limit=1))) == 1


def test_oversize_skip_and_headers(dovecot, mail_user, make_message):
    big = make_message(2, subject="Big one", size=60_000)
    dovecot.append_many(mail_user, [make_message(1), big])
    skip_src = Pop3Source(dovecot.config(mail_user, protocol="pop3", max_message_size=10_000))
    with skip_src.session() as s:
        items = list(s.fetch())
        (notice,) = s.oversized
    assert len(items) == 1
    assert notice.size >= len(big)
    head_src = Pop3Source(
        dovecot.config(mail_user, protocol="pop3", max_message_size=10_000, oversize="headers", after="delete")
    )
    with head_src.session() as s:
        items = list(s.fetch())
        for item in items:
            s.acknowledge(item)
    truncated = items[1]
    assert truncated.truncated
    assert b"Subject: Big one" in truncated.data
    assert len(truncated.data) < 2_000
    assert b"it is not deleted" in truncated.data
    # the small one is deleted; the truncated one is the only full copy and stays on the server
    assert [m.data for m in dovecot.state(mail_user)] == [big]


def test_bad_password_auth_stage(dovecot, mail_user):
    wrong = "N0t-The-Password"
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3", password=wrong))
    with pytest.raises(SourceError) as info, source.session():
        pass
    assert info.value.stage == "auth"
    assert wrong not in str(info.value)


def test_xoauth2(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1))
    token = dovecot.issue_token(mail_user)
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3", auth="oauth2", token_provider=static_token(token)))
    with source.session() as s:
        assert len(list(s.fetch())) == 1
    bad = Pop3Source(
        dovecot.config(mail_user, protocol="pop3", auth="oauth2", token_provider=static_token("forged-token"))
    )
    with pytest.raises(SourceError) as info, bad.session():
        pass
    assert info.value.stage == "auth"
    assert "forged-token" not in str(info.value)


def test_ack_of_foreign_item_is_refused(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1))
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3", after="delete"))
    with source.session() as s:
        (item,) = list(s.fetch())
    with source.session() as s, pytest.raises(SourceError) as info:
        s.acknowledge(item)  # not fetched in this session: message numbers may differ
    assert info.value.stage == "ack"


def test_connection_lost_mid_session_is_a_source_error(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1))
    source = Pop3Source(dovecot.config(mail_user, protocol="pop3"))
    errors: list[SourceError] = []

    def run() -> None:
        with source.session() as s:
            s.client.sock.shutdown(2)
            try:
                list(s.fetch())
            except SourceError as exc:
                errors.append(exc)

    # the session then cannot QUIT either: that is reported too, since pending DELEs were not applied
    with pytest.raises(SourceError) as info:
        run()
    assert errors[0].stage == "fetch"
    assert info.value.stage == "ack"
    assert "QUIT" in info.value.message


def test_poplib_private_helpers_still_exist() -> None:
    """POP3 has no public AUTH nor socket hook in poplib; `sources/pop3.py` relies on these private ones."""
    import inspect
    import poplib

    for name in ("_create_socket", "_shortcmd", "_putcmd", "_getresp"):
        member = getattr(poplib.POP3, name, None)
        assert callable(member), f"poplib.POP3.{name} is gone: sources/pop3.py needs another way"
    assert "timeout" in inspect.signature(poplib.POP3._create_socket).parameters
    assert "line" in inspect.signature(poplib.POP3._shortcmd).parameters
