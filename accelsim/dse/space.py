"""Sweep files -> validated design points.

A sweep file (YAML, ``version: 1``) names a base hardware config, the models, the compression
recipes and the hardware fields to vary; see ``docs/sweeps.md``. Loading validates everything
once (unknown keys, empty ranges, unknown hardware fields, malformed constraints) and raises one
:class:`AccelsimError` line naming the file and the field. :func:`design_points` then expands the
spec into :class:`DesignPoint` s: models x recipes (or variants) x grid x random samples, minus the
points that a hardware-field constraint rules out before simulation.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph

SWEEP_VERSION = 1
TOP_KEYS = (
    "version", "name", "description", "hw", "models", "recipes", "variants", "grid", "random",
    "constraints", "accuracy_csv",
)
SHAPE_KEYS = ("batch", "seq_len", "image_size", "audio_seconds")
# Result columns a constraint may name (besides hardware fields): SimResult totals + accuracy.
METRICS = (
    "cycles", "latency_ms", "energy_uj", "area_mm2", "macs", "utilization", "dram_bytes", "tops",
    "tops_per_w", "accuracy_pct",
)
DISTRIBUTIONS = ("choice", "uniform", "loguniform")
DEFAULT_ACCURACY_CSV = "accuracy/results.csv"

Value = int | float | str | bool


@dataclass(frozen=True)
class Recipe:
    """The operand precision a compression recipe gives a graph's GEMMs.

    ``None`` bit widths mean "the hardware's default precision" (an uncompressed model).
    ``attention_bits`` is the operand width of attention's two matmuls (``None``: ``act_bits``).
    ``sparsity="2:4"`` makes every linear GEMM whose reduction length is a multiple of 4 2:4 sparse.
    """

    name: str
    weight_bits: int | None = None
    act_bits: int | None = None
    sparsity: str = "dense"
    attention_bits: int | None = None

    def __post_init__(self) -> None:
        for bits_field in ("weight_bits", "act_bits", "attention_bits"):
            bits = getattr(self, bits_field)
            if bits is not None and (not isinstance(bits, int) or not 1 <= bits <= 32):
                raise AccelsimError(
                    f"recipe {self.name!r}: {bits_field}={bits!r} must be an integer in 1..32 "
                    "or null"
                )
        if self.sparsity not in ("dense", "2:4"):
            raise AccelsimError(
                f"recipe {self.name!r}: sparsity={self.sparsity!r} is not one of dense, 2:4"
            )


# Hardware-only recipes: precisions with no compression recipe file (so no accuracy). Every
# recipe of experiments/recipes/ (fp32, w8a8, w4a4, w4a4_sp24 and its ablations) is read from its
# file instead, so a sweep sees exactly the widths the compression uses.
BUILTIN_RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("native"),
        Recipe("w4a8", 4, 8),
        Recipe("w8a8_sp24", 8, 8, "2:4"),
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model name plus its input shape (``None`` = the zoo's default)."""

    name: str
    batch: int = 1
    seq_len: int | None = None
    image_size: int | None = None
    audio_seconds: float | None = None

    def trace_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``trace_named_model`` (defaults left out)."""
        shape = {key: getattr(self, key) for key in SHAPE_KEYS[1:]}
        return {"batch": self.batch, **{k: v for k, v in shape.items() if v is not None}}


@dataclass(frozen=True)
class Constraint:
    """``field op value``: a result metric (``area_mm2 <= 50``) or a hardware field."""

    field: str
    op: str
    value: Value

    @property
    def is_hw(self) -> bool:
        return self.field not in METRICS

    @property
    def column(self) -> str:
        """The results-frame column this constraint reads."""
        return hw_column(self.field) if self.is_hw else self.field

    def holds(self, actual: Any) -> Any:
        """Whether ``actual`` satisfies the constraint (element-wise for arrays and Series)."""
        return COMPARATORS[self.op](actual, self.value)

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value}"


COMPARATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
    "==": operator.eq, "!=": operator.ne,
}
_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*([^<>=!\s].*?)\s*$")


@dataclass(frozen=True)
class Variant:
    """One choice of the ``variants`` axis: a recipe and hardware fields set together."""

    name: str
    recipe: Recipe | None
    overrides: tuple[tuple[str, Value], ...]


@dataclass(frozen=True)
class RandomSpec:
    samples: int
    seed: int
    fields: tuple[tuple[str, Mapping[str, Any]], ...]


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file."""

    name: str
    path: Path
    hw_path: Path
    models: tuple[ModelSpec, ...]
    recipes: tuple[Recipe, ...]
    variants: tuple[Variant, ...]
    grid: tuple[tuple[str, tuple[Value, ...]], ...]
    random: RandomSpec | None
    constraints: tuple[Constraint, ...]
    accuracy_csv: Path
    description: str = ""


