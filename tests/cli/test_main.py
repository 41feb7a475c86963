"""The console script's dispatcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from ticketmail.cli import main


def test_pipe_usage_error_is_tempfail_so_the_mta_retries(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipe", "--no-such-option"]) == 75
    assert "usage" in capsys.readouterr().err


def test_other_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["parse", "--no-such-option"])
    assert info.value.code == 2


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_a_command_loads_only_its_own_module(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ticketmail.cli import main\n"
        "assert main(['pipe', '--db', sys.argv[1]]) == 0\n"
        "heavy = [m for m in ('ticketmail.api.server', 'ticketmail.api.handler', 'ticketmail.cli.fetch', "
        "'ticketmail.cli.serve', 'ticketmail.cli.ingest') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "t.sqlite3")],
        input=b"From: a@example.org\nSubject: hi\n\nhello\n",
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.decode().strip() == "[]"  # pipe runs once per delivered message: no HTTP API, no fetch
    assert b"ok: created ticket" in done.stderr


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("parse", "ingest", "tickets", "show", "fetch", "check", "status", "pipe", "serve", "apikey"):
        assert f"    {command} " in out or f"    {command}\n" in out
