"""API keys: issuing, hashing, networks, permissions, both stores."""

from __future__ import annotations

import ipaddress
import sqlite3

import pytest

from ticketmail.api.keys import (
    ApiKey,
    ApiKeyError,
    InMemoryKeyStore,
    SQLiteKeyStore,
    UnknownKeyError,
    authenticate,
    hash_key,
    issue_key,
    parse_network,
)
from ticketmail.errors import BackendError, InvalidValueError


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        yield InMemoryKeyStore()
    else:
        s = SQLiteKeyStore(tmp_path / "tickets.sqlite3")
        yield s
        s.close()


def test_issue_and_authenticate(store):
    issued = issue_key(store, networks=["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"], name="monitoring")
    assert issued.secret.startswith(f"tm_{issued.key.key_id}_")
    assert issued.key.digest == hash_key(issued.secret)
    assert issued.secret not in repr(issued)
    assert issued.key.digest not in repr(issued.key)
    for addr in ("127.0.0.1", "10.200.3.4", "2001:db8::42", "[2001:db8::1]", "::ffff:10.1.1.1"):
        assert authenticate(store, issued.secret, addr).key_id == issued.key.key_id
    for addr in ("127.0.0.2", "11.0.0.1", "2001:db9::1", "", "garbage"):
        with pytest.raises(ApiKeyError, match=r"^Unknown remote host or invalid API key$"):
            authenticate(store, issued.secret, addr)


def test_default_permissions_exclude_cron(store):
    key = issue_key(store, networks=["127.0.0.1"]).key
    assert key.permissions == {"create_tickets", "submit_email"}


def test_stored_rows_hold_no_secret(tmp_path):
    path = tmp_path / "t.sqlite3"
    store = SQLiteKeyStore(path)
    issued = issue_key(store, networks=["127.0.0.1"])
    store.close()
    dump = "\n".join(sqlite3.connect(path).iterdump())
    assert issued.secret not in dump
    assert issued.secret.split("_", 2)[2] not in dump
    assert issued.key.digest in dump


def test_sqlite_store_persists_and_shares_a_file(tmp_path):
    path = tmp_path / "t.sqlite3"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE tickets (n TEXT)")  # someone else's table in the same file
    con.commit()
    con.close()
    first = SQLiteKeyStore(path)
    issued = issue_key(first, networks=["127.0.0.1"], permissions=["run_cron"], name="cron")
    first.close()
    second = SQLiteKeyStore(path)
    (key,) = second.list()
    assert key == issued.key
    assert authenticate(second, issued.secret, "127.0.0.1") == issued.key
    second.close()


def test_revoke(store):
    issued = issue_key(store, networks=["127.0.0.1"])
    revoked = store.revoke(issued.key.key_id)
    assert revoked.active is False
    assert store.get(issued.key.key_id).active is False
    with pytest.raises(ApiKeyError):
        authenticate(store, issued.secret, "127.0.0.1")
    with pytest.raises(UnknownKeyError) as info:
        store.revoke("000000000000")
    assert info.value.status == 404


def test_list_is_oldest_first(store):
    ids = [issue_key(store, networks=["127.0.0.1"], name=str(i)).key.key_id for i in range(3)]
    assert sorted(k.key_id for k in store.list()) == sorted(ids)


@pytest.mark.parametrize("bad", ["", "localhost", "10.0.0.5/8", "300.1.1.1", "::1/129"])
def test_bad_networks_are_refused_with_the_value(store, bad):
    with pytest.raises(InvalidValueError) as info:
        issue_key(store, networks=[bad])
    assert info.value.field == "ip"
    assert repr(bad) in info.value.message


def test_no_networks_refused(store):
    with pytest.raises(InvalidValueError, match="at least one"):
        issue_key(store, networks=[])


def test_unknown_permission_refused(store):
    with pytest.raises(InvalidValueError, match="create_tickets"):
        issue_key(store, networks=["127.0.0.1"], permissions=["admin"])


def test_parse_network():
    assert parse_network(" 192.168.1.0/24 ") == ipaddress.ip_network("192.168.1.0/24")
    assert parse_network("::1") == ipaddress.ip_network("::1/128")


def test_to_dict_has_no_digest():
    key = ApiKey(key_id="abc", digest="d" * 64, networks=["127.0.0.1"], permissions=["run_cron"])
    data = key.to_dict()
    assert "digest" not in data
    assert data["networks"] == ["127.0.0.1/32"]


def test_sqlite_store_unusable_path_is_backend_error(tmp_path):
    with pytest.raises(BackendError):
        SQLiteKeyStore(tmp_path / "missing-dir" / "x.sqlite3")


def test_in_memory_duplicate_id_refused():
    key = ApiKey(key_id="abc", digest="d" * 64, networks=["127.0.0.1"], permissions=[])
    store = InMemoryKeyStore([key])
    with pytest.raises(InvalidValueError):
        store.add(key)
