"""search_spaces/README.md: its Python block runs, its YAML example is a valid space, and the
error lines it shows are what tauray prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_yaml_errors import CASES  # tests/spaces is on sys.path (pytest rootdir mode)

from tauray.cli import main
from tauray_spaces import load_space_text, tied_temperature
from tauray_trainers.config import build_config

README = Path(__file__).resolve().parents[2] / "search_spaces" / "README.md"


def blocks(language: str) -> list[str]:
    """The bodies of the README's fenced blocks of ``language`` ("" for untagged ones)."""
    found = re.findall(r"^```(\w*)\n(.*?)^```\s*$", README.read_text(), flags=re.S | re.M)
    return [body for tag, body in found if tag == language]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_python_block_runs_and_builds_a_config() -> None:
    (block,) = blocks("python")
    namespace: dict[str, object] = {}
    exec(compile(block, str(README), "exec"), namespace)
    config = build_config(namespace["config"])
    assert config.method == "clip"
    assert config.loss.name == "infonce" and config.temperature.value == 0.07  # the baseline


def test_format_example_is_a_valid_space() -> None:
    example = next(b for b in blocks("yaml") if "my-simclr-space" in b)
    space = load_space_text(example, "README")
    assert space.parameter("temperature/value").condition == (
        "temperature/mode in {fixed, learnable}"
    )


def test_tied_values_quoted_in_the_readme() -> None:
    text = README.read_text()
    quoted = re.search(r"τ is ([\d., and]+) at\s+B = 32, 64, 128 and 256", text)
    assert quoted is not None
    values = [float(v) for v in re.findall(r"\d+\.\d+|\d+", quoted.group(1))]
    computed = [tied_temperature(b, 0.1, 128, 1.0) for b in (32, 64, 128, 256)]
    assert values == [round(v, 3) for v in computed]


@pytest.mark.parametrize(
    "case", ["loguniform-low-not-positive", "when-value-never-taken", "unknown-top-level-key"]
)
def test_error_lines_shown_in_the_readme_are_real(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (shown_block,) = [b for b in blocks("") if "tauray: error: my.yaml" in b]
    shown = shown_block.splitlines()
    text = next(c[1] for c in CASES if c[0] == case)
    path = tmp_path / "my.yaml"
    path.write_text(text)
    assert main(["spaces", "show", str(path)]) == 2
    printed = capsys.readouterr().err.strip().replace(str(path), "my.yaml")
    assert printed in shown
