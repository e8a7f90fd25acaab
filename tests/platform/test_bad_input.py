"""Malformed and hostile input to every command: refused in one line, before anything starts.

The cases are generated: every numeric option with values that are not numbers or out of range,
every numeric config key through ``--set`` with inf, nan and text, hostile YAML (alias bombs,
deep nesting, tags, duplicate keys, huge integers) in ``--set``, ``--config`` and space files,
storage paths, tracking URIs and Ray addresses nothing can use, objectives a method never
reports, names, damaged resume folders and MLflow stores. Each runs through the CLI entry point
(:func:`tauray.cli.main`) in a fresh working directory and must exit 2 with one line on stderr
that names the option or key and the bad value, print no traceback, create nothing in the
working directory, and start no Ray (``ray.init`` is replaced by a guard that fails the test,
and Ray's temp dir must stay empty). A few run end to end through the ``tauray`` console script.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tauray import __version__
from tauray.cli import main
from tauray_trainers.config import TrainConfig, flatten

# A guard against a hang, not a timing: every case answers in about a second when it works.
_HANG_GUARD_S = 60

_TUNE = ("tune", "--space", "simclr-temperature", "--trials", "1")
_TRAIN = ("train", "--set", "epochs=1")


@dataclass(frozen=True)
class Case:
    """One malformed invocation and the fragments its error line must contain."""

    case_id: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)


def _bomb(levels: int = 9, width: int = 9) -> str:
    """A YAML flow mapping whose aliases expand to ``width ** levels`` values."""
    parts = ["a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * width)
        parts.append(f"a{level}: &a{level} [{refs}]")
    return "{" + ", ".join(parts) + "}"


_DEEP = "[" * 5000 + "]" * 5000
_HUGE = "9" * 5000
_SPACE = """name: s
method: simclr
fixed:
  epochs: 1
parameters:
  - key: temperature/value
    distribution: loguniform
    low: 0.05
    high: 0.5
