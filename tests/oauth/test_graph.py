"""The Microsoft Graph source against a Graph-compatible HTTP server and the Authlib OAuth2 server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ticketmail.backends.memory import InMemoryBackend
from ticketmail.errors import SourceError
from ticketmail.model import Provenance
from ticketmail.pipeline import Pipeline
from ticketmail.sources.check import check
from ticketmail.sources.config import mailbox_from_dict
from ticketmail.sources.graph import GraphSource
from ticketmail.sources.poller import Poller

pytestmark = [pytest.mark.integration]


def message(i: int, size: int = 0, tag: str = "") -> bytes:
    body = f"Body {i}\r\n" + ("x" * 70 + "\r\n") * (size // 72)
    return (
        f"From: Customer {i} <c{i}@example.org>\r\nTo: support@contoso.test\r\nSubject: Graph case {i}\r\n"
        f"Message-ID: <g{i}.{tag}{time.time_ns()}@example.org>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


def poll(config: Any, state_dir: Path, backend: InMemoryBackend | None = None) -> tuple[Any, InMemoryBackend]:
    backend = backend or InMemoryBackend()
    poller = Poller([config], Pipeline(backend), state=state_dir)
    return poller.poll_once().run(config.name), backend


def test_delta_paging_delete_and_incremental_rounds(graph_server: Any, graph_mailbox: Any, state_dir: Path) -> None:
    data, address = graph_mailbox(max_per_run=1000)
    config = mailbox_from_dict(data)
    for i in range(120):  # three pages of 50
        graph_server.deliver(address, message(i))
    run, backend = poll(config, state_dir)
    assert run.status == "ok", run.error
    assert run.acknowledged == 120
    assert len(backend.list_tickets()) == 120
    assert graph_server.messages(address) == []
    assert len(graph_server.messages(address, "deleteditems")) == 120  # DELETE goes to Deleted Items
    state = json.loads((state_dir / f"graph-{config.name}.json").read_text())
    assert "$deltatoken=" in state["delta_link"]
    assert graph_server.without_immutable == 0

    downloads = graph_server.value_requests
    run, _ = poll(config, state_dir, backend)
    assert run.status == "ok"
    assert run.fetched == 0
    assert graph_server.value_requests == downloads  # nothing downloaded again

    for i in range(200, 203):
        graph_server.deliver(address, message(i))
    run, _ = poll(config, state_dir, backend)
    assert run.acknowledged == 3
    assert graph_server.value_requests == downloads + 3
    assert len(backend.list_tickets()) == 123


def test_after_seen_keeps_mail_and_never_duplicates(graph_server: Any, graph_mailbox: Any, state_dir: Path) -> None:
    data, address = graph_mailbox(after="seen")
    config = mailbox_from_dict(data)
    for i in range(7):
        graph_server.deliver(address, message(i))
    run, backend = poll(config, state_dir)
    assert run.acknowledged == 7
    kept = graph_server.messages(address)
    assert len(kept) == 7
    assert all(m.is_read for m in kept)
    # the isRead changes show up in the next delta round: nothing is ingested twice
    run, _ = poll(config, state_dir, backend)
    assert run.fetched == 0
    # an expired delta token means a full round: the ledger still says "already done"
    graph_server.expire_delta_tokens()
    run, _ = poll(config, state_dir, backend)
    assert run.status == "ok", run.error
    assert run.fetched == 0
    assert len(backend.list_tickets()) == 7


@pytest.mark.parametrize("target", ["archive", "Processed", "Created"])
def test_after_move(graph_server: Any, graph_mailbox: Any, state_dir: Path, target: str) -> None:
    data, address = graph_mailbox(after=f"move:{target}")
    if target == "Processed":
        graph_server.add_folder(address, "Processed")  # "Created" does not exist: the source creates it
    config = mailbox_from_dict(data)
    ids = [graph_server.deliver(address, message(i)) for i in range(4)]
    run, _ = poll(config, state_dir)
    assert run.acknowledged == 4
    assert graph_server.messages(address) == []
    moved = graph_server.messages(address, target)
    assert sorted(m.id for m in moved) == sorted(ids)  # immutable ids survive the move


def test_nested_folder_by_display_name_path(graph_server: Any, graph_mailbox: Any, state_dir: Path) -> None:
    data, address = graph_mailbox(folder="Inbox/Support", after="move:Inbox/Support/Done")
    graph_server.add_folder(address, "Support", parent="inbox")
    graph_server.deliver(address, message(1), folder="Support")
    graph_server.deliver(address, message(2))  # in the Inbox itself: not ours
    run, _ = poll(mailbox_from_dict(data), state_dir)
    assert run.acknowledged == 1
    assert len(graph_server.messages(address)) == 1
    assert len(graph_server.messages(address, "Done")) == 1  # created under Inbox/Support


def test_commit_without_acknowledgement_is_healed_without_download(
    graph_server: Any, graph_mailbox: Any, state_dir: Path
) -> None:
    data, address = graph_mailbox()
    config = mailbox_from_dict(data)
    for i in range(5):
        graph_server.deliver(address, message(i))
    backend = InMemoryBackend()
    pipeline = Pipeline(backend)
    source = GraphSource(config, skip=pipeline.is_processed, state_dir=state_dir)
    with source.session() as session:  # a "crash" after commit, before acknowledge
        for item in session.fetch():
            pipeline.process_email(item.data, provenance=item.provenance, context=config.context())
    assert len(graph_server.messages(address)) == 5
    assert not (state_dir / f"graph-{config.name}.json").exists()  # the round was not acknowledged
    downloads = graph_server.value_requests
    with source.session() as session:
        assert list(session.fetch()) == []
    assert graph_server.value_requests == downloads
    assert graph_server.messages(address) == []
    assert len(backend.list_tickets()) == 5


def test_throttling_honours_retry_after(graph_server: Any, graph_mailbox: Any, state_dir: Path) -> None:
    data, address = graph_mailbox()
    config = mailbox_from_dict(data)
    graph_server.deliver(address, message(1))
    slept: list[float] = []
    source = GraphSource(config, state_dir=state_dir, sleep=slept.append)
    graph_server.throttle(2, retry_after=3)
    graph_server.throttle(1, status=503, retry_after=1)
    with source.session() as session:
        items = list(session.fetch())
        for item in items:
            session.acknowledge(item)
    assert len(items) == 1
    assert slept == [3.0, 3.0, 1.0]
    # throttled without end: a bounded number of attempts, then a "throttled" error
    graph_server.throttle(50, retry_after=120)
    slept.clear()
    with pytest.raises(SourceError) as info, source.session() as session:
        list(session.fetch())
    assert info.value.stage == "throttled"
    assert len(slept) == 5
    assert max(slept) <= 60.0
    graph_server._throttle.clear()


def test_expired_access_token_is_refreshed_on_401(
    oauth_server: Any, graph_server: Any, graph_mailbox: Any, state_dir: Path
) -> None:
    data, address = graph_mailbox()
    config = mailbox_from_dict(data)
    graph_server.deliver(address, message(1))
    run, backend = poll(config, state_dir)
    assert run.acknowledged == 1
    oauth_server.expire_access_tokens()
    graph_server._token_cache.clear()
    graph_server.deliver(address, message(2))
    run, _ = poll(config, state_dir, backend)
    assert run.status == "ok", run.error
    assert run.acknowledged == 1


@pytest.mark.parametrize("policy", ["skip", "headers"])
def test_oversize(graph_server: Any, graph_mailbox: Any, state_dir: Path, policy: str) -> None:
    data, address = graph_mailbox(max_message_size=20_000, oversize=policy)
    config = mailbox_from_dict(data)
    graph_server.deliver(address, message(1, size=60_000))
    graph_server.deliver(address, message(2))
    run, backend = poll(config, state_dir)
    assert run.status == "ok", run.error
    if policy == "skip":
        assert run.oversized == 1
        assert run.acknowledged == 1
        assert len(graph_server.messages(address)) == 1  # left in the folder
    else:
        assert run.acknowledged == 2
        tickets = backend.list_tickets()
        assert len(tickets) == 2


def test_failed_messages_are_retried_then_quarantined(graph_server: Any, graph_mailbox: Any, state_dir: Path) -> None:
    data, address = graph_mailbox(max_retries=2)
    config = mailbox_from_dict(data)
    bad = graph_server.deliver(address, b"\x00")
    source = GraphSource(config, state_dir=state_dir)
    for _ in range(2):
        with source.session() as session:
            for item in session.fetch():
                assert item.provenance.key == bad
                session.release(item, failed=True)
        assert not (state_dir / f"graph-{config.name}.json").exists()  # a failed round is replayed
    assert [m.id for m in graph_server.messages(address, "Quarantine")] == [bad]
    assert graph_server.messages(address) == []


def test_check_stages(oauth_server: Any, graph_server: Any, graph_mailbox: Any, state_dir: Path, unique: Any) -> None:
    data, address = graph_mailbox()
    graph_server.deliver(address, message(1))
    ok = check(mailbox_from_dict(data), state_dir=state_dir)
    assert ok.ok, ok.message
    assert ok.message_count == 1

    missing = check(mailbox_from_dict({**data, "mailbox": "nobody@contoso.test"}), state_dir=state_dir)
    assert (missing.ok, missing.stage) == (False, "mailbox")

    folder = check(mailbox_from_dict({**data, "folder": "No Such Folder"}), state_dir=state_dir)
    assert (folder.ok, folder.stage) == (False, "folder")

    other_cid = unique("noperm")
    oauth_server.add_client(other_cid, "s", user="app-without-permission")
    denied = check(mailbox_from_dict({**data, "client_id": other_cid, "client_secret": "s"}), state_dir=state_dir)
    assert (denied.ok, denied.stage) == (False, "permission")
    assert "Mail.ReadWrite" in denied.message

    wrong = check(mailbox_from_dict({**data, "client_secret": "not-the-secret"}), state_dir=state_dir)
    assert (wrong.ok, wrong.stage) == (False, "oauth")
    assert "invalid_client" in wrong.message
    assert "not-the-secret" not in wrong.message


def test_provenance_is_the_immutable_id(graph_server: Any, graph_mailbox: Any, state_dir: Path) -> None:
    data, address = graph_mailbox(after="seen")
    config = mailbox_from_dict(data)
    mid = graph_server.deliver(address, message(1))
    with GraphSource(config, state_dir=state_dir).session() as session:
        items = list(session.fetch())
    assert [i.provenance for i in items] == [Provenance(mailbox=config.name, kind="graph", key=mid)]


def test_config_validation_for_graph() -> None:
    from ticketmail.errors import ConfigError

    with pytest.raises(ConfigError, match="mailbox"):
        mailbox_from_dict({"name": "g", "protocol": "graph", "provider": "microsoft", "client_id": "c"})
    with pytest.raises(ConfigError, match="provider"):
        mailbox_from_dict({"name": "g", "protocol": "graph", "mailbox": "a@b.c"})
    with pytest.raises(ConfigError, match="password"):
        mailbox_from_dict(
            {"name": "g", "protocol": "graph", "mailbox": "a@b.c", "provider": "microsoft", "client_id": "c",
             "password": "p"}
        )  # fmt: skip
    ok = mailbox_from_dict(
        {"name": "g", "protocol": "graph", "mailbox": "a@b.c", "provider": "microsoft", "client_id": "c",
         "tenant": "contoso.com", "client_secret_env": "X"}
    )  # fmt: skip
    assert ok.folder == "INBOX"


def test_no_secret_in_logs(
    oauth_server: Any, graph_server: Any, graph_mailbox: Any, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    data, address = graph_mailbox(after="seen")
    config = mailbox_from_dict(data)
    graph_server.deliver(address, message(1))
    graph_server.throttle(1, retry_after=0)
    run, backend = poll(config, state_dir)
    assert run.acknowledged == 1
    oauth_server.expire_access_tokens()
    graph_server._token_cache.clear()
    graph_server.deliver(address, message(2))
    run, _ = poll(config, state_dir, backend)
    assert run.acknowledged == 1
    bad = mailbox_from_dict({**data, "client_secret": "wrong-secret-value", "name": "g-bad"})
    run, _ = poll(bad, state_dir)
    assert run.status == "error"
    stored = json.loads((state_dir / "oauth" / f"{config.name}.json").read_text())
    secrets = [data["client_secret"], "wrong-secret-value", stored["access_token"]]
    # the client side only: the test servers' own Authlib grant modules log what they issue
    client_side = [r for r in caplog.records if not r.name.startswith(("authlib.oauth2.rfc", "tm_oauth_tests"))]
    text = "\n".join(r.getMessage() for r in client_side) + json.dumps(run.to_dict())
    for secret in secrets:
        assert secret not in text


def test_cli_check_and_fetch_a_graph_mailbox(
    graph_server: Any, graph_mailbox: Any, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ticketmail.cli import main

    data, address = graph_mailbox()
    graph_server.deliver(address, message(1))
    cfg = state_dir / "tickets.toml"
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in data.items())
    cfg.write_text(f'[storage]\nsqlite = "tickets.sqlite3"\n\n[[mailboxes]]\n{body}\n')
    assert main(["check", "--config", str(cfg)]) == 0
    assert f"{data['name']}: ok" in capsys.readouterr().out
    assert main(["fetch", "--json", "--once", "--config", str(cfg)]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["action"] == "created"
    assert graph_server.messages(address) == []
    assert (state_dir / "tickets.sqlite3.state" / f"graph-{data['name']}.json").exists()
    bad = cfg.read_text().replace(json.dumps(data["client_secret"]), '"nope"')
    cfg.write_text(bad)
    assert main(["check", "--config", str(cfg), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["stage"] == "oauth"
    assert "invalid_client" in result["message"]


@pytest.mark.parametrize("after", ["seen", "delete"])
def test_capped_visits_resume_where_they_stopped(
    graph_server: Any, graph_mailbox: Any, state_dir: Path, after: str
) -> None:
    data, address = graph_mailbox(after=after, max_per_run=30)
    config = mailbox_from_dict(data)
    for i in range(200):  # four pages of 50, seven capped visits
        graph_server.deliver(address, message(i))
    downloads, pages = graph_server.value_requests, graph_server.delta_requests
    backend = InMemoryBackend()
    visits = 0
    while True:
        run, _ = poll(config, state_dir, backend)
        assert run.status == "ok", run.error
        visits += 1
        if run.fetched == 0 or visits > 12:
            break
    assert len(backend.list_tickets()) == 200
    assert graph_server.value_requests - downloads == 200  # each message downloaded once
    # resuming at the page where the previous visit stopped: about one page read per visit, not a replay
    assert graph_server.delta_requests - pages <= 2 * visits  # a replay from the start would need ~25
    state = json.loads((state_dir / f"graph-{config.name}.json").read_text())
    assert state["resume"] is None
    assert "$deltatoken=" in state["delta_link"]
