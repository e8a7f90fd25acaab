"""benchmarks/gpu_check.sh: valid bash; without a GPU one line and the list of what it would run,
nothing created; every command it lists parses with the options it uses, and loss_memory.py
runs them in CPU form."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from bench_modules import load

from tauray.cli import click_command
from tauray_trainers.config import build_config
from tauray_trainers.config.overrides import apply_overrides

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = (
    "gpu_tests",
    "train_bf16",
    "loss_memory_tiled",
    "loss_memory_open_clip_16k",
    "loss_memory_open_clip_64k",
    "sweep_packed",
)


def test_the_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_usage_error_without_out_dir() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.startswith("usage: ")


def _run_without_gpu(
    tmp_path: Path, nvidia_smi_exit: int
) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the script with a stub nvidia-smi first on PATH, and CUDA hidden from torch."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    stub = stub_dir / "nvidia-smi"
    stub.write_text(f"#!/bin/sh\nexit {nvidia_smi_exit}\n")
    stub.chmod(0o755)
    out = tmp_path / "figures"
    env = {
        **os.environ,
        "PATH": f"{stub_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "CUDA_VISIBLE_DEVICES": "",
    }
    result = subprocess.run(
        ["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, timeout=120
    )
    return result, out


@pytest.mark.parametrize(
    ("nvidia_smi_exit", "reason"),
    [(1, "nvidia-smi -L failed"), (0, "torch.cuda.is_available() is false")],
)
def test_without_a_gpu_one_line_then_the_list(
    tmp_path: Path, nvidia_smi_exit: int, reason: str
) -> None:
    result, out = _run_without_gpu(tmp_path, nvidia_smi_exit)
    assert result.returncode == 0, result.stderr
    first, *listed = result.stdout.splitlines()
    assert first.startswith(f"gpu_check: no GPU ({reason}")
    assert first.endswith("nothing run. On one GPU it would run:")
    assert [line.split()[0] for line in listed] == list(STEPS)
    assert all("(timeout " in line and str(out) in line for line in listed)
    assert not out.exists(), "nothing is created without a GPU"


def _listed_commands(tmp_path: Path) -> dict[str, list[str]]:
    result, _ = _run_without_gpu(tmp_path, 1)
    commands = {}
    for line in result.stdout.splitlines()[1:]:
        name, _, command = line.strip().partition(": ")
        commands[name.split()[0]] = shlex.split(command)
    return commands


def test_listed_tauray_commands_parse_and_their_settings_are_valid(tmp_path: Path) -> None:
    commands = _listed_commands(tmp_path)
    for step, subcommand in (("train_bf16", "train"), ("sweep_packed", "tune")):
        words = commands[step]
        assert words[1] == subcommand, words
        leaf = click_command().commands[subcommand]
        context = leaf.make_context(subcommand, words[2:])  # raises on an unknown option
        overrides = context.params["overrides"]
        config = build_config(apply_overrides({}, overrides))
        assert config.epochs in (2, 3)
    train = click_command().commands["train"].make_context("train", commands["train_bf16"][2:])
    assert train.params["gpus_per_worker"] == 1.0
    assert build_config(apply_overrides({}, train.params["overrides"])).precision == "bf16"
    tune = click_command().commands["tune"].make_context("tune", commands["sweep_packed"][2:])
    assert tune.params["gpus_per_worker"] == 0.25 and tune.params["trials"] == 4
    gpu_tests = commands["gpu_tests"]
    assert gpu_tests[1:4] == ["-m", "pytest", "-m"] and gpu_tests[4] == "gpu"


def test_listed_loss_memory_commands_parse_and_run_in_cpu_form(tmp_path: Path) -> None:
    loss_memory = load("loss_memory")
    commands = _listed_commands(tmp_path)
    sizes = set()
    for step in ("loss_memory_tiled", "loss_memory_open_clip_16k", "loss_memory_open_clip_64k"):
        args = loss_memory._parse(commands[step][2:])  # exits 2 on an unknown option
        assert args.device == "cuda" and args.world_size == 1
        sizes.update((size, tuple(args.implementations)) for size in args.batch_sizes)
    assert {size for size, _ in sizes} == {16384, 65536, 262144}
    assert (16384, ("open_clip",)) in sizes and (65536, ("open_clip",)) in sizes
    # The same options on the CPU at a small batch: the script's flags exist and work.
    cpu = [
        sys.executable,
        str(ROOT / "benchmarks" / "loss_memory.py"),
        "--device",
        "cpu",
        "--world-size",
        "1",
        "--batch-sizes",
        "64",
        "--implementations",
        "ours-tiled",
        "open_clip",
        "--repeats",
        "1",
        "--dim",
        "16",
        "--chunk-size",
        "16",
        "--json",
        str(tmp_path / "loss.json"),
    ]
    result = subprocess.run(cpu, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith("64 ")]
    assert [row[1] for row in rows] == ["ours-tiled", "open_clip"]
