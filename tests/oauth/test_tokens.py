"""The OAuth2 token lifecycle against a real (Authlib) authorization server on loopback."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ticketmail.errors import ConfigError, OAuthError
from ticketmail.oauth import StoredTokens, TokenManager, TokenStore, bind_state_dir, settings_for, tokens_for
from ticketmail.sources.config import MailboxConfig, mailbox_from_dict

SECRET = "cl1ent-s3cret-VALUE"


def imap_config(server: Any, client_id: str, **extra: Any) -> MailboxConfig:
    data: dict[str, Any] = {
        "name": f"mb-{client_id}",
        "protocol": "imap",
        "host": "127.0.0.1",
        "username": "alice",
        "auth": "oauth2",
        "provider": "generic",
        "client_id": client_id,
        "token_url": server.token_url,
    }
    data.update(extra)
    return mailbox_from_dict(data)


def manager(config: MailboxConfig, state_dir: Path | None) -> TokenManager:
    return TokenManager(settings_for(config, state_dir=state_dir))


def seed_login(server: Any, mgr: TokenManager, client_id: str, user: str = "alice") -> str:
    refresh = server.issue_refresh_token(client_id, user)
    assert mgr.store is not None
    mgr.store.save(StoredTokens(refresh_token=refresh, client_id=client_id))
    return str(refresh)


def test_refresh_token_grant_rotates_and_persists_before_use(oauth_server: Any, state_dir: Path, unique: Any) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET)
    os.environ["TM_TEST_SECRET_" + cid] = SECRET
    config = imap_config(oauth_server, cid, client_secret_env="TM_TEST_SECRET_" + cid)
    mgr = manager(config, state_dir)
    first_refresh = seed_login(oauth_server, mgr, cid)
    reused = oauth_server.reused_refresh_tokens

    token = mgr.access_token()
    assert oauth_server.user_of(token.reveal()) == "alice"
    stored = mgr.store.load() if mgr.store else None
    assert stored is not None
    assert stored.refresh_token
    assert stored.refresh_token != first_refresh  # rotated and kept
    assert stored.access_token == token.reveal()
    path = state_dir / "oauth" / f"{config.name}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]

    # cached: no second token request while it is fresh
    requests = mgr.requests
    assert mgr.access_token() == token
    assert mgr.requests == requests

    # a second process (a new manager on the same file) reuses the stored access token
    other = manager(config, state_dir)
    assert other.access_token() == token
    assert other.requests == 0

    # the rotated refresh token works, the old one is dead
    mgr.invalidate()
    second = mgr.access_token()
    assert second != token
    assert oauth_server.user_of(second.reveal()) == "alice"
    assert oauth_server.reused_refresh_tokens == reused


def test_expired_access_token_is_refreshed_shortly_before_expiry(
    oauth_server: Any, state_dir: Path, unique: Any
) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET)
    now = [1_000_000.0]
    config = imap_config(oauth_server, cid, client_secret=SECRET)
    mgr = TokenManager(settings_for(config, state_dir=state_dir), clock=lambda: now[0])
    seed_login(oauth_server, mgr, cid)
    first = mgr.access_token()
    now[0] += 3600 - 61  # more than the margin before expiry: still cached
    assert mgr.access_token() == first
    now[0] += 2  # within 60 s of expiry: refreshed
    assert mgr.access_token() != first
    assert mgr.requests == 2


def test_client_credentials_needs_no_store(oauth_server: Any, unique: Any) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET, user="support@example.test")
    config = imap_config(oauth_server, cid, client_secret=SECRET, scopes=["mail"])
    mgr = manager(config, None)
    assert mgr.grant() == "client_credentials"
    token = mgr.access_token()
    assert oauth_server.user_of(token.reveal()) == "support@example.test"
    assert mgr.access_token() == token
    assert mgr.requests == 1


def test_config_access_token_uses_the_builtin_lifecycle(oauth_server: Any, unique: Any) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET, user="bob")
    config = imap_config(oauth_server, cid, client_secret=SECRET, grant="client_credentials")
    token = config.access_token()
    assert oauth_server.user_of(token.reveal()) == "bob"
    assert tokens_for(config) is tokens_for(config)


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("wrong_secret", "invalid_client"),
        ("unknown_client", "invalid_client"),
        ("revoked", "invalid_grant"),
        ("no_login", "no_token"),
        ("unreachable", "unreachable"),
        ("down", "unreachable"),
    ],
)
def test_failures_name_their_reason_and_never_a_secret(
    oauth_server: Any, state_dir: Path, unique: Any, setup: str, reason: str
) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET)
    secret = "WRONG-" + SECRET if setup == "wrong_secret" else SECRET
    extra: dict[str, Any] = {"client_secret": secret, "grant": "refresh_token"}
    if setup == "unknown_client":
        cid = unique("ghost")
    if setup == "unreachable":
        extra["token_url"] = "http://127.0.0.1:9/token"
    config = imap_config(oauth_server, cid, **extra)
    mgr = manager(config, state_dir)
    refresh = ""
    if setup != "no_login":
        refresh = seed_login(oauth_server, mgr, cid)
    if setup == "revoked":
        oauth_server.revoke_all("alice")
    if setup == "down":
        oauth_server.down = True
    try:
        with pytest.raises(OAuthError) as info:
            mgr.access_token()
    finally:
        oauth_server.down = False
    err = info.value
    assert err.reason == reason
    assert err.stage == "oauth"
    text = str(err) + repr(err) + json.dumps(err.to_dict())
    assert SECRET not in text
    assert not refresh or refresh not in text
    if reason == "invalid_grant":
        assert "ticketmail oauth login" in err.message
    if setup != "no_login" and mgr.store is not None:  # a failed refresh never destroys the stored token
        stored = mgr.store.load()
        assert stored is not None
        assert stored.refresh_token == refresh


def test_reprs_mask_tokens(oauth_server: Any, state_dir: Path, unique: Any) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET)
    config = imap_config(oauth_server, cid, client_secret=SECRET)
    mgr = manager(config, state_dir)
    refresh = seed_login(oauth_server, mgr, cid)
    token = mgr.access_token().reveal()
    assert mgr.store is not None
    stored = mgr.store.load()
    texts = [repr(config), str(config), repr(mgr), repr(mgr.store), repr(stored), repr(mgr.settings)]
    for text in texts:
        assert SECRET not in text
        assert token not in text
        assert refresh not in text


def test_missing_secret_variable_is_a_config_error(oauth_server: Any, unique: Any) -> None:
    cid = unique()
    config = imap_config(oauth_server, cid, client_secret_env="TM_SURELY_UNSET_VARIABLE", grant="client_credentials")
    with pytest.raises(ConfigError, match="TM_SURELY_UNSET_VARIABLE"):
        manager(config, None).access_token()


def test_config_validation() -> None:
    base = {"name": "x", "protocol": "imap", "host": "h", "username": "u", "auth": "oauth2"}
    with pytest.raises(ConfigError, match="client_id"):
        mailbox_from_dict({**base, "provider": "microsoft"})
    with pytest.raises(ConfigError, match="token_url"):
        mailbox_from_dict({**base, "provider": "generic", "client_id": "c"})
    with pytest.raises(ConfigError, match="provider"):
        mailbox_from_dict({**base, "provider": "yahoo", "client_id": "c"})
    with pytest.raises(ConfigError, match="auth"):
        mailbox_from_dict({**base, "auth": "password", "password": "p", "provider": "microsoft", "client_id": "c"})
    ms = mailbox_from_dict({**base, "provider": "microsoft", "client_id": "c", "tenant": "contoso.com"})
    s = settings_for(ms)
    assert s.token_url == "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
    assert s.device_authorization_url == "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/devicecode"
    assert s.scopes_for("refresh_token") == ("https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access")
    assert s.scopes_for("client_credentials") == ("https://outlook.office365.com/.default",)
    google = mailbox_from_dict({**base, "provider": "google", "client_id": "c", "scopes": "https://mail.google.com/"})
    assert settings_for(google).scopes == ("https://mail.google.com/",)


def test_bind_state_dir_points_the_provider_at_the_state_directory(
    oauth_server: Any, state_dir: Path, unique: Any
) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET)
    config = imap_config(oauth_server, cid, client_secret=SECRET)
    bound = bind_state_dir(config, state_dir)
    assert bound.token_provider is not None
    seed_login(oauth_server, manager(config, state_dir), cid)
    token = bound.access_token()
    assert oauth_server.user_of(token.reveal()) == "alice"


def test_concurrent_threads_refresh_once(oauth_server: Any, state_dir: Path, unique: Any) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET)
    config = imap_config(oauth_server, cid, client_secret=SECRET)
    seed_login(oauth_server, manager(config, state_dir), cid)
    reused = oauth_server.reused_refresh_tokens
    managers = [manager(config, state_dir) for _ in range(6)]  # six "workers" sharing one store
    results: list[str] = []
    errors: list[BaseException] = []

    def work(m: TokenManager) -> None:
        try:
            results.append(m.access_token().reveal())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(set(results)) == 1
    assert sum(m.requests for m in managers) == 1
    assert oauth_server.reused_refresh_tokens == reused


def _worker(token_url: str, cid: str, store: str, rounds: int, out: Any) -> None:
    config = mailbox_from_dict(
        {
            "name": "shared", "protocol": "imap", "host": "127.0.0.1", "username": "alice", "auth": "oauth2",
            "provider": "generic", "client_id": cid, "token_url": token_url, "client_secret": SECRET,
            "token_store": store,
        }
    )  # fmt: skip
    got = []
    for _ in range(rounds):
        m = TokenManager(settings_for(config))
        m.invalidate()
        stored = m.store.load() if m.store else None
        if stored is not None and stored.access_token:
            m.invalidate(stored.access_token)  # force a refresh in each round
        try:
            got.append(m.access_token().reveal())
        except OAuthError as exc:
            got.append("ERROR " + exc.reason)
    out.put(got)


def test_concurrent_processes_never_race_into_invalid_grant(oauth_server: Any, state_dir: Path, unique: Any) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET)
    store = str(state_dir / "shared.json")
    TokenStore(store).save(StoredTokens(refresh_token=oauth_server.issue_refresh_token(cid, "alice"), client_id=cid))
    reused = oauth_server.reused_refresh_tokens
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(oauth_server.token_url, cid, store, 5, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    flat = [t for r in results for t in r]
    assert not [t for t in flat if t.startswith("ERROR")]
    assert oauth_server.reused_refresh_tokens == reused
    final = TokenStore(store).load()
    assert final is not None
    assert final.access_token in flat


def test_store_write_is_atomic_and_private(state_dir: Path) -> None:
    store = TokenStore(state_dir / "sub" / "t.json")
    store.save(StoredTokens(refresh_token="r1", access_token="a1", expires_at=time.time() + 100))
    store.save(StoredTokens(refresh_token="r2", access_token="a2", expires_at=time.time() + 100))
    loaded = store.load()
    assert loaded is not None
    assert loaded.refresh_token == "r2"
    assert stat.S_IMODE((state_dir / "sub").stat().st_mode) == 0o700
    assert sorted(p.name for p in (state_dir / "sub").iterdir()) == ["t.json"]
    (state_dir / "sub" / "t.json").write_text("{not json")
    with pytest.raises(OAuthError) as info:
        store.load()
    assert info.value.reason == "store"


def test_google_service_account_with_domain_wide_delegation(oauth_server: Any, state_dir: Path, unique: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    email = f"{unique('sa')}@project.iam.gserviceaccount.com"
    oauth_server.add_service_account(email, public_pem, "example.test")
    key_file = state_dir / "sa.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": email,
                "private_key": private_pem,
                "private_key_id": "k1",
                "token_uri": oauth_server.token_url,
            }
        )
    )
    config = mailbox_from_dict(
        {
            "name": f"g-{email[:8]}",
            "protocol": "imap",
            "host": "imap.gmail.com",
            "username": "bob@example.test",
            "auth": "oauth2",
            "provider": "google",
            "service_account_file": str(key_file),
            "token_url": oauth_server.token_url,
        }
    )
    mgr = manager(config, state_dir)
    assert mgr.grant() == "service_account"
    token = mgr.access_token()
    assert oauth_server.user_of(token.reveal()) == "bob@example.test"  # acting for the mailbox user
    text = repr(mgr) + repr(mgr.settings) + repr(config)
    assert "PRIVATE KEY" not in text
    # a user outside the delegated domain is refused: invalid_grant names the remedy
    other = mailbox_from_dict({**config_dict(config), "username": "eve@elsewhere.test", "name": "g-other"})
    with pytest.raises(OAuthError) as info:
        manager(other, state_dir).access_token()
    assert info.value.reason in ("invalid_grant", "consent")
    assert "PRIVATE KEY" not in info.value.message


def config_dict(config: MailboxConfig) -> dict[str, Any]:
    keys = ("protocol", "host", "username", "auth", "provider", "service_account_file", "token_url")
    return {k: getattr(config, k) for k in keys}


def test_generic_server_without_basic_auth_gets_the_secret_in_the_form(oauth_server: Any, unique: Any) -> None:
    cid = unique()
    oauth_server.add_client(cid, SECRET, user="carol", auth_methods=("client_secret_post",))
    config = imap_config(oauth_server, cid, client_secret=SECRET, grant="client_credentials")
    mgr = manager(config, None)
    before = oauth_server.token_requests
    assert oauth_server.user_of(mgr.access_token().reveal()) == "carol"
    assert oauth_server.token_requests == before + 2  # Basic first (RFC 6749 2.3.1), then the form
    mgr.invalidate()
    mgr.access_token()
    assert oauth_server.token_requests == before + 3  # the method that worked is kept