@dataclass(frozen=True)
class DesignPoint:
    """One point to simulate: a model, a recipe and hardware-field overrides (sorted by path)."""

    model: ModelSpec
    recipe: Recipe
    overrides: tuple[tuple[str, Value], ...]
    variant: str = ""


def hw_column(path: str) -> str:
    """Results-frame column of a hardware field: ``array.rows`` -> ``hw_array_rows``."""
    return "hw_" + path.replace(".", "_")


def flatten_dict(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> ``{"array.rows": 64, ...}`` (leaves only)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_dict(value, path + "."))
        else:
            flat[path] = value
    return flat


def apply_recipe(graph: Graph, recipe: Recipe) -> Graph:
    """The graph as the recipe compresses it.

    Linear GEMMs get the recipe's weight/activation widths, and become 2:4 sparse when the recipe
    is and their reduction length allows it; attention's activation x activation matmuls quantize
    both operands to ``attention_bits`` (default ``act_bits``) and stay dense. Convolutions
    (patch embeddings, wav2vec2's feature encoder) stay at the hardware default, as the
    compression keeps embeddings at high precision.
    """
    if recipe == Recipe(recipe.name):
        return graph
    nodes = []
    for node in graph.nodes:
        if isinstance(node, GemmNode) and node.kind == "linear" and not node.weight_is_activation:
            sparse = recipe.sparsity == "2:4" and node.k % 4 == 0
            node = replace(
                node,
                weight_bits=recipe.weight_bits,
                act_bits=recipe.act_bits,
                sparsity="2:4" if sparse else "dense",
                weight_density=0.5 if sparse else node.weight_density,
            )
        elif isinstance(node, GemmNode) and node.kind == "matmul":
            bits = recipe.attention_bits or recipe.act_bits
            node = replace(node, weight_bits=bits, act_bits=bits)
        nodes.append(node)
    return replace(graph, name=f"{graph.name}[{recipe.name}]", nodes=tuple(nodes))


