"""`tauray spaces list` and `tauray spaces show NAME|FILE` through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tauray.cli import main
from tauray_spaces import get_space, list_spaces, load_space_file

EXAMPLES = Path(__file__).resolve().parents[2] / "search_spaces" / "examples"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_spaces_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["spaces", "list"], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "METHOD", "PARAMS", "OBJECTIVE"]
    rows = [line.split() for line in lines if line and not line.startswith(" ")][1:-1]
    expected = [
        [s.name, s.method, str(len(s.parameters())), f"{s.objective.metric}", f"({s.mode})"]
        for s in list_spaces()
    ]
    assert rows == expected
    assert [r[:2] for r in rows] == [
        ["simclr-temperature", "simclr"],
        ["clip-temperature", "clip"],
        ["dino-temperature", "dino"],
        ["batch-size", "simclr"],
    ]
    assert "tauray spaces show NAME" in out


def test_spaces_show_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["spaces", "show", "simclr-temperature"], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(
        "simclr-temperature  (method: simclr; source: builtin:simclr-temperature)"
    )
    assert "Objective: maximise val/knn_top1" in out
    for spec in get_space("simclr-temperature").parameters():
        assert f"  {spec.key} " in out
    assert "temperature/value          loguniform  [0.02, 1] log" in out
    assert "only when temperature/mode in {fixed, learnable}" in out
    assert "only when temperature/mode == learnable" in out
    assert "temperature/schedule       constant    = cosine" in out
    assert "batch_size_per_worker      choice      {32, 64, 128}" in out
    assert "name: digits-cluttered" in out and "epochs: 6" in out
    assert "1. temperature/mode=fixed, temperature/value=0.1" in out


def test_spaces_show_carries_the_tuning_advice(capsys: pytest.CaptureFixture[str]) -> None:
    _, dino, _ = run(["spaces", "show", "dino-temperature"], capsys)
    assert "above 0.07 training tends to be unstable" in dino
    _, clip, _ = run(["spaces", "show", "clip-temperature"], capsys)
    assert "only when loss/name == sigmoid" in clip
    assert "Objective: maximise val/zeroshot_top1" in clip
    _, batch, _ = run(["spaces", "show", "batch-size"], capsys)
    assert "temperature/value     tied    from global_batch_size: 0.1 at 128, margin 1" in batch


def test_spaces_show_yaml_output_is_a_loadable_space_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["spaces", "show", "clip-temperature", "--yaml"], capsys)
    assert code == 0
    path = tmp_path / "mine.yml"
    path.write_text(out.replace("name: clip-temperature", "name: my-clip"))
    code, shown, err = run(["spaces", "show", str(path)], capsys)
    assert (code, err) == (0, "")
    assert shown.startswith(f"my-clip  (method: clip; source: {path})")
    assert load_space_file(path).parameters() == get_space("clip-temperature").parameters()


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_shipped_examples_are_valid(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["spaces", "show", str(EXAMPLES / example)], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(example.removesuffix(".yaml"))


def test_multi_objective_example(capsys: pytest.CaptureFixture[str]) -> None:
    space = get_space(str(EXAMPLES / "dino-multi-objective.yaml"))
    assert space.metric == ["val/knn_top1", "val/uniformity"]
    assert space.mode == ["max", "min"]
    assert space.parameter("dino.teacher_temperature_start").condition == (
        "dino/teacher_temperature_warmup_epochs in {2, 4}"
    )
    _, out, _ = run(["spaces", "show", str(EXAMPLES / "dino-multi-objective.yaml")], capsys)
    assert "Objective: maximise val/knn_top1; minimise val/uniformity" in out