"""

# ---- the cases ----------------------------------------------------------------------------------


def _numeric_option_cases() -> Iterator[Case]:
    whole = {
        "tune": (
            "--trials",
            "--workers-per-trial",
            "--seed",
            "--num-cpus",
            "--max-concurrent-trials",
            "--max-failures",
            "--confirm-top",
            "--confirm-seeds",
        ),
        "train": ("--workers", "--max-failures"),
    }
    real = {
        "tune": ("--time-budget", "--gpus-per-worker", "--cpus-per-worker"),
        "train": ("--gpus-per-worker", "--cpus-per-worker"),
    }
    base = {"tune": _TUNE, "train": _TRAIN}
    for command, options in whole.items():
        for option in options:
            for label, value, shown in (
                ("text", "abc", "'abc'"),
                ("fraction", "1.5", "'1.5'"),
                ("empty", "", "''"),
                ("hex", "0x10", "'0x10'"),
                ("huge", _HUGE, "'9999"),
                ("overflow", "1" * 25, "'1111"),
            ):
                yield Case(
                    f"{command}{option}-{label}", (*base[command], option, value), (option, shown)
                )
        for option in real[command]:
            for label, value in (("text", "abc"), ("empty", ""), ("comma", "1,5")):
                yield Case(
                    f"{command}{option}-{label}", (*base[command], option, value), (option, value)
                )
    out_of_range = [
        ("tune", "--trials", "0"),
        ("tune", "--trials", "-1"),
        ("tune", "--workers-per-trial", "0"),
        ("tune", "--seed", "-1"),
        ("tune", "--seed", str(2**40)),
        ("tune", "--num-cpus", "0"),
        ("tune", "--num-cpus", "-1"),
        ("tune", "--max-concurrent-trials", "0"),
        ("tune", "--max-failures", "-1"),
        ("tune", "--confirm-top", "-1"),
        ("tune", "--confirm-seeds", "0"),
        ("tune", "--time-budget", "0"),
        ("tune", "--time-budget", "-5"),
        ("tune", "--time-budget", "nan"),
        ("train", "--workers", "0"),
        ("train", "--workers", "-3"),
        ("train", "--max-failures", "-1"),
    ]
    for command in ("tune", "train"):
        for option in real[command][-2:]:  # GPUs and CPUs per worker
            for value in ("nan", "inf", "-inf", "-1"):
                out_of_range.append((command, option, value))
        out_of_range.append((command, "--cpus-per-worker", "0"))
    for command, option, value in out_of_range:
        yield Case(f"{command}{option}={value}", (*base[command], option, value), (option, value))


def _numeric_config_keys() -> list[tuple[str, str]]:
    """``(key, type)`` of every int or float setting of the training config."""
    defaults = flatten(TrainConfig().to_dict(), ".")
    keys = []
    for key in sorted(defaults):
        section, _, name = key.rpartition(".")
        model: Any = TrainConfig
        for part in section.split(".") if section else ():
            model = model.model_fields[part].annotation
        annotation = str(model.model_fields[name].annotation)
        if "bool" in annotation or "Literal" in annotation or "str" in annotation:
            continue
        if "int" in annotation or "float" in annotation:
            keys.append((key, "int" if "int" in annotation else "float"))
    return keys


def _set_value_cases() -> Iterator[Case]:
    keys = _numeric_config_keys()
    for key, _ in keys:
        for value in ("inf", "nan", "-inf", "abc", "[1, 2]", _HUGE):
            shown = value if len(value) < 40 else "9999"
            yield Case(
                f"train-set-{key}={value[:8]}", (*_TRAIN, "--set", f"{key}={value}"), (key, shown)
            )
    for key, _ in keys[::4]:  # the sweep refuses the same values through the same schema
        for value in ("inf", "abc"):
            yield Case(
                f"tune-set-{key}={value}",
                (*_TUNE, "--set", f"{key}={value}"),
                (key.replace(".", "/"), value),  # a space names keys with slashes
            )


def _hostile_yaml() -> list[tuple[str, str, str]]:
    """``(label, YAML value, fragment of the refusal)``."""
    return [
        ("alias-bomb", _bomb(), "aliases expand"),
        ("deep-nesting", _DEEP, "nesting deeper"),
        ("python-tag", "!!python/object/apply:os.system ['true']", "!!python/object/apply"),
        ("python-name", "!!python/name:os.system", "!!python/name"),
        ("recursive-alias", "&a [*a]", "alias"),
        ("huge-int", _HUGE, "digits"),
        ("duplicate-key", "{a: 1, a: 2}", "duplicate key"),
        ("unclosed", "[1, 2", "YAML syntax error"),
    ]


def _yaml_cases() -> Iterator[Case]:
    for label, text, fragment in _hostile_yaml():
        for command in (_TRAIN, _TUNE):
            yield Case(
                f"{command[0]}-set-{label}", (*command, "--set", f"data={text}"), ("data", fragment)
            )
        yield Case(
            f"config-{label}",
            ("train", "--config", "c.yaml"),
            ("c.yaml", fragment),
            {"c.yaml": f"method: simclr\nx: {text}\n"},
        )
        for place, document in (
            ("fixed", _SPACE.replace("  epochs: 1\n", f"  epochs: 1\n  x: {text}\n")),
            ("description", _SPACE + f"description: {text}\n"),
            ("points", _SPACE + f"points_to_evaluate: {text}\n"),
        ):
            yield Case(
                f"space-{place}-{label}",
                ("tune", "--space", "s.yaml"),
                ("s.yaml", fragment),
                {"s.yaml": document},
            )
    config_files: list[tuple[str, str | bytes, str]] = [
        ("empty", "", "is empty"),
        ("whitespace", "  \n\n \t\n", "is empty"),
        ("comment-only", "# nothing\n", "holds no settings"),
        ("list", "- 1\n- 2\n", "must hold a mapping"),
        ("undecodable", b"\xff\xfe\x00\x80epochs: 1\n", "not UTF-8"),
        ("duplicate", "epochs: 1\nepochs: 2\n", "duplicate key 'epochs'"),
        ("workers-text", "train_loop_config: {epochs: 1}\nworkers: abc\n", "'abc'"),
        ("workers-zero", "train_loop_config: {epochs: 1}\nworkers: 0\n", "workers"),
        ("gpus-nan", "train_loop_config: {epochs: 1}\ngpus_per_worker: .nan\n", "gpus_per_worker"),
        ("unknown-run-key", "train_loop_config: {epochs: 1}\nnodes: 2\n", "nodes"),
        ("lr-inf", "optimizer: {lr: .inf}\n", "optimizer.lr"),
        ("unknown-key", "epochz: 3\n", "epochz"),
    ]
    for label, content, fragment in config_files:
        yield Case(
            f"config-file-{label}",
            ("train", "--config", "c.yaml"),
            ("c.yaml" if label != "lr-inf" and label != "unknown-key" else fragment, fragment),
            {"c.yaml": content},
        )
    yield Case(
        "space-undecodable", ("tune", "--space", "s.yaml"), ("s.yaml",), {"s.yaml": b"\xff\xfe\x80"}
    )


def _storage_cases() -> Iterator[Case]:
    paths = [
        ("proc", "/proc/x", "/proc"),
        ("dev-null", "/dev/null/x", "/dev/null"),
        ("a-file", "f.txt", "f.txt"),
        ("below-a-file", "f.txt/sub", "f.txt"),
        ("unknown-scheme", "foo://bar", "foo://"),
        ("ftp", "ftp://host/x", "ftp://"),
        ("no-bucket", "s3://", "s3://"),
        ("empty", "", "--storage-path"),
        ("blank", "   ", "--storage-path"),
    ]
    for label, value, fragment in paths:
        for command in (_TUNE, _TRAIN):
            yield Case(
                f"{command[0]}-storage-{label}",
                (*command, "--storage-path", value),
                ("--storage-path", fragment),
                {"f.txt": "x"},
            )


def _tracking_cases() -> Iterator[Case]:
    uris = [
        ("sqlite-proc", "sqlite:////proc/mlflow.db", "/proc"),
        ("sqlite-missing-folder", "sqlite:////nonexistent/dir/mlflow.db", "does not exist"),
        ("sqlite-not-a-database", "sqlite:///bad.db", "not an SQLite database"),
        ("sqlite-memory", "sqlite:///:memory:", "in-memory"),
        ("file-store", "file:///proc/x", "file store"),
        ("postgresql", "postgresql://u:secret@127.0.0.1:1/db", "127.0.0.1"),
        ("mysql", "mysql://127.0.0.1:1/db", "127.0.0.1"),
        ("unknown-scheme", "foo://bar", "foo://bar"),
        ("bad-ipv6", "http://[::1", "http://[::1"),
        ("bad-port", "http://127.0.0.1:99999", "127.0.0.1:99999"),
        ("no-server", "http://127.0.0.1:1", "127.0.0.1:1"),
        ("empty", "", "--tracking-uri"),
    ]
    for label, uri, fragment in uris:
        yield Case(
            f"tune-tracking-{label}",
            (*_TUNE, "--tracking-uri", uri),
            (fragment,),
            {"bad.db": "not a database\n" * 10},
        )
    yield Case(
        "report-corrupt-store",
        ("report", "x", "--tracking-uri", "sqlite:///bad.db"),
        ("bad.db", "not an SQLite database"),
        {"bad.db": "not a database\n" * 10},
    )
    yield Case(
        "report-bad-ipv6",
        ("report", "x", "--tracking-uri", "http://[::1"),
        ("--tracking-uri", "http://[::1"),
    )


def _address_cases() -> Iterator[Case]:
    addresses = [
        ("nobody", "127.0.0.1:1", "127.0.0.1:1"),
        ("ray-client-nobody", "ray://127.0.0.1:1", "127.0.0.1:1"),
        ("bad-ipv6", "[::1", "[::1"),
        ("bad-port", "127.0.0.1:notaport", "notaport"),
        ("http", "http://127.0.0.1:8265", "http://"),
        ("unknown-scheme", "foo://bar:1", "foo://"),
        ("empty", "", "--address"),
        ("path", "127.0.0.1:1/x", "127.0.0.1:1/x"),
    ]
    for label, value, fragment in addresses:
        for command in (_TUNE, _TRAIN):
            yield Case(
                f"{command[0]}-address-{label}",
                (*command, "--address", value),
                ("--address", fragment),
            )


def _sweep_request_cases() -> Iterator[Case]:
    for option in ("--experiment", "--model-name"):
        for value in ("", "   "):
            yield Case(f"tune{option}-{value!r}", (*_TUNE, option, value), (option, "empty"))
    objectives = [
        ("not-reported", "val/knn_top5:max", "val/knn_top5"),
        ("loss", "loss:min", "'loss'"),
        ("clip-only", "val/zeroshot_top1:max", "val/zeroshot_top1"),
        ("dino-only", "train/teacher_temperature:min", "train/teacher_temperature"),
        ("two-modes", "val/knn_top1:max:min", "val/knn_top1:max:min"),
        ("no-mode", "val/knn_top1", "val/knn_top1"),
        ("bad-mode", "val/knn_top1:maximize", "maximize"),
        ("empty", "", "''"),
    ]
    for label, value, fragment in objectives:
        yield Case(f"tune-objective-{label}", (*_TUNE, "--objective", value), (fragment,))
    yield Case(
        "tune-objective-both-directions",
        (*_TUNE, "--objective", "val/knn_top1:max", "--objective", "val/knn_top1:min"),
        ("--objective", "val/knn_top1", "twice"),
    )
    pinned = ("--set", "temperature.mode=learnable", "--set", "temperature.min=2")
    yield Case(
        "tune-temperature-min-above-max",
        (*_TUNE, *pinned, "--set", "temperature.max=1"),
        ("temperature/min", "temperature/max"),
    )
    yield Case(
        "train-temperature-min-above-max",
        (*_TRAIN, *pinned, "--set", "temperature.max=1"),
        ("temperature.min", "temperature.max"),
    )
    for command in (_TUNE, _TRAIN):
        yield Case(
            f"{command[0]}-too-many-workers",
            (*command, "--workers" if command is _TRAIN else "--workers-per-trial", "512"),
            ("512",),
        )
        yield Case(f"{command[0]}-too-many-gpus", (*command, "--gpus-per-worker", "64"), ("GPU",))
    for value in ("", "../escape", "a/b", "..", "   "):
        shown = repr(value) if value.strip() else "not a run name"
        yield Case(f"train-name-{value!r}", (*_TRAIN, "--name", value), ("--name", shown))


def _resume_cases() -> Iterator[Case]:
    folder = "sw"
    state = f"{folder}/tauray_sweep.json"
    documents: list[tuple[str, dict[str, str | bytes], str]] = [
        ("empty-object", {state: "{}", f"{folder}/tuner.pkl": "x"}, "no saved request"),
        ("not-json", {state: "{not json", f"{folder}/tuner.pkl": "x"}, "cannot read"),
        ("a-list", {state: "[1, 2]", f"{folder}/tuner.pkl": "x"}, "no saved request"),
        (
            "no-space",
            {state: json.dumps({"request": {"trials": 1}}), f"{folder}/tuner.pkl": "x"},
            "sw",
        ),
        ("no-tuner-state", {state: json.dumps({"request": {"space": "x"}})}, "tuner.pkl"),
        ("undecodable", {state: b"\xff\xfe", f"{folder}/tuner.pkl": "x"}, "cannot read"),
        ("missing", {}, "no tauray sweep folder"),
    ]
    # A state file as a sweep writes it, beside a Ray Tune state that is no complete pickle.
    valid_state = json.dumps(
        {"request": {"space": "simclr-temperature", "trials": 2}, "tauray_version": __version__}
    )
    tuner = f"{folder}/tuner.pkl"
    documents += [
        (f"tuner-{label}", {state: valid_state, tuner: data}, "tuner.pkl is damaged")
        for label, data in (
            ("empty", b""),
            ("text", "not a pickle"),
            ("truncated", pickle.dumps({"trials": list(range(50))})[:-7]),
        )
    ]
    for label, files, fragment in documents:
        yield Case(
            f"tune-resume-{label}", ("tune", "--resume", folder), ("--resume", fragment), files
        )


def _jobs_cases() -> Iterator[Case]:
    nobody = "http://127.0.0.1:1"  # a dashboard address nothing listens on: refused at once
    mlflow = ("--tracking-uri", "http://127.0.0.1:5999")
    job = ("--", "tauray", "tune", "--space", "simclr-temperature")
    submit = ("submit", "--address", nobody, *mlflow)
    cases: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
        ("job-bad-type", (*submit, *job, "--trials", "abc"), ("--trials", "abc")),
        ("job-unknown-option", (*submit, *job, "--nosuch"), ("--nosuch",)),
        ("job-unknown-command", (*submit, "--", "tauray", "nosuch"), ("nosuch",)),
        ("job-no-command", (*submit, "--", "tauray"), ("names no command",)),
        ("job-missing-value", (*submit, *job, "--set"), ("--set",)),
        ("job-group-unknown", (*submit, "--", "tauray", "jobs", "nosuch"), ("nosuch",)),
        ("job-eager-version", (*submit, "--", "tauray", "--version"), ("127.0.0.1:1",)),
        ("job-eager-help", (*submit, *job, "--help"), ("127.0.0.1:1",)),
        ("pip-blank", (*submit, "--pip", " ", *job), ("--pip", "' '")),
        ("env-no-equals", (*submit, "--env", "NOEQ", *job), ("--env", "NOEQ")),
        ("env-digit-key", (*submit, "--env", "1A=x", *job), ("--env", "1A=x")),
        ("env-empty-key", (*submit, "--env", "=x", *job), ("--env", "=x")),
        ("submission-id-blank", (*submit, "--submission-id", " ", *job), ("--submission-id",)),
        ("token-file-missing", (*submit, "--token-file", "t.txt", *job), ("--token-file", "t.txt")),
        ("ipv6", ("submit", "--address", "http://[::1", *mlflow, *job), ("--address", "[::1")),
        ("ftp", ("submit", "--address", "ftp://x", *mlflow, *job), ("--address", "ftp://x")),
        ("port", ("submit", "--address", "http://127.0.0.1:99999", *mlflow, *job), ("99999",)),
        (
            "tracking-relative-sqlite",
            ("submit", "--address", nobody, "--tracking-uri", "sqlite:///rel.db", *job),
            ("--tracking-uri", "sqlite:///rel.db"),
        ),
        (
            "tracking-relative-file",
            ("submit", "--address", nobody, "--tracking-uri", "file:rel", *job),
            ("--tracking-uri", "file:rel"),
        ),
        (
            "tracking-differs",
            (*submit, *job, "--tracking-uri", "http://10.0.0.1:5000"),
            ("differs", "http://10.0.0.1:5000"),
        ),
        ("tracking-missing", ("submit", "--address", nobody, *job), ("--tracking-uri",)),
        ("unreachable", (*submit, *job), ("127.0.0.1:1",)),
    ]
    for command in ("status", "logs", "stop"):
        cases += [
            (f"{command}-unreachable", ("jobs", command, "x", "--address", nobody), (nobody,)),
            (f"{command}-ftp", ("jobs", command, "x", "--address", "ftp://x"), ("ftp://x",)),
            (f"{command}-ipv6", ("jobs", command, "x", "--address", "http://[::1"), ("[::1",)),
            (
                f"{command}-token-file",
                ("jobs", command, "x", "--address", nobody, "--token-file", "t.txt"),
                ("--token-file", "t.txt"),
            ),
        ]
    cases += [
        ("list-port", ("jobs", "list", "--address", "http://127.0.0.1:99999"), ("99999",)),
        ("unknown", ("jobs", "nosuch"), ("nosuch",)),
    ]
    for label, argv, expect in cases:
        yield Case(f"jobs-{label}", argv, expect)


def all_cases() -> list[Case]:
    cases = [
        *_numeric_option_cases(),
        *_set_value_cases(),
        *_yaml_cases(),
        *_storage_cases(),
        *_tracking_cases(),
        *_address_cases(),
        *_sweep_request_cases(),
        *_resume_cases(),
        *_jobs_cases(),
    ]
    ids = [case.case_id for case in cases]
    duplicates = {case_id for case_id in ids if ids.count(case_id) > 1}
    if duplicates:
        raise ValueError(f"duplicate case ids: {sorted(duplicates)}")
    return cases


CASES = all_cases()

# ---- running them -------------------------------------------------------------------------------


def _write_files(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """A fresh working directory and Ray temp dir; ``ray.init`` fails the test if called."""
    cwd = tmp_path / "cwd"
    ray_tmp = tmp_path / "ray"
    cwd.mkdir()
    ray_tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    import ray

    def refuse_to_start(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the command started Ray on input it should have refused")

    monkeypatch.setattr(ray, "init", refuse_to_start)

    def hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no answer within {_HANG_GUARD_S} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(_HANG_GUARD_S)
    try:
        yield {"cwd": cwd, "ray": ray_tmp}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _check_refusal(
    case: Case, code: int, out: str, err: str, before: set[str], after: set[str], ray_tmp: Path
) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err[-2000:]}"
    line = lines[0]
    assert line.startswith("tauray: error: "), line
    assert "Traceback" not in err
    assert len(line) < 800, f"an error line of {len(line)} characters"
    for fragment in case.expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert out == "", f"stdout: {out[-500:]}"
    assert after == before, f"created in the working directory: {sorted(after - before)}"
    assert not any(ray_tmp.iterdir()), "Ray wrote its session folder"


@pytest.mark.parametrize("case", CASES, ids=[case.case_id for case in CASES])
def test_bad_input_is_refused_in_one_line(
    case: Case, sandbox: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cwd = sandbox["cwd"]
    _write_files(cwd, case.files)
    before = _tree(cwd)
    capsys.readouterr()
    code = main(list(case.argv))
    captured = capsys.readouterr()
    import ray

    assert not ray.is_initialized()
    _check_refusal(case, code, captured.out, captured.err, before, _tree(cwd), sandbox["ray"])


# ---- end to end: the console script in a subprocess ---------------------------------------------

_END_TO_END = [
    Case(
        "e2e-config-alias-bomb",
        ("train", "--config", "c.yaml"),
        ("c.yaml", "aliases expand"),
        {"c.yaml": f"method: simclr\nx: {_bomb()}\n"},
    ),
    Case("e2e-set-deep", (*_TRAIN, "--set", f"x={_DEEP}"), ("x=", "nesting deeper")),
    Case("e2e-num-cpus-zero", (*_TUNE, "--num-cpus", "0"), ("--num-cpus", "0")),
    Case("e2e-address-nobody", (*_TUNE, "--address", "127.0.0.1:1"), ("--address", "127.0.0.1:1")),
    Case("e2e-storage-proc", (*_TRAIN, "--storage-path", "/proc/x"), ("--storage-path", "/proc")),
    Case(
        "e2e-tracking-postgresql",
        (*_TUNE, "--tracking-uri", "postgresql://127.0.0.1:1/db"),
        ("postgresql://127.0.0.1:1/db",),
    ),
]


def _console_script() -> str:
    script = Path(sys.executable).with_name("tauray")
    found = str(script) if script.exists() else shutil.which("tauray")
    if not found:
        pytest.skip("the tauray console script is not installed")
    return found


@pytest.mark.parametrize("case", _END_TO_END, ids=[case.case_id for case in _END_TO_END])
def test_console_script_refuses_bad_input(case: Case, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    ray_tmp = tmp_path / "ray"
    cwd.mkdir()
    ray_tmp.mkdir()
    _write_files(cwd, case.files)
    before = _tree(cwd)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")
    }
    env["RAY_TMPDIR"] = str(ray_tmp)
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    result = subprocess.run(
        [_console_script(), *case.argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=_HANG_GUARD_S,
        check=False,
    )
    _check_refusal(
        case, result.returncode, result.stdout, result.stderr, before, _tree(cwd), ray_tmp
    )
