"""Design points: the types of a validated sweep and their expansion into points to simulate.

:mod:`accelsim.dse.sweepfile` reads and validates a sweep file (``docs/sweeps.md``) into a
:class:`SweepSpec`; :func:`design_points` expands it into :class:`DesignPoint` s: models x recipes
(or variants) x grid x random samples, minus the points that a hardware-field constraint rules out
before simulation. A point names its recipe; the runner builds the graph by compressing the model
with that recipe (``accelsim.graph.workload.workload_graph``), as ``accelsim run`` does.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from accelsim.errors import AccelsimError

SHAPE_KEYS = ("batch", "seq_len", "image_size", "audio_seconds")
# Result columns a constraint may name (besides hardware fields): SimResult totals + accuracy.
METRICS = (
    "cycles", "latency_ms", "energy_uj", "area_mm2", "macs", "utilization", "dram_bytes", "tops",
    "tops_per_w", "host_macs", "accuracy_pct",
)
# The recipe name for the uncompressed model (GEMMs at the hardware's default precision).
UNCOMPRESSED = "none"
_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*([^<>=!\s].*?)\s*$")

Value = int | float | str | bool


@dataclass(frozen=True)
class Recipe:
    """A compression recipe as a design point names it: its name, a summary of the operand
    precision it gives linear GEMMs (``None`` bit widths: the hardware default, i.e. uncompressed)
    and a digest of all its fields, so that editing the recipe file changes the point keys.

    The graph itself comes from compressing the model with the recipe file, never from these
    fields.
    """

    name: str
    weight_bits: int | None = None
    act_bits: int | None = None
    sparsity: str = "dense"
    attention_bits: int | None = None
    digest: str = ""

    @property
    def compressed(self) -> bool:
        return self.weight_bits is not None


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


def parse_constraint(text: Any, where: str = "--constraint") -> Constraint:
    """``"area_mm2 <= 50"`` -> :class:`Constraint`; ``where`` names the source in errors."""
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


def named_recipe(name: str) -> Recipe | None:
    """A recipe by name: ``none`` (uncompressed) or a compression recipe file
    (``experiments/recipes/NAME.yaml``); ``None`` if neither exists."""
    if name == UNCOMPRESSED:
        return Recipe(UNCOMPRESSED)
    from accelsim.compress.recipe import available_recipes, load_recipe, recipe_to_dict

    if name not in available_recipes():
        return None
    full = load_recipe(name)
    fields = json.dumps(recipe_to_dict(full), sort_keys=True, default=str)
    digest = hashlib.sha256(fields.encode()).hexdigest()[:16]
    if not full.quantized:  # a float recipe (fp32) leaves the model as traced
        return Recipe(full.name, digest=digest)
    return Recipe(full.name, full.weight_bits, full.act_bits, full.sparsity,
                  full.attention_bits, digest)


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
            sample[field] = sample_value(dist, kind, raw)
        samples.append(sample)
    return samples


def sample_value(dist: Mapping[str, Any], kind: str, raw: float) -> Value:
    """Round a drawn number as the distribution asks (integer, multiple_of), inside the range."""
    multiple = dist.get("multiple_of")
    if multiple is None and not dist.get("integer", False):
        return float(raw)
    multiple = multiple or 1
    low, high = dist[kind]
    steps = min(max(round(raw / multiple), math.ceil(low / multiple)), math.floor(high / multiple))
    return int(steps * multiple)
