"""The CLI's shell: version, help, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tauray import __version__
from tauray.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tauray {__version__}"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["nosuch"], "No such command 'nosuch'"),
        (["spaces", "show"], "Missing argument"),
        (["--nosuch-flag"], "No such option"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tauray: error:") and needle in err[0]


def test_no_arguments_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "Usage" in captured.out + captured.err


def test_console_script_help_lists_commands() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tauray.cli import run; sys.argv=['tauray','--help']; run()",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0
    for command in ("train", "tune", "spaces", "submit", "jobs"):
        assert command in out.stdout