# ---------------------------------------------------------------------------------------------
# Loading


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
        raise AccelsimError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None
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
    recipes = _parse_recipes(raw.get("recipes", ["native"]), where)
    grid = tuple(
        (field, _parse_values(spec, where, f"grid.{field}"))
        for field, spec in _mapping(raw.get("grid", {}), where, "grid").items()
    )
    random = _parse_random(raw.get("random"), where)
    constraints = tuple(
        _parse_constraint(text, f"{where}: constraints[{i}]")
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


def named_recipe(name: str) -> Recipe | None:
    """A recipe by name: a compression recipe file (experiments/recipes/NAME.yaml) or a
    hardware-only built-in; ``None`` if neither exists."""
    if name in BUILTIN_RECIPES:
        return BUILTIN_RECIPES[name]
    # Lazy: compression imports torch, which only the parent process (it traces) may load.
    from accelsim.compress.recipe import available_recipes, load_recipe

    if name not in available_recipes():
        return None
    full = load_recipe(name)
    return Recipe(
        name=full.name,
        weight_bits=full.weight_bits,
        act_bits=full.act_bits,
        sparsity=full.sparsity,
        attention_bits=full.attention_bits,
    )


def _parse_recipe(item: Any, where: str, field: str) -> Recipe:
    if isinstance(item, str):
        recipe = named_recipe(item)
        if recipe is None:
            from accelsim.compress.recipe import available_recipes

            known = [*available_recipes(), *BUILTIN_RECIPES]
            raise AccelsimError(
                f"{where}: {field}: unknown recipe {item!r} (known: {', '.join(known)}; "
                "or define one as {name, weight_bits, act_bits, attention_bits, sparsity})"
            )
        return recipe
    item = _mapping(item, where, field)
    _check_keys(item, ("name", "weight_bits", "act_bits", "attention_bits", "sparsity"), where,
                field + ".")
    if not isinstance(item.get("name"), str):
        raise AccelsimError(f"{where}: {field}.name: give the recipe name as a string")
    try:
        return Recipe(**item)
    except AccelsimError as exc:
        raise AccelsimError(f"{where}: {field}: {exc}") from None


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


def parse_constraint(text: str) -> Constraint:
    """``"area_mm2 <= 50"`` -> :class:`Constraint` (command-line form)."""
    return _parse_constraint(text, "--constraint")


def _parse_constraint(text: Any, where: str) -> Constraint:
    match = _CONSTRAINT_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise AccelsimError(
            f"{where}: {text!r} is not 'FIELD OP VALUE' with OP one of "
            f"{', '.join(COMPARATORS)} (example: 'area_mm2 <= 50')"
        )
    name, op, value_text = match.groups()
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError:
        value = value_text
    if op not in ("==", "!=") and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise AccelsimError(f"{where}: {op} needs a number, got {value_text!r}")
    return Constraint(name, op, value)


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
                                f"{_closest(field, hw_fields)}")
    for i, constraint in enumerate(spec.constraints):
        if constraint.is_hw and constraint.field not in hw_fields:
            raise AccelsimError(
                f"{where}: constraints[{i}]: {constraint.field!r} is neither a metric "
                f"({', '.join(METRICS)}) nor a hardware field"
                f"{_closest(constraint.field, hw_fields)}"
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
    return [_sample_value(dist, kind, bound) for bound in dist[kind]]


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


def _closest(name: str, known: Iterable[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


# ---------------------------------------------------------------------------------------------
# Expansion


def design_points(spec: SweepSpec, hw_fields: Mapping[str, Any]) -> list[DesignPoint]:
    """All design points of a sweep, in a deterministic order.

    ``hw_fields`` is the flattened base config; constraints on hardware fields are checked on it
    (updated with each point's overrides) and rule points out before any simulation.
    """
    hw_constraints = [c for c in spec.constraints if c.is_hw]
    # Variants that set no recipe combine with every listed recipe.
    variants = spec.variants or (Variant("", None, ()),)
    choices = [
        (variant.recipe or recipe, variant.name, variant.overrides)
        for variant in variants
        for recipe in ((variant.recipe,) if variant.recipe else spec.recipes)
    ]
    grid_fields = [field for field, _ in spec.grid]
    grid_combos = list(itertools.product(*(values for _, values in spec.grid)))
    samples = _random_samples(spec.random) if spec.random else [{}]
    points = []
    for model in spec.models:
        for recipe, variant, variant_overrides in choices:
            for combo in grid_combos:
                for sample in samples:
                    grid_values = dict(zip(grid_fields, combo, strict=True))
                    overrides = {**dict(variant_overrides), **grid_values, **sample}
                    if hw_constraints:
                        resolved = {**hw_fields, **overrides}
                        if not all(c.holds(resolved[c.field]) for c in hw_constraints):
                            continue
                    points.append(
                        DesignPoint(model, recipe, tuple(sorted(overrides.items())), variant)
                    )
    return points


def _random_samples(random: RandomSpec) -> list[dict[str, Value]]:
    rng = np.random.default_rng(random.seed)
    samples = []
    for _ in range(random.samples):
        sample: dict[str, Value] = {}
        for field, dist in random.fields:
            if "choice" in dist:
                sample[field] = dist["choice"][int(rng.integers(len(dist["choice"])))]
                continue
            kind = "uniform" if "uniform" in dist else "loguniform"
            low, high = dist[kind]
            u = float(rng.random())
            raw = low + u * (high - low) if kind == "uniform" else math.exp(
                math.log(low) + u * (math.log(high) - math.log(low))
            )
            sample[field] = _sample_value(dist, kind, raw)
        samples.append(sample)
    return samples


def _sample_value(dist: Mapping[str, Any], kind: str, raw: float) -> Value:
    """Round a drawn number as the distribution asks (integer, multiple_of), inside the range."""
    multiple = dist.get("multiple_of")
    if multiple is None and not dist.get("integer", False):
        return float(raw)
    multiple = multiple or 1
    low, high = dist[kind]
    steps = min(max(round(raw / multiple), math.ceil(low / multiple)), math.floor(high / multiple))
    return int(steps * multiple)
