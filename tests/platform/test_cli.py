"""The CLI's shell: version, help, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from tauray import __version__
from tauray.cli import click_command, main


def numeric_options() -> list[tuple[str, str, type]]:
    """(command, option, int or float) for every option of every command typed as a number."""
    found: list[tuple[str, str, type]] = []

    def visit(command: typing.Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, subcommand in subcommands.items():
                visit(subcommand, [*path, name])
            return
        hints = typing.get_type_hints(command.callback)
        for param in command.params:
            hint = hints.get(param.name)
            kinds = [kind for kind in (typing.get_args(hint) or (hint,)) if kind in (int, float)]
            if kinds:
                found.append((" ".join(path), param.opts[0], kinds[0]))

    visit(click_command(), [])
    return found


NUMERIC_OPTIONS = numeric_options()


def _argv(command: str, *options: str) -> list[str]:
    """A command line that parses up to ``options`` (report needs its EXPERIMENT argument)."""
    required = ["some-experiment"] if command == "report" else []
    return [*command.split(), *required, *options]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tauray {__version__}"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["nosuch"], "No such command 'nosuch'"),
        (["spaces", "show"], "Missing argument"),
        (["--nosuch-flag"], "No such option"),
        (["tune", "--space", "simclr-temperature", "--sampler", "grid"], "--sampler 'grid'"),
        (
            ["tune", "--space", "simclr-temperature", "--confirm-top", "-1"],
            "--confirm-top must be >= 0 (0: no confirmation phase), got -1",
        ),
        (
            ["tune", "--space", "simclr-temperature", "--confirm-seeds", "0"],
            "--confirm-seeds must be >= 1, got 0",
        ),
        (["tune", "--space", "simclr-temperature", "--confirm-top", "two"], "'two'"),
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


def test_numeric_options_are_found() -> None:
    found = {(command, option): kind for command, option, kind in NUMERIC_OPTIONS}
    assert found[("train", "--workers")] is int
    assert found[("tune", "--time-budget")] is float
    assert found[("report", "--top")] is int
    assert len(found) >= 14


@pytest.mark.parametrize(
    ("command", "option"), [(command, option) for command, option, _ in NUMERIC_OPTIONS]
)
def test_a_bad_number_names_the_option_and_the_value(
    command: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(command, option, "twelve")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tauray: error:"), err
    assert f"'{option}'" in err[0] and "'twelve'" in err[0], err[0]


@pytest.mark.parametrize(
    ("command", "option"),
    [(command, option) for command, option, kind in NUMERIC_OPTIONS if kind is int],
)
def test_a_fraction_for_a_whole_number_option_names_the_value(
    command: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(command, option, "2.5")) == 2
    err = capsys.readouterr().err.strip()
    assert f"'{option}'" in err and "'2.5' is not a whole number" in err, err


@pytest.mark.parametrize(("command", "option", "kind"), NUMERIC_OPTIONS)
def test_numeric_options_parse_to_their_type(command: str, option: str, kind: type) -> None:
    words = command.split()
    leaf = click_command()
    for word in words:
        leaf = leaf.commands[word]
    context = leaf.make_context(words[-1], _argv(command, option, "3")[len(words) :])
    value = context.params[option.lstrip("-").replace("-", "_")]
    assert type(value) is kind and value == 3
