"""Token endpoint answers -> OAuthError reasons (no server needed), and what never leaks into messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketmail.oauth import StoredTokens, describe_token_error


@pytest.mark.parametrize(
    ("error", "description", "reason"),
    [
        ("invalid_client", "AADSTS7000215: Invalid client secret provided.", "invalid_client"),
        ("unauthorized_client", "AADSTS700016: Application not found in the directory", "invalid_client"),
        ("invalid_grant", "AADSTS70008: The refresh token has expired due to inactivity.", "invalid_grant"),
        ("invalid_grant", "AADSTS65001: The user or administrator has not consented to use the application", "consent"),
        ("invalid_grant", "Token has been expired or revoked.", "invalid_grant"),  # Google
        ("invalid_scope", "AADSTS70011: The provided value for the input parameter 'scope' is not valid.", "consent"),
        ("access_denied", None, "consent"),
        ("temporarily_unavailable", None, "unreachable"),
        ("weird_error", None, "server"),
    ],
)
def test_reasons(error: str, description: str | None, reason: str) -> None:
    err = describe_token_error(error, description, mailbox="support")
    assert err.reason == reason
    assert err.stage == "oauth"
    assert err.to_dict()["reason"] == reason
    if reason == "invalid_grant":
        assert "ticketmail oauth login --mailbox support" in err.message


@given(st.text(min_size=8, max_size=200).filter(lambda t: "AADSTS" not in t and t.strip() == t))
def test_the_endpoint_description_is_never_quoted(description: str) -> None:
    for error in ("invalid_client", "invalid_grant", "invalid_scope", "server_error", "x"):
        # Text that the fixed wording itself contains ("client_s" in "client_secret_file") proves nothing.
        if description in describe_token_error(error, None, mailbox="m").message:
            continue
        assert description not in describe_token_error(error, description, mailbox="m").message


@given(
    st.builds(
        StoredTokens,
        refresh_token=st.one_of(st.none(), st.text(min_size=1)),
        access_token=st.one_of(st.none(), st.text(min_size=1)),
        expires_at=st.floats(min_value=0, max_value=4e9),
        obtained_at=st.floats(min_value=0, max_value=4e9),
        scope=st.one_of(st.none(), st.text(min_size=1)),
    )
)
def test_stored_tokens_round_trip_and_mask(tokens: StoredTokens) -> None:
    assert StoredTokens.from_json(tokens.to_json()) == tokens
    text = repr(tokens)
    for name in ("refresh_token", "access_token"):
        value = getattr(tokens, name)
        assert f"{name}={'None' if value is None else chr(39) + '********' + chr(39)}" in text


def test_core_stays_light_and_a_missing_extra_is_named() -> None:
    import subprocess
    import sys

    code = r"""
import sys
import ticketmail.oauth, ticketmail.sources.graph, ticketmail.cli.oauth, ticketmail.sources.poller
assert "authlib" not in sys.modules and "httpx" not in sys.modules, sorted(m for m in sys.modules if "http" in m)
sys.modules["httpx"] = None  # as if the extra were not installed
sys.modules["authlib"] = None
from ticketmail.errors import ConfigError, OAuthError
from ticketmail.sources.config import mailbox_from_dict
cfg = mailbox_from_dict({"name": "m", "protocol": "imap", "host": "h", "username": "u", "auth": "oauth2",
                         "provider": "generic", "client_id": "c", "client_secret": "s", "token_url": "https://t/"})
try:
    cfg.access_token()
except OAuthError as exc:
    assert exc.reason == "missing_extra" and "ticketmail[oauth]" in exc.message, exc.message
else:
    raise SystemExit("no error")
from ticketmail.sources.graph import GraphSource
g = mailbox_from_dict({"name": "g", "protocol": "graph", "mailbox": "a@b.c", "provider": "generic",
                       "client_id": "c", "client_secret": "s", "token_url": "https://t/"})
try:
    with GraphSource(g).session():
        pass
except ConfigError as exc:
    assert "ticketmail[oauth]" in exc.message, exc.message
else:
    raise SystemExit("no error")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_oauth_errors_are_retryable_only_for_reasons_a_retry_can_fix() -> None:
    from ticketmail.errors import PERMANENT_OAUTH_REASONS, OAuthError

    for reason in ("unreachable", "server", "store", "something new"):
        assert OAuthError("x", reason=reason).retryable, reason
    for reason in sorted(PERMANENT_OAUTH_REASONS):
        assert not OAuthError("x", reason=reason).retryable, reason
