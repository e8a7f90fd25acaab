"""The YAML search-space format: load a file, validate it, and make a :class:`SearchSpace`.

A space file is a mapping (the built-ins in ``tauray_spaces/builtin/`` are examples)::

    name: my-simclr-space            # letters, digits, - _ .
    description: What it searches and why.
    method: simclr                   # simclr | clip | dino
    objective: {metric: val/knn_top1, mode: max}   # optional (default per method);
                                     # a list of them makes a multi-objective sweep
    fixed:                           # nested training settings every trial gets
      epochs: 6
      data: {name: digits-cluttered}
    parameters:
      - key: temperature/mode        # a training config key, with / or . between sections
        distribution: choice         # uniform | loguniform | int | choice | constant | tied
        choices: [fixed, learnable]
        help: What it does and how to tune it.
      - key: temperature/value
        distribution: loguniform     # uniform/loguniform: low, high (uniform: optional step)
        low: 0.02                    # int: low, high, optional step and log
        high: 1.0                    # choice: choices; constant: value
        when: {temperature/mode: fixed}   # sampled only if every entry holds; a list = any of
      - key: temperature/lr_multiplier
        distribution: loguniform
        low: 0.1
        high: 10.0
        when: {temperature/mode: [learnable]}
    points_to_evaluate:              # optional baselines run first; left-out keys are sampled
      - {temperature/mode: fixed, temperature/value: 0.1}

``tied`` computes a temperature from a batch-size parameter instead of sampling it (``to``,
``value`` at ``reference_batch_size``, ``margin``; see
:func:`tauray_spaces.space.tied_temperature`).
Sampled values and constants override ``fixed``. Every mistake is a ``ValueError`` with one line
that names the file, the key and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tauray_spaces.config_keys import (
    BATCH_SIZE_KEYS,
    CONFIG_KEYS,
    DEFAULT_OBJECTIVES,
    KNOWN_METRICS,
    METHOD_ONLY_KEYS,
    SECTIONS,
    TIEABLE_KEYS,
    _same_scalar,
    flatten,
    keys_in_section,
    normalize_key,
    unflatten,
)
from tauray_spaces.space import (
    DISTRIBUTIONS,
    PREFIX,
    Condition,
    Objective,
    ParameterSpec,
    SearchSpace,
    tied_temperature,
    trial_name,
)

OBJECTIVE_METRICS: tuple[str, ...] = tuple(m for m in KNOWN_METRICS if "/" in m)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---- YAML reading ---------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that reads ``1e-4`` as a float and rejects duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, where 1e-4 (no dot) is a string. Copy the resolver table before
# extending it: add_implicit_resolver would otherwise append to SafeLoader's shared lists.
_Loader.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with :class:`_Loader`.

    Raises:
        ValueError: one line with the source, line, column and problem.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader derives from SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(error, yaml.constructor.ConstructorError):
            raise ValueError(f"{source}: {problem}{where}") from None
        raise ValueError(f"{source}: YAML syntax error{where}: {problem}") from None


# ---- the schema (pydantic) ------------------------------------------------------------------


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
            if any(_same_scalar(choice, other) for other in self.choices[:index]):
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


class _SpaceModel(_Strict):
    name: str
    description: str = ""
    method: Literal["simclr", "clip", "dino"]
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
                f"{_short(value)} is not an objective; write {{metric: val/knn_top1, mode: max}} "
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


# ---- turning pydantic's errors into one line ------------------------------------------------


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
        return _SpaceModel
    if loc[0] == "objective":
        return _ObjectiveModel
    if loc[0] == "parameters" and len(loc) >= 3 and loc[2] in _MEMBERS:
        return _MEMBERS[str(loc[2])]
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_line(error: ValidationError, raw: Any) -> str:
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
        text += _suggest(str(loc[-1]), allowed)
        return f"{where}: {text}" if where else text
    if kind == "missing":
        where = _where(loc[:-1], raw)
        text = f"missing required key {loc[-1]!r}"
        return f"{where}: {text}" if where else text
    where = _where(loc, raw) or "<file>"
    if kind == "union_tag_invalid":
        return (
            f"{where}: distribution {ctx.get('tag')!r} is not allowed; allowed: "
            f"{', '.join(DISTRIBUTIONS)}" + _suggest(str(ctx.get("tag")), DISTRIBUTIONS)
        )
    if kind == "union_tag_not_found":
        return f"{where}: missing key 'distribution' (one of {', '.join(DISTRIBUTIONS)})"
    if kind == "literal_error":
        return f"{where}={_short(first.get('input'))} is not allowed; allowed: {ctx['expected']}"
    if kind == "value_error":
        return f"{where}: {message}"
    return f"{where}={_short(first.get('input'))}: {message}"


# ---- semantic checks ------------------------------------------------------------------------


def _key_problem(key: str) -> str:
    """Why ``key`` (normalised) is not a config key, with what is allowed there."""
    parts = key.split("/")
    if len(parts) > 1 and parts[0] in SECTIONS:
        section = parts[0]
        options = keys_in_section(section)
        hint = _suggest(parts[-1], options)
        return f"keys under {section}: {', '.join(options)}{hint}"
    top = keys_in_section("")
    return f"top-level keys and sections: {', '.join(top)}" + _suggest(key, list(CONFIG_KEYS))


def _flat_settings(tree: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Flatten nested settings into config keys, checking every key and value."""
    flat: dict[str, Any] = {}
    for path, value in flatten(tree).items():
        key = normalize_key(path)
        label = f"{where}.{key.replace('/', '.')}"
        if key in CONFIG_KEYS:
            spec = CONFIG_KEYS[key]
            if not spec.accepts(value):
                raise ValueError(
                    f"{label}={_short(value)} is not allowed; {key} takes {spec.describe()}"
                )
            flat[key] = value
            continue
        if key in SECTIONS:
            raise ValueError(
                f"{label} is a section (keys: {', '.join(keys_in_section(key))}), not a value"
            )
        parent = next((k for k in CONFIG_KEYS if key.startswith(k + "/")), None)
        if parent is not None:
            raise ValueError(f"{where}.{parent.replace('/', '.')} is a value, not a section")
        raise ValueError(f"{label}: unknown training config key; {_key_problem(key)}")
    return flat


