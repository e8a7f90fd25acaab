"""The RayJob runs a real `tauray tune` command line: the CLI's own parser accepts it.

The entrypoint is split like a shell would (shlex) and parsed by the click command behind
`tauray` without running it. It also names a built-in search space, metrics tauray reports, and
asks for no more GPUs than the overlay's worker group can provide.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from infra_helpers import INFRA, SWEEPS, one, render

BUILTIN_SPACES = {"simclr-temperature", "clip-temperature", "dino-temperature", "batch-size"}


def parse_tauray(words: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``tauray <command> ...`` with the real CLI; return the command and its parameters.

    Raises:
        UsageError: the CLI does not accept the arguments (click's, or the copy typer ships).
        AssertionError: the command does not exist.
    """
    from tauray.cli import click_command

    assert words[0] == "tauray", words
    root = click_command()
    context = root.make_context("tauray", list(words[1:]), resilient_parsing=False)
    rest = [*getattr(context, "_protected_args", []), *context.args]
    assert rest, f"no command in {words}"
    command = root.get_command(context, rest[0])
    assert command is not None, (
        f"the tauray CLI has no `{rest[0]}` command (commands: "
        f"{', '.join(root.list_commands(context))})"
    )
    sub_context = command.make_context(rest[0], rest[1:], parent=context)
    return rest[0], sub_context.params


def entrypoint_words(sweep: str) -> list[str]:
    return shlex.split(one(render(sweep), "RayJob", "tauray-sweep")["spec"]["entrypoint"])


def option(words: list[str], name: str) -> list[str]:
    """Every value given to ``name`` in ``words`` (``--name value`` or ``--name=value``)."""
    values = []
    for index, word in enumerate(words):
        if word == name and index + 1 < len(words):
            values.append(words[index + 1])
        elif word.startswith(f"{name}="):
            values.append(word.split("=", 1)[1])
    return values


@pytest.mark.parametrize("sweep", SWEEPS)
def test_the_rayjob_entrypoint_is_a_tauray_tune_invocation_the_cli_accepts(sweep: str) -> None:
    words = entrypoint_words(sweep)
    assert words[:2] == ["tauray", "tune"], words
    command, params = parse_tauray(words)
    assert command == "tune"
    assert params, "the tune command parsed no parameters"


def test_the_cli_parser_rejects_a_wrong_option() -> None:
    # typer may bring its own copy of click: match the error class by name, not by identity.
    with pytest.raises(Exception) as raised:
        parse_tauray(["tauray", "--no-such-option"])
    assert "UsageError" in {klass.__name__ for klass in type(raised.value).__mro__}


@pytest.mark.parametrize("sweep", SWEEPS)
def test_the_entrypoint_needs_no_shell(sweep: str) -> None:
    """KubeRay passes the entrypoint through a shell in the submitter pod, then on the head."""
    entrypoint = one(render(sweep), "RayJob", "tauray-sweep")["spec"]["entrypoint"]
    assert not re.search(r"[$`'\"\\;&|<>(){}*?]", entrypoint), entrypoint
    assert "--tracking-uri" not in entrypoint, "the tracking URI comes from tauray-ray-env"


@pytest.mark.parametrize("sweep", SWEEPS)
def test_the_entrypoint_names_a_builtin_space_and_reported_metrics(sweep: str) -> None:
    from tauray_spaces import get_space
    from tauray_trainers.metrics import ALL_METRICS

    words = entrypoint_words(sweep)
    (space,) = option(words, "--space")
    assert space in BUILTIN_SPACES
    assert get_space(space).name == space
    # The objective is --objective when given, else the one the space declares.
    objectives = [text.rsplit(":", 1) for text in option(words, "--objective")] or [
        (objective.metric, objective.mode) for objective in get_space(space).objectives
    ]
    assert objectives
    for metric, mode in objectives:
        assert metric in ALL_METRICS and mode in ("max", "min"), (metric, mode)
    assert option(words, "--scheduler") in (["asha"], ["hyperband"], ["none"], [])


@pytest.mark.parametrize("sweep", SWEEPS)
def test_tauray_plans_the_entrypoints_sweep_without_complaint(sweep: str, tmp_path: Path) -> None:
    """tauray's own validation (space, --set, objective, tracking URI), as on the head pod."""
    from tauray.sweep.plan import SweepRequest, plan_sweep

    platform = sweep.removesuffix("/sweep")
    ray_env = one(render(platform), "ConfigMap", "tauray-ray-env")["data"]
    _, params = parse_tauray(entrypoint_words(sweep))
    params = {**params, "time_budget_s": params.get("time_budget")}
    names = {field.name for field in dataclasses.fields(SweepRequest)}
    request = SweepRequest(
        **{
            name: tuple(value) if isinstance(value, list) else value
            for name, value in params.items()
            if name in names and value is not None
        }
    )
    # Ray's job supervisor runs the entrypoint with RAY_ADDRESS set to the cluster it belongs to.
    environ = {**ray_env, "RAY_ADDRESS": "127.0.0.1:6379"}
    plan = plan_sweep(request, cwd=tmp_path, environ=environ, check_tracking=False)
    assert plan.target.uri == ray_env["MLFLOW_TRACKING_URI"]
    assert plan.request.time_budget_s == float(option(entrypoint_words(sweep), "--time-budget")[0])


@pytest.mark.parametrize("sweep", SWEEPS)
def test_a_trial_fits_the_worker_group(sweep: str) -> None:
    """workers-per-trial x gpus-per-worker GPUs must exist in the autoscaled worker group."""
    rayjob = one(render(sweep), "RayJob", "tauray-sweep")
    words = shlex.split(rayjob["spec"]["entrypoint"])
    workers = int(option(words, "--workers-per-trial")[0])
    gpus_per_worker = float(option(words, "--gpus-per-worker")[0])
    groups = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus_available = sum(
        g["maxReplicas"]
        * g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)
        for g in groups
    )
    assert workers >= 1
    assert workers * gpus_per_worker <= gpus_available, (workers, gpus_per_worker, gpus_available)
    if sweep.startswith("overlays/gpu"):
        assert gpus_per_worker >= 1, "the gpu sweep should train on GPUs"
    else:
        assert gpus_per_worker == 0, "the local cluster has no GPUs"


def readme_commands(program: str) -> list[list[str]]:
    """Command lines of ``program`` in infra/README.md's shell blocks (continuations joined)."""
    text = (INFRA / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == program:
                commands.append(words)
    return commands


def test_the_readme_sweep_commands_are_ones_the_cli_accepts() -> None:
    """`tauray submit ... -- tauray tune ...` in infra/README.md: both levels parse."""
    submits = [words for words in readme_commands("tauray") if words[1] == "submit"]
    assert submits, "infra/README.md shows no `tauray submit`"
    for words in submits:
        assert parse_tauray(words)[0] == "submit"
        inner = words[words.index("--") + 1 :]
        assert inner[:2] == ["tauray", "tune"], inner
        assert parse_tauray(inner)[0] == "tune"
