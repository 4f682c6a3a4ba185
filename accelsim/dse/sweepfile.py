"""Sweep files -> validated :class:`~accelsim.dse.space.SweepSpec` s.

A sweep file (YAML, ``version: 1``) names a base hardware config, the models, the compression
recipes and the hardware fields to vary; see ``docs/sweeps.md``. Loading validates everything
once (unknown keys, unknown recipes, empty ranges, unknown hardware fields, malformed
constraints) and raises one :class:`AccelsimError` line naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from accelsim.dse.space import (
    METRICS,
    SHAPE_KEYS,
    UNCOMPRESSED,
    ModelSpec,
    RandomSpec,
    Recipe,
    SweepSpec,
    Value,
    Variant,
    flatten_dict,
    named_recipe,
    parse_constraint,
    sample_value,
)
from accelsim.errors import AccelsimError, did_you_mean, yaml_problem

SWEEP_VERSION = 1
TOP_KEYS = (
    "version", "name", "description", "hw", "models", "recipes", "variants", "grid", "random",
    "constraints", "accuracy_csv",
)
DISTRIBUTIONS = ("choice", "uniform", "loguniform")
DEFAULT_ACCURACY_CSV = "accuracy/results.csv"


def load_sweep(path: str | Path, hw_fields: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep file.

    ``hw_fields`` (flattened base config, ``{"array.rows": 64, ...}``) checks that every field the
    sweep varies exists; by default it comes from loading the sweep's base hardware config, which
    also validates each value the sweep can give a field.
    """
    path = Path(path)
    where = str(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - safe subclass
    except FileNotFoundError:
        raise AccelsimError(f"{where}: sweep file not found") from None
    except yaml.YAMLError as exc:
        raise AccelsimError(f"{where}: not valid YAML ({yaml_problem(exc)})") from None
    if not isinstance(raw, dict):
        raise AccelsimError(f"{where}: a sweep file is a mapping with keys {', '.join(TOP_KEYS)}")
    _check_keys(raw, TOP_KEYS, where, "")
    if raw.get("version") != SWEEP_VERSION:
        raise AccelsimError(
            f"{where}: version: {raw.get('version')!r} is not supported (allowed: {SWEEP_VERSION})"
        )
    if "hw" not in raw or not isinstance(raw["hw"], str):
        raise AccelsimError(f"{where}: hw: give the base hardware config as a path (string)")
    hw_path = (path.parent / raw["hw"]).resolve()
    models = _parse_models(raw.get("models"), where)
    variants = _parse_variants(raw.get("variants"), where)
    if variants and any(v.recipe for v in variants) and "recipes" in raw:
        raise AccelsimError(f"{where}: recipes: not allowed when variants set the recipe")
    recipes = _parse_recipes(raw.get("recipes", [UNCOMPRESSED]), where)
    grid = tuple(
        (field, _parse_values(spec, where, f"grid.{field}"))
        for field, spec in _mapping(raw.get("grid", {}), where, "grid").items()
    )
    random = _parse_random(raw.get("random"), where)
    constraints = tuple(
        parse_constraint(text, f"{where}: constraints[{i}]")
        for i, text in enumerate(_sequence(raw.get("constraints", []), where, "constraints"))
    )
    spec = SweepSpec(
        name=str(raw.get("name", path.stem)),
        path=path,
        hw_path=hw_path,
        models=models,
        recipes=recipes,
        variants=variants,
        grid=grid,
        random=random,
        constraints=constraints,
        accuracy_csv=(path.parent / str(raw.get("accuracy_csv", DEFAULT_ACCURACY_CSV))).resolve(),
        description=str(raw.get("description", "")),
    )
    _check_fields(spec, where, hw_fields)
    return spec


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that rejects a key given twice (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_keys(raw: Mapping[str, Any], allowed: Iterable[str], where: str, prefix: str) -> None:
    allowed = tuple(allowed)
    for key in raw:
        if key not in allowed:
            raise AccelsimError(
                f"{where}: {prefix}{key}: unknown key (allowed: {', '.join(allowed)})"
            )


def _mapping(raw: Any, where: str, field: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise AccelsimError(f"{where}: {field}: expected a mapping, got {raw!r}")
    return raw


def _sequence(raw: Any, where: str, field: str) -> list[Any]:
    if not isinstance(raw, list):
        raise AccelsimError(f"{where}: {field}: expected a list, got {raw!r}")
    return raw


def _parse_models(raw: Any, where: str) -> tuple[ModelSpec, ...]:
    items = _sequence(raw, where, "models") if raw is not None else []
    if not items:
        raise AccelsimError(f"{where}: models: give at least one model name")
    models = []
    for i, item in enumerate(items):
        field = f"models[{i}]"
        if isinstance(item, str):
            models.append(ModelSpec(item))
            continue
        item = _mapping(item, where, field)
        _check_keys(item, ("name", *SHAPE_KEYS), where, field + ".")
        if not isinstance(item.get("name"), str):
            raise AccelsimError(f"{where}: {field}.name: give the model name as a string")
        for key in SHAPE_KEYS:
            value = item.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise AccelsimError(f"{where}: {field}.{key}: {value!r} must be a positive number")
        models.append(ModelSpec(**item))
    return tuple(models)



def _parse_recipe(item: Any, where: str, field: str) -> Recipe:
    recipe = named_recipe(item) if isinstance(item, str) else None
    if recipe is None:
        from accelsim.compress.recipe import available_recipes

        known = [UNCOMPRESSED, *available_recipes()]
        raise AccelsimError(
            f"{where}: {field}: unknown recipe {item!r} (known: {', '.join(known)}; "
            "a recipe is a file experiments/recipes/NAME.yaml)"
        )
    return recipe


def _parse_recipes(raw: Any, where: str) -> tuple[Recipe, ...]:
    items = _sequence(raw, where, "recipes")
    if not items:
        raise AccelsimError(f"{where}: recipes: empty list (give at least one recipe)")
    recipes = tuple(_parse_recipe(item, where, f"recipes[{i}]") for i, item in enumerate(items))
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise AccelsimError(f"{where}: recipes: a recipe is listed twice ({', '.join(names)})")
    return recipes


def _parse_variants(raw: Any, where: str) -> tuple[Variant, ...]:
    if raw is None:
        return ()
    variants = []
    for name, item in _mapping(raw, where, "variants").items():
        field = f"variants.{name}"
        item = _mapping(item, where, field)
        _check_keys(item, ("recipe", "set"), where, field + ".")
        recipe = (
            _parse_recipe(item["recipe"], where, field + ".recipe") if "recipe" in item else None
        )
        overrides = _mapping(item.get("set", {}), where, field + ".set")
        for key, value in overrides.items():
            if not isinstance(value, int | float | str | bool):
                raise AccelsimError(f"{where}: {field}.set.{key}: {value!r} must be a scalar")
        variants.append(Variant(str(name), recipe, tuple(sorted(overrides.items()))))
    if not variants:
        raise AccelsimError(f"{where}: variants: empty mapping (give at least one variant)")
    with_recipe = {v.recipe is not None for v in variants}
    if len(with_recipe) > 1:
        raise AccelsimError(f"{where}: variants: either every variant sets a recipe or none does")
    return tuple(variants)


def _parse_values(spec: Any, where: str, field: str) -> tuple[Value, ...]:
    """A grid axis: a list of values or ``{range: [lo, hi], step: s}`` / ``factor: f``."""
    if isinstance(spec, list):
        values = tuple(spec)
    elif isinstance(spec, Mapping):
        _check_keys(spec, ("range", "step", "factor"), where, field + ".")
        bounds = spec.get("range")
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
        ):
            raise AccelsimError(f"{where}: {field}.range: give [low, high] numbers, got {bounds!r}")
        if ("step" in spec) == ("factor" in spec):
            raise AccelsimError(f"{where}: {field}: give exactly one of step, factor")
        values = _range_values(bounds[0], bounds[1], spec.get("step"), spec.get("factor"), where,
                               field)
    else:
        values = (spec,)
    if not values:
        raise AccelsimError(f"{where}: {field}: empty range (no values to sweep)")
    for value in values:
        if not isinstance(value, int | float | str | bool):
            raise AccelsimError(f"{where}: {field}: {value!r} must be a scalar")
    if len(set(values)) != len(values):
        raise AccelsimError(f"{where}: {field}: a value is listed twice {list(values)!r}")
    return values


def _range_values(
    low: float, high: float, step: Any, factor: Any, where: str, field: str
) -> tuple[Value, ...]:
    integer = all(isinstance(v, int) for v in (low, high, step or factor))
    values: list[Value] = []
    if step is not None:
        if not isinstance(step, int | float) or step <= 0:
            raise AccelsimError(f"{where}: {field}.step: {step!r} must be a positive number")
        count = math.floor((high - low) / step + 1e-9) + 1
        values = [low + i * step for i in range(max(count, 0))]
    else:
        if not isinstance(factor, int | float) or factor <= 1:
            raise AccelsimError(f"{where}: {field}.factor: {factor!r} must be a number > 1")
        if low <= 0:
            raise AccelsimError(f"{where}: {field}.range: a geometric range needs low > 0")
        value = low
        while value <= high * (1 + 1e-9):
            values.append(value)
            value *= factor
    if integer:
        return tuple(int(v) for v in values)
    return tuple(round(float(v), 12) for v in values)


def _parse_random(raw: Any, where: str) -> RandomSpec | None:
    if raw is None:
        return None
    raw = _mapping(raw, where, "random")
    _check_keys(raw, ("samples", "seed", "fields"), where, "random.")
    samples, seed = raw.get("samples"), raw.get("seed")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise AccelsimError(f"{where}: random.samples: {samples!r} must be an integer >= 1")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise AccelsimError(f"{where}: random.seed: {seed!r} must be an integer (explicit seeds)")
    fields = _mapping(raw.get("fields"), where, "random.fields")
    if not fields:
        raise AccelsimError(f"{where}: random.fields: empty mapping (nothing to sample)")
    for name, dist in fields.items():
        _check_distribution(dist, where, f"random.fields.{name}")
    return RandomSpec(samples, seed, tuple(fields.items()))


def _check_distribution(dist: Any, where: str, field: str) -> None:
    dist = _mapping(dist, where, field)
    kinds = [k for k in DISTRIBUTIONS if k in dist]
    if len(kinds) != 1:
        raise AccelsimError(
            f"{where}: {field}: give exactly one distribution of {', '.join(DISTRIBUTIONS)}"
        )
    _check_keys(dist, (*DISTRIBUTIONS, "integer", "multiple_of"), where, field + ".")
    args = dist[kinds[0]]
    if kinds[0] == "choice":
        if not isinstance(args, list) or not args:
            raise AccelsimError(f"{where}: {field}.choice: empty range (give a non-empty list)")
        return
    if (
        not isinstance(args, list)
        or len(args) != 2
        or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)
    ):
        raise AccelsimError(f"{where}: {field}.{kinds[0]}: give [low, high] numbers, got {args!r}")
    if args[0] > args[1]:
        raise AccelsimError(
            f"{where}: {field}.{kinds[0]}: empty range (low {args[0]} > high {args[1]})"
        )
    if kinds[0] == "loguniform" and args[0] <= 0:
        raise AccelsimError(f"{where}: {field}.loguniform: low must be > 0, got {args[0]}")
    multiple = dist.get("multiple_of", 1)
    if not isinstance(multiple, int) or multiple < 1:
        raise AccelsimError(f"{where}: {field}.multiple_of: {multiple!r} must be an integer >= 1")
    integer = bool(dist.get("integer", False)) or "multiple_of" in dist
    if integer and math.floor(args[1] / multiple) < math.ceil(args[0] / multiple):
        raise AccelsimError(
            f"{where}: {field}: empty range (no multiple of {multiple} in [{args[0]}, {args[1]}])"
        )


def _check_fields(spec: SweepSpec, where: str, hw_fields: Mapping[str, Any] | None) -> None:
    """Every varied field exists (and takes every value it is given) and is varied only once."""
    varied: dict[str, str] = {}
    for field, values in _varied_values(spec).items():
        axis, _ = values
        if field in varied and varied[field] != axis:
            raise AccelsimError(f"{where}: {axis}.{field}: already varied by {varied[field]}")
        varied[field] = axis
    if hw_fields is None:
        _check_against_hw(spec, where)
        return
    for field, (axis, _) in _varied_values(spec).items():
        if field not in hw_fields:
            raise AccelsimError(f"{where}: {axis}.{field}: unknown hardware field"
                                f"{did_you_mean(field, list(hw_fields), n=1)}")
    for i, constraint in enumerate(spec.constraints):
        if constraint.is_hw and constraint.field not in hw_fields:
            raise AccelsimError(
                f"{where}: constraints[{i}]: {constraint.field!r} is neither a metric "
                f"({', '.join(METRICS)}) nor a hardware field"
                f"{did_you_mean(constraint.field, list(hw_fields), n=1)}"
            )
        base = hw_fields.get(constraint.field) if constraint.is_hw else 0.0
        numeric = isinstance(base, int | float) and not isinstance(base, bool)
        if constraint.op not in ("==", "!=") and not numeric:
            raise AccelsimError(
                f"{where}: constraints[{i}]: {constraint.field} is {base!r}, not a number; "
                "compare it with == or !="
            )


def _varied_values(spec: SweepSpec) -> dict[str, tuple[str, list[Value]]]:
    """field -> (axis name, example values to validate) over grid, variants and random."""
    out: dict[str, tuple[str, list[Value]]] = {}
    for field, values in spec.grid:
        out[field] = ("grid", list(values))
    for variant in spec.variants:
        for field, value in variant.overrides:
            axis = f"variants.{variant.name}.set"
            out.setdefault(field, (axis, []))[1].append(value)
    if spec.random is not None:
        for field, dist in spec.random.fields:
            if field in out:
                raise_axis = out[field][0]
                raise AccelsimError(
                    f"{spec.path}: random.fields.{field}: already varied by {raise_axis}"
                )
            out[field] = ("random.fields", _distribution_extremes(dist))
    return out


def _distribution_extremes(dist: Mapping[str, Any]) -> list[Value]:
    if "choice" in dist:
        return list(dist["choice"])
    kind = "uniform" if "uniform" in dist else "loguniform"
    return [sample_value(dist, kind, bound) for bound in dist[kind]]


def _check_against_hw(spec: SweepSpec, where: str) -> None:
    from accelsim.hw import hw_to_dict, load_hw, with_overrides

    base = load_hw(spec.hw_path)
    fields = flatten_dict(hw_to_dict(base))
    _check_fields(spec, where, fields)
    for field, (axis, values) in _varied_values(spec).items():
        for value in values:
            try:
                with_overrides(base, {field: value})
            except AccelsimError as exc:
                reason = str(exc).removeprefix(f"{base.name} --set: ").removeprefix(f"{field}: ")
                raise AccelsimError(f"{where}: {axis}.{field}: {reason}") from None



