"""Both key stores driven by one state machine: they must agree with each other and with a model."""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from ticketmail.api.keys import (
    PERMISSIONS,
    ApiKeyError,
    InMemoryKeyStore,
    SQLiteKeyStore,
    UnknownKeyError,
    authenticate,
    issue_key,
)

ADDRESSES = ["127.0.0.1", "10.1.2.3", "192.0.2.9", "::1", "2001:db8::5", "::ffff:10.9.9.9"]
NETWORKS = ["127.0.0.1", "10.0.0.0/8", "192.0.2.0/24", "::1", "2001:db8::/32"]


class KeyStores(RuleBasedStateMachine):
    secrets = Bundle("secrets")

    def __init__(self) -> None:
        super().__init__()
        self.memory = InMemoryKeyStore()
        self.sqlite = SQLiteKeyStore(Path(tempfile.mkdtemp()) / "keys.sqlite3")
        self.model: dict[str, tuple[frozenset[str], bool, tuple[str, ...]]] = {}

    def teardown(self) -> None:
        self.sqlite.close()

    @rule(
        target=secrets,
        networks=st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=3, unique=True),
        permissions=st.sets(st.sampled_from(PERMISSIONS)),
    )
    def add(self, networks, permissions):
        issued = issue_key(self.memory, networks=networks, permissions=permissions)
        self.sqlite.add(issued.key)
        self.model[issued.key.key_id] = (frozenset(permissions), True, tuple(networks))
        return issued.secret

    @precondition(lambda self: self.model)
    @rule(secret=secrets)
    def revoke(self, secret):
        key_id = secret.split("_")[1]
        assert self.memory.revoke(key_id) == self.sqlite.revoke(key_id)
        perms, _, nets = self.model[key_id]
        self.model[key_id] = (perms, False, nets)

    @rule(key_id=st.text(alphabet="0123456789abcdef", min_size=12, max_size=12))
    def revoke_unknown(self, key_id):
        if key_id in self.model:
            return
        for store in (self.memory, self.sqlite):
            try:
                store.revoke(key_id)
            except UnknownKeyError:
                pass
            else:
                raise AssertionError("revoking an unknown id must fail")

    @rule(secret=st.one_of(secrets, st.text(max_size=60)), address=st.sampled_from(ADDRESSES), tamper=st.booleans())
    def authenticate_agrees(self, secret, address, tamper):
        if tamper and secret:
            secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        answers = []
        messages = set()
        for store in (self.memory, self.sqlite):
            try:
                answers.append(authenticate(store, secret, address).key_id)
            except ApiKeyError as exc:
                messages.add(str(exc))
                answers.append(None)
        assert messages <= {"Unknown remote host or invalid API key"}
        assert answers[0] == answers[1]
        if answers[0] is not None:
            _, active, nets = self.model[answers[0]]
            assert active
            assert not tamper
            addr = ipaddress.ip_address(address)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
            assert any(addr.version == n.version and addr in n for n in map(ipaddress.ip_network, nets))

    @invariant()
    def listings_agree(self):
        mem = {k.key_id: k for k in self.memory.list()}
        sql = {k.key_id: k for k in self.sqlite.list()}
        assert mem == sql
        assert {k: (v.permissions, v.active) for k, v in mem.items()} == {
            k: (perms, active) for k, (perms, active, _) in self.model.items()
        }


TestKeyStores = KeyStores.TestCase
TestKeyStores.settings = settings(max_examples=30, stateful_step_count=20, deadline=None)
