"""The checks of a space file that need several keys at once, or the trainer's config keys.

:func:`check_space` takes a parsed file (a mapping), validates it against the schema
(:mod:`tauray_spaces.file_model`), then checks what the schema alone cannot: every key is a
training config key and every value one it accepts, conditions name earlier parameters and
values they can take, no condition cycles, ``tied`` temperatures stay in range, baselines lie
inside their parameters. It hands the validated fields to the constructor it is given (the
:class:`~tauray_spaces.space.SearchSpace`, whose module imports this one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from tauray_spaces.config_keys import (
    BATCH_SIZE_KEYS,
    CONFIG_KEYS,
    DEFAULT_OBJECTIVES,
    METHOD_ONLY_KEYS,
    SECTIONS,
    TIEABLE_KEYS,
    key_problem,
    keys_in_section,
    normalize_key,
    same_scalar,
)
from tauray_spaces.file_model import SpaceModel, validate_file
from tauray_spaces.parameters import (
    Condition,
    Objective,
    ParameterSpec,
    check_objectives,
    tied_temperature,
    trial_name,
)
from tauray_spaces.words import did_you_mean, short
from tauray_trainers.config import flatten, unflatten

T = TypeVar("T")


def check_space(data: Any, make: Callable[..., T], source: str = "<dict>") -> T:
    """Validate a parsed space file (a mapping) and build the space: ``make(name=...,
    description=..., method=..., objectives=..., fixed=..., points_to_evaluate=...,
    parameter_specs=..., source=...)``.

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
        return make(**_Checker(validate_file(data), source).fields())
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def _flat_settings(tree: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Flatten nested settings into config keys, checking every key and value."""
    flat: dict[str, Any] = {}
    for path, value in flatten(tree, keep_empty=False).items():
        key = normalize_key(path)
        label = f"{where}.{key.replace('/', '.')}"
        if key in CONFIG_KEYS:
            spec = CONFIG_KEYS[key]
            if not spec.accepts(value):
                raise ValueError(
                    f"{label}={short(value)} is not allowed; {key} takes {spec.describe()}"
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
        raise ValueError(f"{label}: unknown training config key; {key_problem(key)}")
    return flat


def _possible(spec: ParameterSpec, value: Any) -> bool:
    """Whether parameter ``spec`` can take ``value`` (for conditions and baselines)."""
    if spec.distribution == "choice":
        return any(same_scalar(value, choice) for choice in spec.choices or ())
    if spec.distribution == "constant":
        return same_scalar(value, spec.value)
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
    """Cross-parameter validation of a schema-valid space; gives the space's fields."""

    def __init__(self, model: SpaceModel, source: str) -> None:
        self.model = model
        self.source = source

    def label(self, index: int, key: str) -> str:
        return f"parameters[{index}] ({key})"

    def fields(self) -> dict[str, Any]:
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
        return dict(
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
        objectives = [Objective(o.metric, o.mode) for o in given]
        return check_objectives(
            objectives,
            self.model.method,
            lambda index: "objective.metric" if len(given) == 1 else f"objective[{index}].metric",
        )

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
                    + key_problem(key)
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
                        f"{label}.choices[{number}]={short(choice)} is not allowed; {key} takes "
                        f"{spec.describe()}"
                    )
            return ParameterSpec(distribution="choice", choices=tuple(item.choices), **common)
        if kind == "constant":
            if not spec.accepts(item.value):
                raise ValueError(
                    f"{label}.value={short(item.value)} is not allowed; {key} takes "
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
                        + did_you_mean(condition.parameter, list(by_key))
                    )
                if parent.distribution not in ("choice", "constant", "int"):
                    raise ValueError(
                        f"{label}.when tests {parent.key}, a {parent.distribution} parameter; "
                        "conditions can only test choice, int or constant parameters"
                    )
                for value in condition.values:
                    if not _possible(parent, value):
                        raise ValueError(
                            f"{label}.when: {parent.key} == {short(value)} can never hold; "
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
        bounds = ("temperature/min", "temperature/max")
        if any(key in by_key or key in fixed for key in bounds) and low_range[1] >= high_range[0]:
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
        for path, value in flatten(point, keep_empty=False).items():
            key = normalize_key(path)
            spec = by_key.get(key)
            if spec is None:
                raise ValueError(
                    f"{where}.{path}: not a parameter of this space; parameters: "
                    f"{', '.join(by_key)}" + did_you_mean(key, list(by_key))
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
                    f"{where}.{path}={short(value)} is outside the parameter; {key} takes "
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
