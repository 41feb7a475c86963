"""IMAP and POP3 XOAUTH2 end to end: Dovecot's oauth2 passdb introspects the Authlib server's tokens.

A second private Dovecot (the fixture class of ``tests/sources/conftest.py``) is started whose oauth2 passdb
asks *this* OAuth2 server (RFC 7662 introspection) whether a token is active. The mailbox configuration uses
the built-in lifecycle (``provider = "generic"``): the refresh token a login left in the state directory is
spent, rotated and persisted, tokens are refreshed when they expire or the server refuses them, and mail
flows through the real Poller into a real pipeline.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import OAuthError
from ticketmail.oauth import StoredTokens, TokenStore
from ticketmail.pipeline import Pipeline
from ticketmail.sources.check import check
from ticketmail.sources.poller import Poller

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "dovecot-client-secret"


def _dovecot_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "tm_oauth_dovecot_fixture", ROOT / "tests" / "sources" / "conftest.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dovecot(oauth_server: Any) -> Iterator[Any]:
    server = _dovecot_module().Dovecot(introspection_url=oauth_server.introspection_url)
    try:
        yield server
    finally:
        server.stop()


def _message(i: int) -> bytes:
    return (
        f"From: Customer {i} <c{i}@example.org>\r\nTo: support@example.test\r\nSubject: Help {i}\r\n"
        f"Message-ID: <x{i}.{time.time_ns()}@example.org>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"Body {i}\r\n"
    ).encode()


def _config(dovecot: Any, oauth_server: Any, user: str, client_id: str, protocol: str, **extra: Any) -> Any:
    return dovecot.config(
        user,
        protocol=protocol,
        auth="oauth2",
        provider="generic",
        client_id=client_id,
        client_secret=SECRET,
        token_url=oauth_server.token_url,
        after="delete",
        **extra,
    )


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_xoauth2_with_refresh_and_rotation(
    dovecot: Any, oauth_server: Any, state_dir: Path, unique: Any, protocol: str
) -> None:
    user = dovecot.new_user("ox")
    cid = unique("dc")
    oauth_server.add_client(cid, SECRET)
    config = _config(dovecot, oauth_server, user, cid, protocol)
    store = TokenStore(state_dir / "oauth" / f"{config.name}.json")
    first_refresh = oauth_server.issue_refresh_token(cid, user)
    store.save(StoredTokens(refresh_token=first_refresh, client_id=cid))
    reused = oauth_server.reused_refresh_tokens

    backend = InMemoryBackend()
    poller = Poller([config], Pipeline(backend), state=state_dir)
    dovecot.append_many(user, [_message(i) for i in range(3)])
    run = poller.poll_once().run(config.name)
    assert run.status == "ok", run.error
    assert run.acknowledged == 3
    assert dovecot.state(user) == []
    after_first = store.load()
    assert after_first is not None
    assert after_first.refresh_token != first_refresh  # rotated and persisted
    assert oauth_server.user_of(after_first.access_token or "") == user

    # The server revokes the access token early (the client still thinks it is valid): the login fails
    # once, the lifecycle forgets the token, and the next visit refreshes with the rotated refresh token.
    oauth_server.expire_access_tokens()
    dovecot.append_many(user, [_message(10)])
    failed = poller.poll_once().run(config.name)
    assert failed.status == "error"
    assert failed.error is not None
    assert failed.error.to_dict()["stage"] == "auth"
    assert (after_first.access_token or "") not in str(failed.error.to_dict())
    again = poller.poll_once().run(config.name)
    assert again.status == "ok", again.error
    assert again.acknowledged == 1
    latest = store.load()
    assert latest is not None
    assert latest.refresh_token not in (first_refresh, after_first.refresh_token)
    assert oauth_server.reused_refresh_tokens == reused  # never spent a dead refresh token
    assert len(backend.list_tickets()) == 4


def test_check_reports_oauth_stage_and_xoauth2_refusal(
    dovecot: Any, oauth_server: Any, state_dir: Path, unique: Any
) -> None:
    user = dovecot.new_user("oc")
    cid = unique("dk")
    oauth_server.add_client(cid, SECRET)
    config = _config(dovecot, oauth_server, user, cid, "imap", grant="refresh_token")
    # nothing stored yet: the oauth stage says to log in
    result = check(config, state_dir=state_dir)
    assert not result.ok
    assert result.stage == "oauth"
    assert "ticketmail oauth login" in result.message
    # a stored, working refresh token: ok
    store = TokenStore(state_dir / "oauth" / f"{config.name}.json")
    store.save(StoredTokens(refresh_token=oauth_server.issue_refresh_token(cid, user), client_id=cid))
    result = check(config, state_dir=state_dir)
    assert result.ok, result.message
    # a revoked refresh token: invalid_grant -> log in again
    oauth_server.revoke_all(user)
    result = check(config, state_dir=state_dir)
    assert not result.ok
    assert result.stage == "oauth"
    assert "invalid_grant" in result.message
    assert "oauth login" in result.message
    # a token issued for another user: the server's XOAUTH2 refusal is the auth stage
    store.save(StoredTokens(refresh_token=oauth_server.issue_refresh_token(cid, "someone-else"), client_id=cid))
    result = check(config, state_dir=state_dir)
    assert not result.ok
    assert result.stage == "auth"
    assert "XOAUTH2" in result.message or "token" in result.message


def test_wrong_secret_is_invalid_client(dovecot: Any, oauth_server: Any, state_dir: Path, unique: Any) -> None:
    user = dovecot.new_user("os")
    cid = unique("dw")
    oauth_server.add_client(cid, "the-real-secret")
    config = _config(dovecot, oauth_server, user, cid, "imap")
    TokenStore(state_dir / "oauth" / f"{config.name}.json").save(
        StoredTokens(refresh_token=oauth_server.issue_refresh_token(cid, user), client_id=cid)
    )
    poller = Poller([config], Pipeline(InMemoryBackend()), state=state_dir)
    run = poller.poll_once().run(config.name)
    assert run.status == "error"
    assert isinstance(run.error, OAuthError)
    assert run.error.reason == "invalid_client"
    assert SECRET not in run.error.message
