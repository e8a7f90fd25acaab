"""The schema of a YAML space file (pydantic), and its errors as one line each.

What a file may contain, key by key and per distribution; the checks that need several keys at
once, or the trainer's config keys, are :mod:`tauray_spaces.checker`'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tauray_spaces.config_keys import normalize_key, same_scalar
from tauray_spaces.parameters import DISTRIBUTIONS
from tauray_spaces.words import did_you_mean, short
from tauray_trainers.config import Method

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    kind = "mapping" if isinstance(value, Mapping) else type(value).__name__
    raise ValueError(f"must be a string, number, boolean or null, not a {kind}")


Scalar = Annotated[Any, AfterValidator(_scalar)]


def _scalars(value: Any) -> Any:
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty list can never hold; give at least one value")
        return [_scalar(v) for v in value]
    return _scalar(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _ObjectiveModel(_Strict):
    metric: str
    mode: Literal["max", "min"]


class _Parameter(_Strict):
    key: str
    when: dict[str, Annotated[Any, AfterValidator(_scalars)]] = {}
    help: str = ""


def _check_range(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite, got low={low}, high={high}")
    if low >= high:
        raise ValueError(
            f"low ({low:g}) must be < high ({high:g}); for a single value use "
            "distribution: constant"
        )


class _Uniform(_Parameter):
    distribution: Literal["uniform"]
    low: float
    high: float
    step: float | None = None

    @model_validator(mode="after")
    def _valid(self) -> _Uniform:
        _check_range(self.low, self.high)
        if self.step is not None:
            if not self.step > 0:
                raise ValueError(f"step must be > 0, got {self.step:g}")
            count = (self.high - self.low) / self.step
            if abs(count - round(count)) > 1e-9 * max(1.0, count):
                raise ValueError(
                    f"high - low ({self.high - self.low:g}) must be a multiple of step "
                    f"({self.step:g})"
                )
        return self


class _LogUniform(_Parameter):
    distribution: Literal["loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _valid(self) -> _LogUniform:
        if not self.low > 0:
            raise ValueError(f"loguniform needs low > 0, got low={self.low:g}")
        _check_range(self.low, self.high)
        return self


class _Int(_Parameter):
    distribution: Literal["int"]
    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _valid(self) -> _Int:
        _check_range(self.low, self.high)
        if self.step < 1:
            raise ValueError(f"step must be an integer >= 1, got {self.step}")
        if (self.high - self.low) % self.step:
            raise ValueError(
                f"high - low ({self.high - self.low}) must be a multiple of step ({self.step})"
            )
        if self.log and self.step != 1:
            raise ValueError("log: true needs step 1 (Optuna cannot combine them)")
        if self.log and self.low < 1:
            raise ValueError(f"log: true needs low >= 1, got low={self.low}")
        return self


class _Choice(_Parameter):
    distribution: Literal["choice"]
    choices: list[Scalar]

    @model_validator(mode="after")
    def _valid(self) -> _Choice:
        if not self.choices:
            raise ValueError("choices is empty; give at least one value")
        for index, choice in enumerate(self.choices):
            if any(same_scalar(choice, other) for other in self.choices[:index]):
                raise ValueError(f"choices lists {choice!r} twice")
        return self


class _Constant(_Parameter):
    distribution: Literal["constant"]
    value: Scalar


class _Tied(_Parameter):
    distribution: Literal["tied"]
    to: str
    value: float
    reference_batch_size: int
    margin: float = 1.0

    @model_validator(mode="after")
    def _valid(self) -> _Tied:
        if not (self.value > 0 and math.isfinite(self.value)):
            raise ValueError(f"value (τ at reference_batch_size) must be > 0, got {self.value}")
        if self.reference_batch_size < 2:
            raise ValueError(f"reference_batch_size must be >= 2, got {self.reference_batch_size}")
        if not (self.margin > 0 and math.isfinite(self.margin)):
            raise ValueError(f"margin must be > 0, got {self.margin}")
        return self


_MEMBERS: dict[str, type[_Parameter]] = {
    "uniform": _Uniform,
    "loguniform": _LogUniform,
    "int": _Int,
    "choice": _Choice,
    "constant": _Constant,
    "tied": _Tied,
}
_ParameterModel = Annotated[
    Union[_Uniform, _LogUniform, _Int, _Choice, _Constant, _Tied],  # noqa: UP007
    Field(discriminator="distribution"),
]


class SpaceModel(_Strict):
    name: str
    description: str = ""
    method: Method
    objective: list[_ObjectiveModel] | None = None
    fixed: dict[str, Any] = {}
    parameters: list[_ParameterModel]
    points_to_evaluate: list[dict[str, Any]] = []

    @field_validator("objective", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return [value]
        if value is not None and not isinstance(value, list):
            raise ValueError(
                f"{short(value)} is not an objective; write {{metric: val/knn_top1, mode: max}} "
                "or a list of such mappings"
            )
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid name; use letters, digits, '-', '_' and '.', "
                "starting with a letter or digit"
            )
        return value


def _where(loc: Sequence[Any], raw: Any) -> str:
    """A readable location such as ``parameters[2] (temperature/value).low``."""
    text = ""
    node = raw
    index = 0
    while index < len(loc):
        part = loc[index]
        if isinstance(part, int):
            if isinstance(node, Mapping) and part == 0:  # objective given as one mapping
                index += 1
                continue
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            if text.startswith("parameters") and isinstance(node, Mapping):
                if isinstance(node.get("key"), str):
                    text += f" ({normalize_key(node['key'])})"
                if index + 1 < len(loc) and loc[index + 1] == node.get("distribution"):
                    index += 1  # skip the discriminated union's tag
        else:
            text += ("." if text else "") + str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
        index += 1
    return text


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    if not loc:
        return SpaceModel
    if loc[0] == "objective":
        return _ObjectiveModel
    if loc[0] == "parameters" and len(loc) >= 3 and loc[2] in _MEMBERS:
        return _MEMBERS[str(loc[2])]
    return None


def _one_line(error: ValidationError, raw: Any) -> str:
    """The first problem pydantic found, as one line naming where it is and what is allowed."""
    errors = error.errors()
    # A misspelt key also makes the real one "missing": report the unknown key, it explains both.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    kind = first["type"]
    ctx = first.get("ctx") or {}
    message = str(first["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        where = _where(loc[:-1], raw)
        model = _model_at(loc[:-1])
        fields = [str(f) for f in model.model_fields] if model else []
        first, last = ["key", "distribution"], ["when", "help"]
        allowed = [f for f in first if f in fields]
        allowed += [f for f in fields if f not in first + last] + [f for f in last if f in fields]
        text = f"unknown key {loc[-1]!r}; allowed: {', '.join(allowed)}"
        text += did_you_mean(str(loc[-1]), allowed)
        return f"{where}: {text}" if where else text
    if kind == "missing":
        where = _where(loc[:-1], raw)
        text = f"missing required key {loc[-1]!r}"
        return f"{where}: {text}" if where else text
    where = _where(loc, raw) or "<file>"
    if kind == "union_tag_invalid":
        return (
            f"{where}: distribution {ctx.get('tag')!r} is not allowed; allowed: "
            f"{', '.join(DISTRIBUTIONS)}" + did_you_mean(str(ctx.get("tag")), DISTRIBUTIONS)
        )
    if kind == "union_tag_not_found":
        return f"{where}: missing key 'distribution' (one of {', '.join(DISTRIBUTIONS)})"
    if kind == "literal_error":
        return f"{where}={short(first.get('input'))} is not allowed; allowed: {ctx['expected']}"
    if kind == "value_error":
        return f"{where}: {message}"
    return f"{where}={short(first.get('input'))}: {message}"


def validate_file(data: Mapping[str, Any]) -> SpaceModel:
    """Check a parsed space file against the schema.

    Raises:
        ValueError: one line naming the key and what is allowed.
    """
    try:
        return SpaceModel.model_validate(dict(data))
    except ValidationError as error:
        raise ValueError(_one_line(error, data)) from None
