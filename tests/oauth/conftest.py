"""Fixtures of the OAuth2 and Microsoft Graph tests: a real Authlib authorization server on loopback.

``oauth_server`` (session)
    An :class:`OAuthServer` (``tests/oauth/server.py``): token, authorize, device-code and introspection
    endpoints. Tests register their own clients (``add_client``) so they never share state.
``state_dir`` (function)
    A fresh state directory.
``load_helper(name)``
    Loads a helper module of this directory (``server``, ``graph_server``) by path (the tests run with
    ``--import-mode=importlib``, so sibling modules are not importable by name).
"""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
_COUNTER = itertools.count(1)


def load_helper(name: str) -> ModuleType:
    """The module ``tests/oauth/<name>.py``, loaded once."""
    key = f"tm_oauth_tests_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[Any]:
    """The session's OAuth2 authorization server."""
    server = load_helper("server").OAuthServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A fresh state directory (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="tmoauth"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def unique() -> Any:
    """``unique(prefix)`` -> a name no other test uses (client ids, users)."""

    def make(prefix: str = "c") -> str:
        return f"{prefix}{next(_COUNTER)}"

    return make


@pytest.fixture(scope="session")
def graph_server(oauth_server: Any) -> Iterator[Any]:
    """The session's Microsoft Graph-compatible server, validating tokens at ``oauth_server``."""
    server = load_helper("graph_server").GraphServer(oauth_server.introspection_url)
    try:
        yield server
    finally:
        server.close()


GRAPH_SECRET = "graph-app-secret"


@pytest.fixture
def graph_mailbox(oauth_server: Any, graph_server: Any, unique: Any) -> Any:
    """``graph_mailbox(**overrides)`` -> (MailboxConfig dict, address): a fresh mailbox and an app-only client."""

    def make(**overrides: Any) -> tuple[dict[str, Any], str]:
        address = f"{unique('support')}@contoso.test"
        graph_server.add_mailbox(address)
        client_id = unique("graphapp")
        principal = f"app-{client_id}"
        oauth_server.add_client(client_id, GRAPH_SECRET, user=principal)
        graph_server.app_principals.add(principal)
        data: dict[str, Any] = {
            "name": f"g-{address.split('@')[0]}",
            "protocol": "graph",
            "mailbox": address,
            "provider": "generic",
            "client_id": client_id,
            "client_secret": GRAPH_SECRET,
            "token_url": oauth_server.token_url,
            "graph_url": graph_server.url,
            "after": "delete",
            "timeout": 10.0,
        }
        data.update(overrides)
        return data, address

    return make
