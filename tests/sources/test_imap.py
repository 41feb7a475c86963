"""ImapSource against the real private Dovecot (see conftest.py): fetch, acknowledge, retries, oversize, IDLE."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.errors import SourceError
from ticketmail.sources.base import RawItem, SourceSession, WaitableSession
from ticketmail.sources.imap import ImapSession, ImapSource, fail_count, headers_only_message, uid_set
from ticketmail.sources.oauth import static_token

pytestmark = pytest.mark.integration


def _fetch_all(source: ImapSource, **kw: Any) -> list[RawItem]:
    with source.session() as s:
        return list(s.fetch(**kw))


@pytest.mark.parametrize("security", ["ssl", "starttls", "none"])
def test_fetch_exact_bytes_without_setting_seen(dovecot, mail_user, make_message, security):
    raws = [make_message(i) for i in range(5)]
    uids = dovecot.append_many(mail_user, raws)
    source = ImapSource(dovecot.config(mail_user, security=security))
    items = _fetch_all(source)
    assert [i.data for i in items] == raws
    validity = dovecot.uidvalidity(mail_user)
    assert [i.provenance.key for i in items] == [f"{validity}:{u}" for u in uids]
    assert {i.provenance.kind for i in items} == {"imap"}
    assert all(i.size == len(i.data) for i in items)
    # fetching alone changes nothing on the server
    assert all("\\Seen" not in m.flags for m in dovecot.state(mail_user))
    assert len(dovecot.state(mail_user)) == 5


def test_session_satisfies_the_seam(dovecot, mail_user):
    source = ImapSource(dovecot.config(mail_user))
    with source.session() as s:
        assert isinstance(s, SourceSession)
        assert isinstance(s, WaitableSession)
        assert {"IDLE", "MOVE", "UIDPLUS"} <= s.capabilities
        assert s.uidvalidity == dovecot.uidvalidity(mail_user)


def test_bodies_come_in_batches_not_one_round_trip_each(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(23)])
    source = ImapSource(dovecot.config(mail_user), batch_size=10)
    commands: list[str] = []
    with source.session() as s:
        real = s.client.uid

        def counting(*args: Any) -> Any:
            commands.append(" ".join(str(a) for a in args))
            return real(*args)

        s.client.uid = counting  # type: ignore[method-assign]
        items = list(s.fetch())
    assert len(items) == 23
    body_fetches = [c for c in commands if "BODY.PEEK[]" in c]
    assert len(body_fetches) == 3  # 10 + 10 + 3
    # one SEARCH for candidates (SMALLER than the limit) and one to report oversize ones (LARGER)
    assert len([c for c in commands if c.startswith("SEARCH")]) == 2


def test_limit_caps_a_run_and_oldest_come_first(dovecot, mail_user, make_message):
    uids = dovecot.append_many(mail_user, [make_message(i) for i in range(8)])
    source = ImapSource(dovecot.config(mail_user, after="delete"))
    with source.session() as s:
        items = list(s.fetch(limit=3))
        for item in items:
            s.acknowledge(item)
    assert [int(i.provenance.key.split(":")[1]) for i in items] == uids[:3]
    assert [m.uid for m in dovecot.state(mail_user)] == uids[3:]
    # default limit: max_per_run
    source = ImapSource(dovecot.config(mail_user, max_per_run=2))
    assert len(_fetch_all(source)) == 2


def test_ack_delete_expunges_only_acknowledged(dovecot, mail_user, make_message):
    uids = dovecot.append_many(mail_user, [make_message(i) for i in range(4)])
    source = ImapSource(dovecot.config(mail_user, after="delete"))
    with source.session() as s:
        items = list(s.fetch())
        s.acknowledge(items[0])
        s.acknowledge(items[2])
        s.release(items[1], failed=False)
    state = dovecot.state(mail_user)
    assert [m.uid for m in state] == [uids[1], uids[3]]
    assert all("\\Deleted" not in m.flags and "\\Seen" not in m.flags for m in state)


def test_ack_seen_keeps_and_flags_and_unseen_mode_skips_them(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    source = ImapSource(dovecot.config(mail_user, after="seen"))
    with source.session() as s:
        for item in s.fetch():
            s.acknowledge(item)
    state = dovecot.state(mail_user)
    assert len(state) == 3
    assert all("\\Seen" in m.flags for m in state)
    assert _fetch_all(source) == []  # fetch = auto -> unseen
    # fetch = "all" sees them again (the skip callable is what keeps them from being reprocessed)
    assert len(_fetch_all(ImapSource(dovecot.config(mail_user, after="seen", fetch="all")))) == 3


def test_ack_move_to_folder(dovecot, mail_user, make_message):
    raws = [make_message(i) for i in range(3)]
    dovecot.append_many(mail_user, raws)
    source = ImapSource(dovecot.config(mail_user, after="move:Processed/Done"))
    with source.session() as s:
        for item in s.fetch():
            s.acknowledge(item)
    assert dovecot.state(mail_user) == []
    assert [m.data for m in dovecot.state(mail_user, "Processed/Done")] == raws
    assert "Processed/Done" in dovecot.folders(mail_user)


def test_move_without_move_capability_uses_copy_and_expunge(dovecot, mail_user, make_message):
    raws = [make_message(i) for i in range(2)]
    dovecot.append_many(mail_user, raws)
    source = ImapSource(dovecot.config(mail_user, after="move:Done"))
    with source.session() as s:
        s.capabilities = s.capabilities - {"MOVE", "UIDPLUS"}
        for item in s.fetch():
            s.acknowledge(item)
    assert dovecot.state(mail_user) == []
    assert [m.data for m in dovecot.state(mail_user, "Done")] == raws


def test_skip_callable_acknowledges_committed_items_without_download(dovecot, mail_user, make_message):
    uids = dovecot.append_many(mail_user, [make_message(i) for i in range(4)])
    validity = dovecot.uidvalidity(mail_user)
    committed = {f"{validity}:{uids[0]}", f"{validity}:{uids[2]}"}
    source = ImapSource(dovecot.config(mail_user, after="delete"), skip=lambda p: p.key in committed)
    with source.session() as s:
        items = list(s.fetch())
        assert s.acknowledged_skipped == 2
    assert [i.provenance.key for i in items] == [f"{validity}:{uids[1]}", f"{validity}:{uids[3]}"]
    assert [m.uid for m in dovecot.state(mail_user)] == [uids[1], uids[3]]


def test_failures_are_counted_then_quarantined_never_deleted(dovecot, mail_user, make_message):
    raw = make_message(1)
    dovecot.append(mail_user, raw)
    source = ImapSource(dovecot.config(mail_user, after="delete", max_retries=3))
    for expected in (1, 2):
        with source.session() as s:
            (item,) = list(s.fetch())
            assert fail_count(item.flags) == expected - 1
            s.release(item, failed=True)
        (state,) = dovecot.state(mail_user)
        assert f"$TmFail{expected}" in state.flags
        assert fail_count(state.flags) == expected
    with source.session() as s:
        (item,) = list(s.fetch())
        s.release(item, failed=True)
    assert dovecot.state(mail_user) == []
    (quarantined,) = dovecot.state(mail_user, "Quarantine")
    assert quarantined.data == raw
    assert "$TmFail3" in quarantined.flags
    assert _fetch_all(source) == []


def test_quarantine_flag_when_folder_cannot_be_created(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1))
    # an invalid mailbox name (Dovecot refuses names with these characters) forces the flag fallback
    source = ImapSource(dovecot.config(mail_user, max_retries=1, quarantine_folder="bad/../name"))
    with source.session() as s:
        (item,) = list(s.fetch())
        s.release(item, failed=True)
    (state,) = dovecot.state(mail_user)
    assert "$TmQuarantined" in state.flags
    assert _fetch_all(source) == []


def test_oversize_skip_leaves_message_and_reports(dovecot, mail_user, make_message):
    small, big = make_message(1), make_message(2, size=50_000)
    uids = dovecot.append_many(mail_user, [small, big, make_message(3)])
    source = ImapSource(dovecot.config(mail_user, after="delete", max_message_size=10_000, oversize="skip"))
    with source.session() as s:
        items = list(s.fetch())
        for item in items:
            s.acknowledge(item)
        (notice,) = s.oversized
    assert len(items) == 2
    assert notice.size == len(big)
    assert notice.limit == 10_000
    assert notice.provenance.key.endswith(f":{uids[1]}")
    assert [m.data for m in dovecot.state(mail_user)] == [big]


def test_oversize_headers_only_with_note(dovecot, mail_user, make_message):
    big = make_message(2, subject="Huge attachment", size=80_000)
    dovecot.append(mail_user, big)
    source = ImapSource(dovecot.config(mail_user, after="delete", max_message_size=10_000, oversize="headers"))
    with source.session() as s:
        (item,) = list(s.fetch())
        s.acknowledge(item)
    assert item.truncated
    assert item.size == len(big)
    assert len(item.data) < 2_000
    assert b"Subject: Huge attachment" in item.data
    assert b"X-Ticketmail-Truncated: original-size=" in item.data
    assert item.note
    assert str(len(big)) in item.note
    assert item.note.encode() in item.data
    assert dovecot.state(mail_user) == []


def test_headers_only_message_drops_mime_structure_headers():
    header = (
        b"From: a@b.c\r\nContent-Type: multipart/mixed;\r\n boundary=xyz\r\nSubject: hi\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    out = headers_only_message(header, "note", 123)
    assert b"boundary" not in out
    assert b"base64" not in out
    assert out.endswith(b"\r\n\r\nnote\r\n")
    assert b"Subject: hi" in out


@pytest.mark.parametrize(
    ("uids", "expected"),
    [([1], "1"), ([1, 2, 3], "1:3"), ([5, 1, 2, 9, 10, 7], "1:2,5,7,9:10"), ([3, 3], "3")],
)
def test_uid_set(uids, expected):
    assert uid_set(uids) == expected


def test_bad_password_is_auth_stage_and_never_shows_password(dovecot, mail_user):
    wrong = "Wr0ng-Pa55-word"
    source = ImapSource(dovecot.config(mail_user, password=wrong))
    with pytest.raises(SourceError) as info, source.session():
        pass
    assert info.value.stage == "auth"
    assert wrong not in str(info.value)
    assert wrong not in repr(info.value)
    assert "AUTHENTICATIONFAILED" in str(info.value) or "Authentication failed" in str(info.value)
    assert wrong not in repr(source.config)


def test_missing_folder_is_folder_stage(dovecot, mail_user):
    source = ImapSource(dovecot.config(mail_user, folder="NoSuchFolder"))
    with pytest.raises(SourceError) as info, source.session():
        pass
    assert info.value.stage == "folder"
    assert "NoSuchFolder" in info.value.message
    assert "INBOX" in info.value.message


def test_non_ascii_folder_round_trips(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1), folder="&AMk-quipe")  # "Équipe" in modified UTF-7
    source = ImapSource(dovecot.config(mail_user, folder="Équipe", after="move:Traité"))
    with source.session() as s:
        (item,) = list(s.fetch())
        s.acknowledge(item)
    assert len(dovecot.state(mail_user, "Trait&AOk-")) == 1


def test_xoauth2_login(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1))
    token = dovecot.issue_token(mail_user)
    source = ImapSource(dovecot.config(mail_user, auth="oauth2", token_provider=static_token(token)))
    assert len(_fetch_all(source)) == 1
    dovecot.revoke_token(token)
    with pytest.raises(SourceError) as info, source.session():
        pass
    assert info.value.stage == "auth"
    assert token not in str(info.value)


def test_uidvalidity_change_refuses_stale_acknowledgement(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1))
    source = ImapSource(dovecot.config(mail_user, after="delete"))
    with source.session() as s:
        (item,) = list(s.fetch())
        s.uidvalidity += 1  # as if the server had renumbered the folder
        with pytest.raises(SourceError) as info:
            s.acknowledge(item)
    assert info.value.stage == "ack"
    assert len(dovecot.state(mail_user)) == 1


def test_idle_wakes_on_new_mail_and_times_out_quietly(dovecot, mail_user, make_message):
    source = ImapSource(dovecot.config(mail_user))
    with source.session() as s:
        started = time.monotonic()
        assert s.wait_for_changes(0.5) is False
        assert time.monotonic() - started < 3
        timer = threading.Timer(0.3, lambda: dovecot.append(mail_user, make_message(7)))
        timer.start()
        started = time.monotonic()
        assert s.wait_for_changes(10) is True
        assert time.monotonic() - started < 5
        timer.join()
        assert len(list(s.fetch())) == 1


def test_polling_fallback_without_idle(dovecot, mail_user, make_message):
    source = ImapSource(dovecot.config(mail_user))
    with source.session() as s:
        s.capabilities = s.capabilities - {"IDLE"}
        assert s._poll_noop(time.monotonic() + 0.2, step=0.1) is False
        dovecot.append(mail_user, make_message(1))
        assert s._poll_noop(time.monotonic() + 5, step=0.1) is True


def test_wrong_protocol_config_rejected(dovecot, mail_user):
    with pytest.raises(ValueError, match="imap"):
        ImapSource(dovecot.config(mail_user, protocol="pop3"))


def test_session_object_is_not_open_after_exit(dovecot, mail_user):
    source = ImapSource(dovecot.config(mail_user))
    with source.session() as s:
        pass
    assert isinstance(s, ImapSession)
    with pytest.raises(SourceError):
        _ = s.client


def test_queued_acknowledgements_are_sent_even_when_the_worker_fails(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    source = ImapSource(dovecot.config(mail_user, after="delete"))

    def worker() -> None:
        with source.session() as s:
            items = list(s.fetch())
            s.acknowledge(items[0])
            s.acknowledge(items[1])
            raise RuntimeError("backend went away")

    with pytest.raises(RuntimeError):
        worker()
    assert len(dovecot.state(mail_user)) == 1


def test_ack_batch_one_applies_immediately(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(2)])
    source = ImapSource(dovecot.config(mail_user, after="seen"), ack_batch=1)
    with source.session() as s:
        items = list(s.fetch())
        s.acknowledge(items[0])
        assert ["\\Seen" in m.flags for m in dovecot.state(mail_user)] == [True, False]


def test_backlog_makes_wait_return_at_once(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    source = ImapSource(dovecot.config(mail_user, after="delete"))
    with source.session() as s:
        first = list(s.fetch(limit=2))
        for item in first:
            s.acknowledge(item)
        started = time.monotonic()
        assert s.wait_for_changes(5) is True
        assert time.monotonic() - started < 1
        (last,) = list(s.fetch(limit=2))
        s.acknowledge(last)
        assert s.wait_for_changes(0.3) is False
    assert dovecot.state(mail_user) == []


def test_readonly_session_changes_nothing(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1))
    session = ImapSession(dovecot.config(mail_user), readonly=True)
    session.open()
    try:
        assert len(list(session.fetch())) == 1
    finally:
        session.close()
    (state,) = dovecot.state(mail_user)
    assert "\\Recent" in state.flags


@given(st.sets(st.integers(1, 10_000), min_size=1, max_size=200))
def test_uid_set_round_trips(uids):
    expanded: set[int] = set()
    for part in uid_set(uids).split(","):
        lo, _, hi = part.partition(":")
        expanded.update(range(int(lo), int(hi or lo) + 1))
    assert expanded == uids


@given(st.lists(st.sampled_from(["\\Seen", "$TmFail1", "$TmFail3", "$tmfail2", "$TmFailX", "$Junk"]), max_size=6))
def test_fail_count_is_highest_keyword(flags):
    nums = [int(f[7:]) for f in flags if f.lower().startswith("$tmfail") and f[7:].isdigit()]
    assert fail_count(flags) == max(nums, default=0)


@given(st.binary(max_size=2_000), st.text(max_size=50), st.integers(0, 10**9))
def test_headers_only_message_always_parses(header, note, size):
    import email
    import email.policy

    out = headers_only_message(header, note, size)
    msg = email.message_from_bytes(out, policy=email.policy.default)
    assert msg.get_content_type() == "text/plain"
    assert f"original-size={size}".encode() in out


def test_idle_after_own_deletions_still_sees_new_mail(dovecot, mail_user, make_message):
    dovecot.append_many(mail_user, [make_message(i) for i in range(3)])
    source = ImapSource(dovecot.config(mail_user, after="delete"))
    with source.session() as s:
        for item in s.fetch():
            s.acknowledge(item)
        assert s.wait_for_changes(0.3) is False  # own expunges are not "new mail"
        timer = threading.Timer(0.2, lambda: dovecot.append(mail_user, make_message(9)))
        timer.start()
        assert s.wait_for_changes(10) is True
        timer.join()
        assert len(list(s.fetch())) == 1


def test_mail_arriving_between_fetch_and_wait_is_not_lost(dovecot, mail_user, make_message):
    source = ImapSource(dovecot.config(mail_user, after="delete"))
    with source.session() as s:
        assert list(s.fetch()) == []
        dovecot.append(mail_user, make_message(1))  # arrives while we "process"
        s.client.noop()  # any command answer may carry the EXISTS notification
        started = time.monotonic()
        assert s.wait_for_changes(10) is True
        assert time.monotonic() - started < 2
        assert len(list(s.fetch())) == 1


def test_idle_slices_reissue_idle(dovecot, mail_user, make_message, monkeypatch):
    from ticketmail.sources import imap as imap_module

    monkeypatch.setattr(imap_module, "_IDLE_MAX", 0.2)  # re-IDLE every 0.2 s instead of every 25 min
    source = ImapSource(dovecot.config(mail_user))
    with source.session() as s:
        timer = threading.Timer(0.9, lambda: dovecot.append(mail_user, make_message(1)))
        timer.start()
        assert s.wait_for_changes(10) is True
        timer.join()
        assert len(list(s.fetch())) == 1


def test_connect_errors_keep_their_cause(dovecot, mail_user):
    source = ImapSource(dovecot.config(mail_user, port=dovecot.closed_port))
    with pytest.raises(SourceError) as info, source.session():
        pass
    assert info.value.stage == "connect"
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert info.value.mailbox == source.name


def test_connection_lost_mid_session_is_a_source_error(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1))
    source = ImapSource(dovecot.config(mail_user))
    with source.session() as s:
        s.client.sock.shutdown(2)  # the network goes away
        with pytest.raises(SourceError) as info:
            list(s.fetch())
    assert info.value.stage == "fetch"
    assert info.value.__cause__ is not None


def test_large_scattered_uid_sets_are_split(dovecot, mail_user, make_message, monkeypatch):
    from ticketmail.sources import _imap_wire

    monkeypatch.setattr(_imap_wire, "MAX_UIDS_PER_COMMAND", 3)
    uids = dovecot.append_many(mail_user, [make_message(i) for i in range(12)])
    validity = dovecot.uidvalidity(mail_user)
    committed = {f"{validity}:{u}" for u in uids[::2]}  # every other one: no contiguous ranges
    source = ImapSource(dovecot.config(mail_user, after="delete"), skip=lambda p: p.key in committed)
    commands: list[str] = []
    with source.session() as s:
        real = s.client.uid

        def counting(*args: Any) -> Any:
            commands.append(" ".join(str(a) for a in args))
            return real(*args)

        s.client.uid = counting  # type: ignore[method-assign]
        items = list(s.fetch())
        for item in items:
            s.acknowledge(item)
    assert len(items) == 6
    assert dovecot.state(mail_user) == []
    stores = [c for c in commands if c.startswith("STORE")]
    assert len(stores) == 4  # 6 skipped-and-acknowledged + 6 acknowledged, 3 UIDs per command
    assert all(c.split()[1].count(",") <= 2 for c in stores)


def test_logindisabled_gets_actionable_advice(dovecot, mail_user, monkeypatch):
    from ticketmail.sources import _imap_login

    session = ImapSession(dovecot.config(mail_user, security="none"))
    original = _imap_login._authenticate

    def authenticate(cfg: Any, client: Any) -> tuple[str, ...]:
        client.capabilities = (*client.capabilities, "LOGINDISABLED")  # as a strict server announces it
        return original(cfg, client)

    monkeypatch.setattr(_imap_login, "_authenticate", authenticate)
    with pytest.raises(SourceError) as info:
        session.open()
    session.close()
    assert info.value.stage == "auth"
    assert "starttls" in info.value.message


def test_oversize_pile_does_not_eat_the_cap(dovecot, mail_user, make_message):
    bigs = [make_message(i, size=30_000) for i in range(5)]
    dovecot.append_many(mail_user, [*bigs, make_message(99)])
    source = ImapSource(dovecot.config(mail_user, max_message_size=10_000, max_per_run=2))
    with source.session() as s:
        items = list(s.fetch())
        assert len(s.oversized) == 5
    assert len(items) == 1
    assert b"message 99" in items[0].data


def test_missing_folder_message_lists_names_with_spaces(dovecot, mail_user, make_message):
    dovecot.append(mail_user, make_message(1), folder="Sent Items")
    source = ImapSource(dovecot.config(mail_user, folder="Sent"))
    with pytest.raises(SourceError) as info, source.session():
        pass
    assert "Sent Items" in info.value.message


def test_imaplib_socket_hook_still_exists() -> None:
    """`_imap_login._IMAP4` hands imaplib its connected socket through `_create_socket` (no public way)."""
    import imaplib
    import inspect

    from ticketmail.sources._imap_login import _IMAP4

    hook = getattr(imaplib.IMAP4, "_create_socket", None)
    assert callable(hook), "imaplib.IMAP4._create_socket is gone: _imap_login._IMAP4 needs another way in"
    assert "timeout" in inspect.signature(hook).parameters
    assert "_create_socket" in vars(_IMAP4)


def test_idle_speaks_through_public_imaplib_methods_only(dovecot, mail_user, make_message) -> None:
    """IDLE uses `send`/`readline`/`socket`, never imaplib's private command plumbing."""
    import io
    import sys

    source = ImapSource(dovecot.config(mail_user))
    with source.session() as s:
        client = s.client
        if sys.version_info < (3, 14):  # _imap_wire peeks at imaplib's reader (3.14 has its own idle())
            assert isinstance(client.file, io.BufferedReader)
        for private in ("_command", "_get_response", "_get_line"):
            setattr(client, private, _forbidden(private))
        timer = threading.Timer(0.3, lambda: dovecot.append(mail_user, make_message(1)))
        timer.start()
        assert s.wait_for_changes(10) is True
        timer.join()
        for private in ("_command", "_get_response", "_get_line"):
            delattr(client, private)
        assert len(list(s.fetch())) == 1


def _forbidden(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"IDLE called imaplib's private {name}")

    return call
