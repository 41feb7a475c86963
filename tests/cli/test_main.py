"""The console script's dispatcher."""

from __future__ import annotations

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