def _possible(spec: ParameterSpec, value: Any) -> bool:
    """Whether parameter ``spec`` can take ``value`` (for conditions and baselines)."""
    if spec.distribution == "choice":
        return any(_same_scalar(value, choice) for choice in spec.choices or ())
    if spec.distribution == "constant":
        return _same_scalar(value, spec.value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    low, high = float(spec.low or 0), float(spec.high or 0)
    if not low <= value <= high:
        return False
    if spec.distribution == "int":
        return isinstance(value, int) and (value - int(low)) % int(spec.step or 1) == 0
    if spec.step is not None:
        count = (value - low) / spec.step
        return abs(count - round(count)) <= 1e-9 * max(1.0, count)
    return True


def _values_of(spec: ParameterSpec) -> str:
    if spec.distribution in ("choice", "constant"):
        return spec.range_text().removeprefix("= ")
    return f"values in {spec.range_text()}"


def _numeric_range(values: Sequence[Any]) -> tuple[float, float] | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return (min(numbers), max(numbers)) if numbers else None


class _Checker:
    """Cross-parameter validation of a schema-valid space; builds the :class:`SearchSpace`."""

    def __init__(self, model: _SpaceModel, raw: Mapping[str, Any], source: str) -> None:
        self.model = model
        self.raw = raw
        self.source = source

    def label(self, index: int, key: str) -> str:
        return f"parameters[{index}] ({key})"

    def build(self) -> SearchSpace:
        model = self.model
        objectives = self.objectives()
        fixed = _flat_settings(model.fixed, "fixed")
        if "method" in fixed and fixed["method"] != model.method:
            raise ValueError(
                f"fixed.method={fixed['method']!r} contradicts method={model.method!r}; "
                "remove fixed.method (the space's method is used)"
            )
        fixed["method"] = model.method
        specs = self.parameters()
        by_key = {spec.key: spec for spec in specs}
        self.check_conditions(specs, by_key)
        ordered = self.order(specs, by_key)
        self.check_combinations(ordered, by_key, fixed)
        points = tuple(self.point(i, p, by_key) for i, p in enumerate(model.points_to_evaluate))
        return SearchSpace(
            name=model.name,
            description=" ".join(model.description.split()),
            method=model.method,
            objectives=objectives,
            fixed=unflatten(dict(sorted(fixed.items(), key=lambda kv: kv[0] != "method"))),
            points_to_evaluate=points,
            parameter_specs=tuple(ordered),
            source=self.source,
        )

    def objectives(self) -> tuple[Objective, ...]:
        given = self.model.objective
        if given is None:
            metric, mode = DEFAULT_OBJECTIVES[self.model.method]
            return (Objective(metric, mode),)  # type: ignore[arg-type]
        if not given:
            raise ValueError("objective is an empty list; give at least one {metric, mode}")
        seen: set[str] = set()
        for index, objective in enumerate(given):
            where = "objective" if len(given) == 1 else f"objective[{index}]"
            if objective.metric not in OBJECTIVE_METRICS:
                raise ValueError(
                    f"{where}.metric={objective.metric!r} is not a metric the trainer reports; "
                    f"allowed: {', '.join(OBJECTIVE_METRICS)}"
                    + _suggest(objective.metric, OBJECTIVE_METRICS)
                )
            if objective.metric in seen:
                raise ValueError(f"{where}.metric={objective.metric!r} is listed twice")
            seen.add(objective.metric)
        return tuple(Objective(o.metric, o.mode) for o in given)

    def parameters(self) -> list[ParameterSpec]:
        method = self.model.method
        specs: list[ParameterSpec] = []
        first_index: dict[str, int] = {}
        for index, item in enumerate(self.model.parameters):
            key = normalize_key(item.key)
            label = self.label(index, key)
            if key == "method":
                raise ValueError(
                    f"{label}: the method is the space's top-level `method`, not a parameter"
                )
            if key not in CONFIG_KEYS:
                raise ValueError(
                    f"parameters[{index}].key={item.key!r} is not a training config key; "
                    + _key_problem(key)
                )
            if key in first_index:
                raise ValueError(
                    f"{label}: duplicate parameter; parameters[{first_index[key]}] already sets "
                    f"{key} (one parameter per key; a `when` may list several values)"
                )
            first_index[key] = index
            only = METHOD_ONLY_KEYS.get(key)
            if only is not None and only != method:
                raise ValueError(
                    f"{label}: only the {only} method reads {key}, and this space's method is "
                    f"{method}; searching it would waste every trial"
                )
            specs.append(self.parameter(index, key, item))
        if not any(spec.sampled for spec in specs):
            raise ValueError(
                "parameters: none is sampled (the list is empty or holds only constant and "
                "tied ones); a space needs a uniform, loguniform, int or choice parameter"
            )
        return specs

    def parameter(self, index: int, key: str, item: Any) -> ParameterSpec:
        label = self.label(index, key)
        spec = CONFIG_KEYS[key]
        conditions = []
        for name, values in item.when.items():
            values = tuple(values) if isinstance(values, list) else (values,)
            conditions.append(Condition(normalize_key(name), values))
        common: dict[str, Any] = {
            "key": key,
            "conditions": tuple(conditions),
            "help": " ".join(item.help.split()),
        }
        kind = item.distribution
        if kind in ("uniform", "loguniform", "int"):
            if spec.kind in ("literal", "str", "bool"):
                raise ValueError(
                    f"{label}: {key} takes {spec.describe()}; use distribution choice or constant"
                )
            if spec.kind == "int" and kind != "int":
                raise ValueError(
                    f"{label}: {key} takes integers; use distribution int (or choice), not {kind}"
                )
            for end in ("low", "high"):
                number = getattr(item, end)
                if not spec.within_bounds(number):
                    raise ValueError(
                        f"{label}.{end}={number:g} is out of range; {key} takes {spec.describe()}"
                    )
            return ParameterSpec(
                distribution=kind,
                low=item.low,
                high=item.high,
                step=getattr(item, "step", None),
                log=kind == "loguniform" or bool(getattr(item, "log", False)),
                **common,
            )
        if kind == "choice":
            for number, choice in enumerate(item.choices):
                if not spec.accepts(choice):
                    raise ValueError(
                        f"{label}.choices[{number}]={_short(choice)} is not allowed; {key} takes "
                        f"{spec.describe()}"
                    )
            return ParameterSpec(distribution="choice", choices=tuple(item.choices), **common)
        if kind == "constant":
            if not spec.accepts(item.value):
                raise ValueError(
                    f"{label}.value={_short(item.value)} is not allowed; {key} takes "
                    f"{spec.describe()}"
                )
            return ParameterSpec(distribution="constant", value=item.value, **common)
        if key not in TIEABLE_KEYS:
            raise ValueError(
                f"{label}: distribution tied sets a contrastive temperature; allowed keys: "
                f"{', '.join(TIEABLE_KEYS)}"
            )
        return ParameterSpec(
            distribution="tied",
            value=item.value,
            tied_to=normalize_key(item.to),
            reference_batch_size=item.reference_batch_size,
            margin=item.margin,
            **common,
        )

    def check_conditions(
        self, specs: list[ParameterSpec], by_key: dict[str, ParameterSpec]
    ) -> None:
        names = ", ".join(by_key)
        for index, spec in enumerate(specs):
            label = self.label(index, spec.key)
            seen: set[str] = set()
            for condition in spec.conditions:
                parent = by_key.get(condition.parameter)
                if condition.parameter in seen:
                    raise ValueError(f"{label}.when names {condition.parameter} twice")
                seen.add(condition.parameter)
                if condition.parameter == spec.key:
                    raise ValueError(f"{label}.when: condition cycle: {spec.key} depends on itself")
                if parent is None:
                    raise ValueError(
                        f"{label}.when names {condition.parameter!r}, which is not a parameter of "
                        f"this space; parameters: {names}"
                        + _suggest(condition.parameter, list(by_key))
                    )
                if parent.distribution not in ("choice", "constant", "int"):
                    raise ValueError(
                        f"{label}.when tests {parent.key}, a {parent.distribution} parameter; "
                        "conditions can only test choice, int or constant parameters"
                    )
                for value in condition.values:
                    if not _possible(parent, value):
                        raise ValueError(
                            f"{label}.when: {parent.key} == {_short(value)} can never hold; "
                            f"{parent.key} takes {_values_of(parent)}"
                        )
            if spec.distribution == "tied":
                target = by_key.get(spec.tied_to or "")
                if spec.tied_to not in BATCH_SIZE_KEYS:
                    raise ValueError(
                        f"{label}.to={spec.tied_to!r} is not allowed; a tied temperature follows "
                        f"{', '.join(BATCH_SIZE_KEYS)}"
                    )
                if target is None or target.distribution not in ("int", "choice", "constant"):
                    raise ValueError(
                        f"{label}.to: {spec.tied_to} must be an int, choice or constant parameter "
                        "of this space"
                    )
                self.check_tied(label, spec, target)

    def check_tied(self, label: str, spec: ParameterSpec, target: ParameterSpec) -> None:
        if target.distribution == "choice":
            sizes = list(target.choices or ())
        elif target.distribution == "constant":
            sizes = [target.value]
        else:
            sizes = [target.low, target.high]
        key_spec = CONFIG_KEYS[spec.key]
        for size in sizes:
            if not isinstance(size, int) or isinstance(size, bool):
                raise ValueError(f"{label}: {target.key} takes {size!r}, not a batch size")
            try:
                value = tied_temperature(
                    size,
                    float(spec.value),
                    int(spec.reference_batch_size or 0),
                    float(spec.margin or 0),
                )
            except ValueError as error:
                raise ValueError(f"{label}: {error}") from None
            if not key_spec.accepts(value):
                raise ValueError(
                    f"{label}: tied τ for {target.key}={size} is {value:g}, but {spec.key} takes "
                    f"{key_spec.describe()}"
                )

    def order(
        self, specs: list[ParameterSpec], by_key: dict[str, ParameterSpec]
    ) -> list[ParameterSpec]:
        """Parents before children, otherwise file order; a cycle is an error."""
        parents = {
            spec.key: [c.parameter for c in spec.conditions]
            + ([spec.tied_to] if spec.tied_to else [])
            for spec in specs
        }
        ordered: list[ParameterSpec] = []
        state: dict[str, int] = {}  # 1: visiting, 2: done

        def visit(key: str, path: list[str]) -> None:
            if state.get(key) == 2:
                return
            if state.get(key) == 1:
                cycle = [*path[path.index(key) :], key]
                raise ValueError(
                    "condition cycle: " + " -> ".join(cycle) + " (each `when` or `to` names a "
                    "parameter that must be sampled first)"
                )
            state[key] = 1
            for parent in parents[key]:
                visit(parent, [*path, key])
            state[key] = 2
            ordered.append(by_key[key])

        for spec in specs:
            visit(spec.key, [])
        return ordered

    def check_combinations(
        self, specs: list[ParameterSpec], by_key: dict[str, ParameterSpec], fixed: dict[str, Any]
    ) -> None:
        index_of = {normalize_key(p.key): i for i, p in enumerate(self.model.parameters)}

        def always(spec: ParameterSpec) -> bool:
            if spec.conditions:
                return False
            if spec.distribution == "tied":
                target = by_key.get(spec.tied_to or "")
                return target is not None and always(target)
            return True

        for spec in specs:
            if spec.key in fixed and always(spec):
                raise ValueError(
                    f"{self.label(index_of[spec.key], spec.key)}: {spec.key} is also set in fixed, "
                    "where an unconditional parameter always overrides it; remove one of them"
                )
        per_worker = by_key.get("batch_size_per_worker")
        global_size = by_key.get("global_batch_size")
        if per_worker is not None and (
            fixed.get("global_batch_size") is not None
            or (global_size is not None and always(global_size))
        ):
            raise ValueError(
                f"{self.label(index_of['batch_size_per_worker'], 'batch_size_per_worker')}: has "
                "no effect because global_batch_size is always set (the trainer divides it by "
                "the worker count); search one of the two"
            )
        low_range = self.value_range("temperature/min", by_key, fixed)
        high_range = self.value_range("temperature/max", by_key, fixed)
        if ("temperature/min" in by_key or "temperature/max" in by_key) and low_range[
            1
        ] >= high_range[0]:
            raise ValueError(
                f"temperature/min can reach {low_range[1]:g} while temperature/max can be as low "
                f"as {high_range[0]:g}; the trainer requires temperature/min < temperature/max, "
                "so make their ranges disjoint"
            )

    def value_range(
        self, key: str, by_key: dict[str, ParameterSpec], fixed: dict[str, Any]
    ) -> tuple[float, float]:
        fallback = fixed.get(key, CONFIG_KEYS[key].default)
        spec = by_key.get(key)
        values: list[Any] = [fallback]
        if spec is not None:
            if spec.distribution in ("uniform", "loguniform", "int"):
                values = [spec.low, spec.high] + ([fallback] if spec.conditions else [])
            elif spec.distribution == "choice":
                values = list(spec.choices or ()) + ([fallback] if spec.conditions else [])
            elif spec.distribution == "constant":
                values = [spec.value] + ([fallback] if spec.conditions else [])
            else:
                target = by_key[spec.tied_to or ""]
                sizes = (
                    list(target.choices or ())
                    if target.distribution == "choice"
                    else [target.value]
                    if target.distribution == "constant"
                    else [target.low, target.high]
                )
                values = [
                    tied_temperature(
                        int(size),
                        float(spec.value),
                        int(spec.reference_batch_size or 0),
                        float(spec.margin or 0),
                    )
                    for size in sizes
                ] + [fallback]
        found = _numeric_range(values)
        return found if found is not None else (float("-inf"), float("inf"))

    def point(
        self, index: int, point: Mapping[str, Any], by_key: dict[str, ParameterSpec]
    ) -> dict[str, Any]:
        where = f"points_to_evaluate[{index}]"
        if not point:
            raise ValueError(f"{where} is empty; give parameter values (left-out ones are sampled)")
        values: dict[str, Any] = {}
        for path, value in flatten(point).items():
            key = normalize_key(path)
            spec = by_key.get(key)
            if spec is None:
                raise ValueError(
                    f"{where}.{path}: not a parameter of this space; parameters: "
                    f"{', '.join(by_key)}" + _suggest(key, list(by_key))
                )
            if key in values:
                raise ValueError(f"{where} sets {key} twice")
            if not spec.sampled:
                raise ValueError(
                    f"{where}.{path}: {key} is a {spec.distribution} parameter (computed, not "
                    "sampled); leave it out"
                )
            if not _possible(spec, value):
                raise ValueError(
                    f"{where}.{path}={_short(value)} is outside the parameter; {key} takes "
                    f"{_values_of(spec)}"
                )
            values[key] = value
        for key in values:
            for condition in by_key[key].conditions:
                parent = by_key[condition.parameter]
                known = (
                    values.get(condition.parameter)
                    if condition.parameter in values
                    else parent.value
                    if parent.distribution == "constant"
                    else None
                )
                if known is not None and not condition.holds({condition.parameter: known}):
                    raise ValueError(
                        f"{where} sets {key}, but its condition {condition} is false there "
                        f"({condition.parameter} = {known}); drop {key} from this point"
                    )
        return {trial_name(key): value for key, value in values.items()}


# ---- entry points ---------------------------------------------------------------------------


def space_from_dict(data: Any, source: str = "<dict>") -> SearchSpace:
    """Validate a parsed space file (a mapping) and build the :class:`SearchSpace`.

    Raises:
        ValueError: one line naming ``source``, the key and what is allowed.
    """
    if not isinstance(data, Mapping):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ValueError(
            f"{source}: a space file must be a mapping with keys name, method, parameters "
            f"(and description, objective, fixed, points_to_evaluate); got {got}"
        )
    bad_keys = [key for key in data if not isinstance(key, str)]
    if bad_keys:
        raise ValueError(f"{source}: keys must be strings, got {bad_keys[0]!r}")
    try:
        model = _SpaceModel.model_validate(dict(data))
    except ValidationError as error:
        raise ValueError(f"{source}: {_one_line(error, data)}") from None
    try:
        return _Checker(model, data, source).build()
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def load_space_text(text: str, source: str = "<string>") -> SearchSpace:
    """Parse and validate a space from YAML text.

    Raises:
        ValueError: one line naming ``source``, the key and what is allowed.
    """
    return space_from_dict(parse_yaml(text, source), source)


def load_space_file(path: str | Path) -> SearchSpace:
    """Load a YAML search space from ``path`` and validate it.

    Raises:
        ValueError: the file is missing or unreadable, is not YAML, or breaks a rule of the
            format; one line naming the file, the key and what is allowed.
    """
    file = Path(path)
    if not file.exists():
        raise ValueError(f"space file {str(path)!r} not found")
    if not file.is_file():
        raise ValueError(f"space file {str(path)!r} is not a file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"space file {str(path)!r} cannot be read: {error}") from None
    return load_space_text(text, str(path))


def _parse_overrides(overrides: Mapping[str, Any] | Sequence[str]) -> list[tuple[str, Any]]:
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for entry in overrides:
            key, sep, text = str(entry).partition("=")
            if not sep or not key.strip():
                raise ValueError(f"override {entry!r} is not of the form key=value (e.g. epochs=5)")
            items.append(
                (key.strip(), parse_yaml(text, f"override {entry!r}") if text.strip() else "")
            )
    pairs: list[tuple[str, Any]] = []
    for key, value in items:
        if isinstance(value, Mapping):
            pairs.extend(
                (normalize_key(f"{key}/{sub}"), sub_value)
                for sub, sub_value in flatten(value).items()
            )
        else:
            pairs.append((normalize_key(key), value))
    for key, value in pairs:
        if key not in CONFIG_KEYS:
            raise ValueError(f"override {key!r}: unknown training config key; {_key_problem(key)}")
        if not CONFIG_KEYS[key].accepts(value):
            raise ValueError(
                f"override {key}={_short(value)} is not allowed; {key} takes "
                f"{CONFIG_KEYS[key].describe()}"
            )
    return pairs


def override_space(space: SearchSpace, overrides: Mapping[str, Any] | Sequence[str]) -> SearchSpace:
    """See :meth:`SearchSpace.with_overrides`."""
    pairs = _parse_overrides(overrides)
    data = space.to_dict()
    fixed: dict[str, Any] = flatten(data.get("fixed", {}))
    parameters: list[dict[str, Any]] = data["parameters"]
    pinned: dict[str, Any] = {}
    for key, value in pairs:
        if key == "method":
            if value != space.method:
                raise ValueError(
                    f"override method={value!r}: space {space.name!r} searches {space.method}; "
                    "pick a space for that method (tauray spaces list)"
                )
            continue
        entry = next((p for p in parameters if p["key"] == key), None)
        if entry is None:
            fixed[key] = value
            continue
        pinned[key] = value
        replacement = {"key": key, "distribution": "constant", "value": value}
        for extra in ("when", "help"):
            if extra in entry:
                replacement[extra] = entry[extra]
        parameters[parameters.index(entry)] = replacement
    changed = True
    while changed:  # drop parameters whose conditions can no longer hold
        changed = False
        present = {p["key"]: p for p in parameters}
        for entry in list(parameters):
            for name, wanted in entry.get("when", {}).items():
                parent = present.get(name)
                options = wanted if isinstance(wanted, list) else [wanted]
                if parent is None or (
                    parent["distribution"] == "constant"
                    and not any(_same_scalar(parent["value"], o) for o in options)
                ):
                    parameters.remove(entry)
                    changed = True
                    break
            if entry in parameters and entry.get("distribution") == "tied":
                if entry["to"] not in present:
                    parameters.remove(entry)
                    changed = True
    for entry in parameters:  # a pinned parent takes one value: narrow its conditions to it
        for name, wanted in entry.get("when", {}).items():
            if name in pinned and isinstance(wanted, list):
                entry["when"][name] = next(o for o in wanted if _same_scalar(pinned[name], o))
    keep = {p["key"]: p for p in parameters if p["distribution"] not in ("constant", "tied")}
    points = []
    for point in data.get("points_to_evaluate", []):
        kept = {key: value for key, value in point.items() if key in keep}
        consistent = {
            key: value
            for key, value in kept.items()
            if all(
                name not in pinned
                or any(
                    _same_scalar(pinned[name], o)
                    for o in (wanted if isinstance(wanted, list) else [wanted])
                )
                for name, wanted in keep[key].get("when", {}).items()
            )
        }
        if consistent and consistent not in points:
            points.append(consistent)
    data["fixed"] = unflatten(fixed)
    data["points_to_evaluate"] = points
    if not keep:
        raise ValueError(
            f"the overrides {', '.join(k for k, _ in pairs)} pin every parameter of space "
            f"{space.name!r}; nothing is left to search"
        )
    return space_from_dict(data, source=space.source or space.name)


__all__ = [
    "PREFIX",
    "load_space_file",
    "load_space_text",
    "override_space",
    "parse_yaml",
    "space_from_dict",
]
