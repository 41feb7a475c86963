"""``ticketmail oauth login``: device code and authorization code + PKCE against the Authlib server."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ticketmail.cli import main
from ticketmail.errors import OAuthError
from ticketmail.oauth import TokenManager, settings_for
from ticketmail.oauth.login import DEVICE_CODE_GRANT, authorization_code_login, device_code_login
from ticketmail.sources.config import mailbox_from_dict

pytestmark = [pytest.mark.integration]


def _config(server: Any, cid: str, secret: str | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": f"login-{cid}",
        "protocol": "imap",
        "host": "127.0.0.1",
        "username": "alice",
        "auth": "oauth2",
        "provider": "generic",
        "client_id": cid,
        "token_url": server.token_url,
        "authorization_url": server.url + "/authorize",
        "device_authorization_url": server.url + "/devicecode",
        "scopes": ["mail", "offline_access"],
    }
    if secret:
        data["client_secret"] = secret
    data.update(extra)
    return data


def _manager(server: Any, cid: str, state_dir: Path, secret: str | None = None) -> TokenManager:
    return TokenManager(settings_for(mailbox_from_dict(_config(server, cid, secret)), state_dir=state_dir))


def test_device_code_flow_stores_a_working_refresh_token(oauth_server: Any, state_dir: Path, unique: Any) -> None:
    cid = unique("dev")
    oauth_server.add_client(cid, None, grant_types=(DEVICE_CODE_GRANT, "refresh_token"))  # a public client
    manager = _manager(oauth_server, cid, state_dir)
    out = io.StringIO()
    seen: dict[str, Any] = {}

    def approve(answer: Any) -> None:
        seen.update(answer)
        oauth_server.approve_device(answer["user_code"], "alice")

    device_code_login(manager, out=out, sleep=lambda s: None, on_code=approve)
    text = out.getvalue()
    assert seen["user_code"] in text
    assert seen["verification_uri"] in text
    assert seen["device_code"] not in text  # the device code is a credential: never printed
    assert manager.has_refresh_token()
    token = manager.access_token()
    assert oauth_server.user_of(token.reveal()) == "alice"
    assert token.reveal() not in text


def test_device_code_declined(oauth_server: Any, state_dir: Path, unique: Any) -> None:
    cid = unique("dev")
    oauth_server.add_client(cid, None, grant_types=(DEVICE_CODE_GRANT, "refresh_token"))
    manager = _manager(oauth_server, cid, state_dir)
    with pytest.raises(OAuthError) as info:
        device_code_login(
            manager,
            out=io.StringIO(),
            sleep=lambda s: None,
            on_code=lambda a: oauth_server.approve_device(a["user_code"], "alice", approved=False),
        )
    assert info.value.reason == "consent"
    assert not manager.has_refresh_token()


def test_authorization_code_with_pkce_on_loopback(oauth_server: Any, state_dir: Path, unique: Any) -> None:
    cid = unique("web")
    oauth_server.add_client(cid, "web-secret", grant_types=("authorization_code", "refresh_token"))
    manager = _manager(oauth_server, cid, state_dir, secret="web-secret")
    urls: list[str] = []

    def browser(url: str) -> None:  # the operator's browser: sign in, follow the redirect to the listener
        urls.append(url)
        response = httpx.get(url, follow_redirects=True, timeout=10)
        assert response.status_code == 200
        assert b"Signed in" in response.content

    out = io.StringIO()
    authorization_code_login(manager, out=out, open_browser=False, on_url=browser, timeout=20)
    assert "code_challenge=" in urls[0]
    assert "code_challenge_method=S256" in urls[0]
    assert manager.has_refresh_token()
    assert oauth_server.user_of(manager.access_token().reveal()) == "alice"
    assert "web-secret" not in out.getvalue()


def test_cli_login_status_logout(
    oauth_server: Any, state_dir: Path, unique: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = unique("cli")
    oauth_server.add_client(cid, None, grant_types=(DEVICE_CODE_GRANT, "refresh_token"))
    data = _config(oauth_server, cid)
    del data["device_authorization_url"], data["authorization_url"]  # found in the server's RFC 8414 metadata
    cfg = state_dir / "tickets.toml"
    cfg.write_text(
        '[storage]\nsqlite = "tickets.sqlite3"\n\n[[mailboxes]]\n'
        + "\n".join(f"{k} = {json.dumps(v)}" for k, v in data.items())
        + "\n"
    )
    name = data["name"]

    def approver() -> None:  # the operator, entering the code shown
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            codes = oauth_server.pending_user_codes()
            if codes:
                for code in codes:
                    oauth_server.approve_device(code, "alice")
                return
            time.sleep(0.05)

    thread = threading.Thread(target=approver)
    thread.start()
    code = main(["oauth", "login", "--config", str(cfg), "--mailbox", name, "--timeout", "30"])
    thread.join()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "enter the code" in out
    store = state_dir / "tickets.sqlite3.state" / "oauth" / f"{name}.json"
    assert store.exists()
    assert oct(store.stat().st_mode & 0o777) == "0o600"

    assert main(["oauth", "status", "--config", str(cfg), "--mailbox", name]) == 0
    status = capsys.readouterr().out
    assert "refresh token stored" in status
    stored = json.loads(store.read_text())
    assert stored["refresh_token"] not in status
    assert stored["access_token"] not in status

    assert main(["oauth", "logout", "--config", str(cfg), "--mailbox", name]) == 0
    assert not store.exists()
    capsys.readouterr()
    assert main(["oauth", "login", "--config", str(cfg), "--mailbox", "nope"]) == 2
