"""Every kind of mistake in a YAML space file gives one line on stderr naming the key and what
is allowed, and exit code 2, through the real CLI (``tauray spaces show FILE``)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tauray.cli import main
from tauray_spaces import load_space_file

BASE: dict[str, Any] = {
    "name": "my-space",
    "description": "A small valid space the cases below break one way each.",
    "method": "simclr",
    "fixed": {"epochs": 2, "data": {"name": "digits"}},
    "parameters": [
        {"key": "temperature/mode", "distribution": "choice", "choices": ["fixed", "learnable"]},
        {
            "key": "temperature/value",
            "distribution": "loguniform",
            "low": 0.02,
            "high": 1.0,
            "when": {"temperature/mode": "fixed"},
        },
        {
            "key": "temperature/lr_multiplier",
            "distribution": "loguniform",
            "low": 0.1,
            "high": 10.0,
            "when": {"temperature/mode": "learnable"},
        },
        {"key": "optimizer.lr", "distribution": "loguniform", "low": 1e-4, "high": 1e-2},
        {"key": "batch_size_per_worker", "distribution": "choice", "choices": [32, 64]},
    ],
    "points_to_evaluate": [{"temperature/mode": "fixed", "temperature/value": 0.1}],
}


def edit(change: Callable[[dict[str, Any]], Any]) -> str:
    data = copy.deepcopy(BASE)
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def param(index: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for name, value in fields.items():
            if value is None:
                data["parameters"][index].pop(name, None)
            else:
                data["parameters"][index][name] = value

    return change


def add(entry: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["parameters"].append(entry)


def top(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.update(fields)


CASES: list[tuple[str, str, list[str]]] = [
    (
        "yaml-syntax",
        "name: x\nparameters: [\n  - key: a\n",
        ["YAML syntax error at line", "column"],
    ),
    ("not-a-mapping", "- key: temperature/value\n", ["must be a mapping", "got a list"]),
    ("empty-file", "", ["must be a mapping", "got an empty file"]),
    (
        "duplicate-yaml-key",
        "name: a\nname: b\nmethod: simclr\nparameters: []\n",
        ["duplicate key 'name' at line 2"],
    ),
    (
        "python-tag",
        "name: !!python/object/apply:os.system [id]\nmethod: simclr\nparameters: []\n",
        ["YAML tag '!!python/object/apply:os.system' is not allowed", "at line 1"],
    ),
    (
        "alias-bomb",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{n}: &{n} [" + ", ".join([f"*{p}"] * 10) + "]\n"
            for p, n in zip("abcde", "bcdef", strict=True)
        ),
        ["aliases expand to more than 100000 values"],
    ),
    ("recursive-alias", "name: &a [*a]\n", ["an alias refers to its own anchor"]),
    ("deep-nesting", "name: " + "[" * 5000 + "\n", ["nesting deeper than 50 levels"]),
    (
        "unknown-top-level-key",
        edit(lambda d: d.update(paramters=d.pop("parameters"))),
        ["unknown key 'paramters'", "allowed:", "did you mean 'parameters'"],
    ),
    (
        "missing-parameters",
        edit(lambda d: d.pop("parameters")),
        ["missing required key 'parameters'"],
    ),
    (
        "no-sampled-parameter",
        edit(top(parameters=[{"key": "epochs", "distribution": "constant", "value": 3}])),
        ["parameters: none is sampled", "uniform, loguniform, int or choice"],
    ),
    (
        "unknown-method",
        edit(top(method="moco")),
        ["method='moco' is not allowed", "'simclr', 'clip' or 'dino'"],
    ),
    (
        "bad-name",
        edit(top(name="my space!")),
        ["name:", "not a valid name", "letters, digits"],
    ),
    (
        "unknown-parameter-key",
        edit(param(3, lowe=1e-4)),
        [
            "parameters[3] (optimizer/lr)",
            "unknown key 'lowe'",
            "allowed: key, distribution, low, high, when, help",
        ],
    ),
    (
        "bad-distribution",
        edit(param(3, distribution="lognormal")),
        ["parameters[3] (optimizer/lr)", "distribution 'lognormal' is not allowed", "tied"],
    ),
    (
        "missing-distribution",
        edit(param(3, distribution=None)),
        ["parameters[3] (optimizer/lr)", "missing key 'distribution'"],
    ),
    (
        "low-not-below-high",
        edit(param(3, low=0.1, high=0.01)),
        ["parameters[3] (optimizer/lr)", "low (0.1) must be < high (0.01)"],
    ),
    (
        "loguniform-low-not-positive",
        edit(param(3, low=0.0)),
        ["parameters[3] (optimizer/lr)", "loguniform needs low > 0"],
    ),
    (
        "number-as-text",
        edit(param(3, low="small")),
        ["parameters[3] (optimizer/lr).low='small'", "valid number"],
    ),
    (
        "empty-choice",
        edit(param(4, choices=[])),
        ["parameters[4] (batch_size_per_worker)", "choices is empty"],
    ),
    (
        "choice-value-the-key-rejects",
        edit(param(0, choices=["fixed", "cosine"])),
        ["parameters[0] (temperature/mode).choices[1]='cosine'", "'fixed', 'learnable'"],
    ),
    (
        "when-unknown-parameter",
        edit(param(1, when={"temperature/mod": "fixed"})),
        ["parameters[1] (temperature/value).when", "'temperature/mod'", "did you mean"],
    ),
    (
        "when-value-never-taken",
        edit(param(1, when={"temperature/mode": "scheduled"})),
        ["temperature/mode == 'scheduled' can never hold", "{fixed, learnable}"],
    ),
    (
        "when-on-a-continuous-parameter",
        edit(param(3, when={"temperature/value": 0.1})),
        ["parameters[3] (optimizer/lr).when tests temperature/value", "choice, int or constant"],
    ),
    (
        "duplicate-parameter",
        edit(add({"key": "temperature.value", "distribution": "uniform", "low": 0.1, "high": 0.5})),
        ["parameters[5] (temperature/value): duplicate parameter", "parameters[1] already"],
    ),
    (
        "condition-cycle",
        edit(
            lambda d: (
                d["parameters"][0].update(when={"batch_size_per_worker": 32}),
                d["parameters"][4].update(when={"temperature/mode": "fixed"}),
            )
        ),
        ["condition cycle:", "temperature/mode -> batch_size_per_worker -> temperature/mode"],
    ),
    (
        "not-a-config-key",
        edit(param(3, key="optimizer/learning_rate")),
        ["parameters[3].key='optimizer/learning_rate' is not a training config key", "lr"],
    ),
    (
        "unknown-section",
        edit(param(3, key="optimiser/lr")),
        ["'optimiser/lr' is not a training config key", "top-level keys and sections"],
    ),
    (
        "integer-key-with-float-distribution",
        edit(param(4, distribution="uniform", low=16, high=64, choices=None)),
        ["parameters[4] (batch_size_per_worker)", "takes integers; use distribution int"],
    ),
    (
        "range-outside-what-the-key-accepts",
        edit(
            add(
                {
                    "key": "temperature/frozen_epochs",
                    "distribution": "uniform",
                    "low": -1.0,
                    "high": 1.0,
                }
            )
        ),
        ["parameters[5] (temperature/frozen_epochs).low=-1 is out of range", ">= 0"],
    ),
    (
        "key-of-another-method",
        edit(add({"key": "dino/teacher_temperature", "distribution": "constant", "value": 0.04})),
        ["only the dino method reads dino/teacher_temperature", "method is simclr"],
    ),
    (
        "bad-objective-mode",
        edit(top(objective={"metric": "val/knn_top1", "mode": "maximize"})),
        ["objective.mode='maximize' is not allowed", "'max' or 'min'"],
    ),
    (
        "objective-as-plain-text",
        edit(top(objective="val/knn_top1")),
        ["objective: 'val/knn_top1' is not an objective", "{metric: val/knn_top1, mode: max}"],
    ),
    (
        "unknown-objective-metric",
        edit(top(objective={"metric": "val/knn_top_1", "mode": "max"})),
        ["objective.metric='val/knn_top_1' is not a metric", "did you mean 'val/knn_top1'"],
    ),
    (
        "fixed-unknown-key",
        edit(lambda d: d["fixed"].update(optimizer={"lrate": 0.1})),
        ["fixed.optimizer.lrate: unknown training config key", "keys under optimizer"],
    ),
    (
        "fixed-bad-value",
        edit(lambda d: d["fixed"].update(epochs=0)),
        ["fixed.epochs=0 is not allowed", "an integer >= 1"],
    ),
    (
        "fixed-method-contradicts",
        edit(lambda d: d["fixed"].update(method="clip")),
        ["fixed.method='clip' contradicts method='simclr'"],
    ),
    (
        "fixed-overridden-by-unconditional-parameter",
        edit(lambda d: d["fixed"].update(optimizer={"lr": 0.01})),
        ["parameters[3] (optimizer/lr): optimizer/lr is also set in fixed"],
    ),
    (
        "point-outside-the-range",
        edit(top(points_to_evaluate=[{"temperature/value": 5.0}])),
        ["points_to_evaluate[0].temperature/value=5.0 is outside", "[0.02, 1] log"],
    ),
    (
        "point-breaks-a-condition",
        edit(top(points_to_evaluate=[{"temperature/mode": "learnable", "temperature/value": 0.1}])),
        ["points_to_evaluate[0] sets temperature/value", "temperature/mode == fixed is false"],
    ),
    (
        "point-unknown-parameter",
        edit(top(points_to_evaluate=[{"optimizer/weight_decay": 0.1}])),
        ["points_to_evaluate[0].optimizer/weight_decay: not a parameter of this space"],
    ),
    (
        "temperature-min-max-overlap",
        edit(
            lambda d: d["parameters"].extend(
                [
                    {"key": "temperature/min", "distribution": "uniform", "low": 0.01, "high": 0.3},
                    {"key": "temperature/max", "distribution": "uniform", "low": 0.2, "high": 1.0},
                ]
            )
        ),
        ["temperature/min can reach 0.3 while temperature/max can be as low as 0.2"],
    ),
    (
        "tied-to-a-missing-parameter",
        edit(
            add(
                {
                    "key": "temperature/min",
                    "distribution": "tied",
                    "to": "global_batch_size",
                    "value": 0.05,
                    "reference_batch_size": 64,
                }
            )
        ),
        [
            "parameters[5] (temperature/min).to: global_batch_size must be",
            "parameter of this space",
        ],
    ),
    (
        "tied-rule-gives-no-positive-temperature",
        edit(
            lambda d: d["parameters"].extend(
                [
                    {"key": "global_batch_size", "distribution": "choice", "choices": [2, 4096]},
                    {
                        "key": "temperature/min",
                        "distribution": "tied",
                        "to": "global_batch_size",
                        "value": 0.5,
                        "reference_batch_size": 4096,
                        "margin": 0.2,
                    },
                ]
            )
        ),
        ["parameters[6] (temperature/min)", "batch size 2 is not positive", "raise the margin"],
    ),
]


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_space_file_mistake_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragments: list[str]
) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    code = main(["spaces", "show", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith(f"tauray: error: {path}") or line.startswith(
        f"tauray: error: space file {str(path)!r}"
    ), line
    assert "Traceback" not in line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    with pytest.raises(ValueError):
        load_space_file(path)


def test_there_are_at_least_a_dozen_kinds_of_mistake() -> None:
    assert len({case[0] for case in CASES}) >= 12


def test_the_base_space_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(edit(lambda d: None))
    assert main(["spaces", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "my-space" in out and "only when temperature/mode == fixed" in out


def test_missing_file_and_unknown_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spaces", "show", str(tmp_path / "absent.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["spaces", "show", "simclr-temprature"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown search space 'simclr-temprature'" in err
    assert "did you mean 'simclr-temperature'" in err
    assert "batch-size" in err


def test_yaml_reads_exponent_floats_without_a_dot(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(edit(lambda d: None).replace("0.0001", "1e-4"))
    assert "1e-4" in path.read_text()
    assert load_space_file(path).parameter("optimizer/lr").low == 1e-4
