"""An unknown key id costs the same work as a known id with a wrong secret; secrets never leak by accident.

Counted, not timed: how many hashes, digest comparisons, address checks and row decodings each failure
makes, for the in-memory and the SQLite key stores.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from ticketmail.api import keys as keys_module
from ticketmail.api.keys import (
    ApiKeyError,
    ApiKeyStore,
    InMemoryKeyStore,
    IssuedKey,
    SQLiteKeyStore,
    authenticate,
    issue_key,
)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest) -> Iterator[ApiKeyStore]:
    if request.param == "memory":
        yield InMemoryKeyStore()
        return
    sqlite = SQLiteKeyStore(Path(tempfile.mkdtemp(prefix="tm-keys-")) / "keys.sqlite3")
    yield sqlite
    sqlite.close()


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    seen: Counter[str] = Counter()

    def counted(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(keys_module, "hash_key", counted("hash", keys_module.hash_key))
    monkeypatch.setattr(keys_module.hmac, "compare_digest", counted("compare", keys_module.hmac.compare_digest))
    monkeypatch.setattr(keys_module.ApiKey, "allows_address", counted("address", keys_module.ApiKey.allows_address))
    monkeypatch.setattr(SQLiteKeyStore, "_row", staticmethod(counted("row", SQLiteKeyStore._row)))
    return seen


def _work(counts: Counter[str], store: ApiKeyStore, presented: str, remote: str = "127.0.0.1") -> Counter[str]:
    counts.clear()
    with pytest.raises(ApiKeyError) as info:
        authenticate(store, presented, remote)
    assert info.value.message == "Unknown remote host or invalid API key"
    return Counter(counts)


def test_unknown_id_costs_what_a_wrong_secret_costs(store: ApiKeyStore, counts: Counter[str]) -> None:
    issued = issue_key(store, networks=["127.0.0.1"])
    key_id = issued.key.key_id
    wrong_secret = f"tm_{key_id}_{'A' * 43}"
    unknown_id = f"tm_{'f' * 12 if key_id != 'f' * 12 else 'e' * 12}_{'A' * 43}"
    known = _work(counts, store, wrong_secret)
    unknown = _work(counts, store, unknown_id)
    assert known == unknown
    assert known["hash"] == 1
    assert known["compare"] == 1
    assert known["address"] == 1
    # A wrong address with the right secret, and no key at all, do the same work too.
    assert _work(counts, store, issued.secret, remote="10.9.9.9") == known
    counts.clear()
    assert authenticate(store, issued.secret, "127.0.0.1") == issued.key


def test_malformed_and_missing_keys_still_hash_once(store: ApiKeyStore, counts: Counter[str]) -> None:
    for presented in ("", "nonsense", "tm_xyz_short"):
        work = _work(counts, store, presented)
        assert (work["hash"], work["compare"], work["address"]) == (1, 1, 1)


def test_secrets_stay_out_of_repr_and_asdict(store: ApiKeyStore) -> None:
    issued = issue_key(store, networks=["127.0.0.1"], name="web form")
    assert issued.secret not in repr(issued)
    assert issued.key.digest not in repr(issued.key)
    with pytest.raises(attrs.exceptions.NotAnAttrsClassError):
        attrs.asdict(issued)  # type: ignore[arg-type]
    record = attrs.asdict(issued.key)
    assert issued.secret not in str(record)
    assert issued.secret not in str(issued.key.to_dict())
    assert isinstance(issued, IssuedKey)
    assert issued == IssuedKey(issued.key, issued.secret)
    assert issued != IssuedKey(issued.key, issued.secret + "x")
