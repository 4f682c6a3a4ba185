"""Co-design spec files (``experiments/codesign/*.yaml``) -> a validated :class:`CodesignSpec`.

The hardware half is a sweep's (``docs/sweeps.md``): a base config ``hw``, a ``grid`` of
hardware fields by dotted path (lists or ``{range, step | factor}``) and ``constraints``; it is
parsed and expanded by ``accelsim.dse`` (``sweepfile`` value parsing, ``space.design_points``).
The per-layer half (``search``) names the grouping and the weight bits, activation bits and
sparsity each group may take. ``docs/codesign.md`` lists every field.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from accelsim.codesign.groups import GROUPINGS, Format, Grouping
from accelsim.dse.space import (
    SHAPE_KEYS,
    Constraint,
    DesignPoint,
    ModelSpec,
    Recipe,
    SweepSpec,
    Value,
    design_points,
    flatten_dict,
    parse_constraint,
)
from accelsim.dse.sweepfile import _parse_values
from accelsim.errors import AccelsimError, did_you_mean, yaml_problem
from accelsim.files import UniqueKeyLoader

SPEC_VERSION = 1
TOP_KEYS = (
    "version", "name", "description", "task", "model", "input_shape", "tiny", "limit",
    "checkpoint", "seed", "search", "hw", "grid", "constraints", "accuracy_budget_pct",
    "latency_ms_max", "sensitivity_batches", "solutions_per_point", "verify_points",
    "qat_recipe", "baselines", "accuracy_model",
)
SEARCH_KEYS = ("grouping", "weight_bits", "act_bits", "sparsity")
SPARSITY_CHOICES = ("dense", "2:4")
ACCURACY_MODELS = ("qat_anchored", "calibration")  # accelsim.codesign.accuracy, docs/codesign.md
RUN_PREFIX = "run:"  # checkpoint "run:fp32": the accuracy pipeline's FP32 run of the seed


@dataclass(frozen=True)
class SearchSpace:
    """Per group: the formats allowed (the product of the three axes)."""

    grouping: Grouping
    weight_bits: tuple[int, ...]
    act_bits: tuple[int, ...]
    sparsity: tuple[str, ...]

    @property
    def options(self) -> tuple[Format, ...]:
        return tuple(Format(w, a, s == "2:4") for w, a, s in
                     itertools.product(self.weight_bits, self.act_bits, self.sparsity))


@dataclass(frozen=True)
class CodesignSpec:
    name: str
    path: Path
    model: str
    input_shape: dict[str, int | float]
    task: str | None
    tiny: bool
    limit: int | None
    checkpoint: str | None  # a path, "run:fp32", or None (tiny random-init models only)
    seed: int
    search: SearchSpace
    hw_path: Path
    grid: tuple[tuple[str, tuple[Value, ...]], ...]
    constraints: tuple[Constraint, ...]
    accuracy_budgets_pct: tuple[float, ...]
    latency_ms_max: float | None
    sensitivity_batches: int
    solutions_per_point: int
    verify_points: int
    qat_recipe: str
    baselines: tuple[str, ...]
    accuracy_model: str = ACCURACY_MODELS[0]
    description: str = ""

    def hardware_points(self) -> list[DesignPoint]:
        """The hardware grid minus points a hardware-field constraint rules out (the sweep
        expansion, one model, no recipe axis)."""
        from accelsim.hw import hw_to_dict, load_hw

        sweep = SweepSpec(self.name, self.path, self.hw_path, (ModelSpec(self.model),),
                          (Recipe("none"),), (), self.grid, None, self.constraints, Path())
        return design_points(sweep, flatten_dict(hw_to_dict(load_hw(self.hw_path))))


def _check_keys(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str, prefix: str) -> None:
    for key in raw:
        if key not in allowed:
            raise AccelsimError(f"{where}: {prefix}{key}: unknown field"
                                f"{did_you_mean(str(key), list(allowed))}; allowed: "
                                f"{', '.join(allowed)}")


def _number(raw: Any, where: str, field: str, *, integer: bool = False,
            minimum: float | None = None) -> Any:
    kinds = int if integer else int | float
    if isinstance(raw, bool) or not isinstance(raw, kinds) or (
            minimum is not None and raw < minimum):
        what = "an integer" if integer else "a number"
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise AccelsimError(f"{where}: {field}: {raw!r} must be {what}{bound}")
    return raw


def _choices(raw: Any, where: str, field: str, allowed: tuple[Any, ...]) -> tuple[Any, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or len(set(values)) != len(values) or any(v not in allowed for v in values):
        raise AccelsimError(f"{where}: search.{field}: {raw!r} must be a non-empty list of "
                            f"distinct values from {', '.join(map(str, allowed))}")
    return tuple(values)


def _parse_search(raw: Any, where: str) -> SearchSpace:
    if not isinstance(raw, dict):
        raise AccelsimError(f"{where}: search: expected a mapping with keys "
                            f"{', '.join(SEARCH_KEYS)}, got {raw!r}")
    _check_keys(raw, SEARCH_KEYS, where, "search.")
    grouping = raw.get("grouping", "block_site")
    if grouping not in GROUPINGS:
        raise AccelsimError(f"{where}: search.grouping: {grouping!r} is not one of "
                            f"{', '.join(GROUPINGS)}")
    return SearchSpace(
        typing.cast(Grouping, grouping),
        _choices(raw.get("weight_bits", [4, 8]), where, "weight_bits", (4, 8)),
        _choices(raw.get("act_bits", [4, 8]), where, "act_bits", (4, 8)),
        _choices(raw.get("sparsity", list(SPARSITY_CHOICES)), where, "sparsity",
                 SPARSITY_CHOICES),
    )


def _check_hardware(spec: CodesignSpec, where: str) -> None:
    """Every grid field exists and takes its values, and every hardware point can run the
    search's integer formats."""
    from accelsim.hw import hw_to_dict, load_hw, with_overrides

    if not spec.hw_path.is_file():
        raise AccelsimError(f"{where}: hw: {str(spec.hw_path)!r} does not exist")
    base = load_hw(spec.hw_path)
    fields = flatten_dict(hw_to_dict(base))
    for field, values in spec.grid:
        if field not in fields:
            raise AccelsimError(f"{where}: grid.{field}: unknown hardware field"
                                f"{did_you_mean(field, list(fields), n=1)}")
        for value in values:
            try:
                with_overrides(base, {field: value})
            except AccelsimError as exc:
                reason = str(exc).removeprefix(f"{base.name} --set: ").removeprefix(f"{field}: ")
                raise AccelsimError(f"{where}: grid.{field}: {reason}") from None
    for i, constraint in enumerate(spec.constraints):
        if constraint.is_hw and constraint.field not in fields:
            raise AccelsimError(f"{where}: constraints[{i}]: {constraint.field!r} is neither a "
                                f"metric nor a hardware field"
                                f"{did_you_mean(constraint.field, list(fields), n=1)}")
    kinds = {fields["precision.kind"]} | {v for f, vs in spec.grid if f == "precision.kind"
                                          for v in vs}
    if kinds != {"int"}:
        formats = ", ".join(f.name for f in spec.search.options)
        raise AccelsimError(f"{where}: hw: precision.kind {sorted(kinds - {'int'})[0]!r} cannot "
                            f"run the integer formats the search assigns ({formats}); allowed: "
                            "precision.kind: int")


def load_spec(path: str | Path) -> CodesignSpec:
    """Read and validate a co-design spec; one line naming the file and field otherwise."""
    from accelsim.compress.recipe import available_recipes, load_recipe
    from accelsim.tasks import get_task, list_tasks
    from accelsim.zoo import get_spec

    path = Path(path)
    where = str(path)
    try:
        with path.open() as fh:  # a stream, so a problem names the file, not "<unicode string>"
            raw = yaml.load(fh, Loader=UniqueKeyLoader)  # noqa: S506 - safe subclass
    except FileNotFoundError:
        raise AccelsimError(f"{where}: co-design spec not found") from None
    except yaml.YAMLError as exc:
        raise AccelsimError(f"{where}: not valid YAML ({yaml_problem(exc)})") from None
    if not isinstance(raw, dict):
        raise AccelsimError(f"{where}: a co-design spec is a mapping with keys "
                            f"{', '.join(TOP_KEYS)}")
    _check_keys(raw, TOP_KEYS, where, "")
    if raw.get("version") != SPEC_VERSION:
        raise AccelsimError(f"{where}: version: {raw.get('version')!r} is not supported "
                            f"(allowed: {SPEC_VERSION})")
    task_name = raw.get("task")
    tiny = raw.get("tiny", False)
    if not isinstance(tiny, bool):
        raise AccelsimError(f"{where}: tiny: {tiny!r} must be true or false")
    limit = raw.get("limit")
    if limit is not None:
        _number(limit, where, "limit", integer=True, minimum=1)
    budgets_raw = raw.get("accuracy_budget_pct", [])
    budgets = tuple(budgets_raw if isinstance(budgets_raw, list) else [budgets_raw])
    for b in budgets:
        _number(b, where, "accuracy_budget_pct", minimum=0)
    if budgets and task_name is None:
        raise AccelsimError(f"{where}: accuracy_budget_pct: needs a task (sensitivities are "
                            f"measured on its validation split); allowed tasks: "
                            f"{', '.join(list_tasks())}")
    task = None
    if task_name is not None:
        if task_name not in list_tasks():
            raise AccelsimError(f"{where}: task: unknown name {task_name!r}"
                                f"{did_you_mean(str(task_name), list_tasks())}; allowed: "
                                f"{', '.join(list_tasks())}")
        task = get_task(task_name, limit=limit, tiny=tiny)
    model = raw.get("model", task.backbone if task is not None else None)
    if not isinstance(model, str):
        raise AccelsimError(f"{where}: model: give a zoo model name (or a task, whose backbone "
                            "it is)")
    get_spec(model)  # one line for an unknown model
    if task is not None and model != task.backbone:
        raise AccelsimError(f"{where}: model: {model!r} is not the backbone of task "
                            f"{task.name} ({task.backbone})")
    shape_raw = raw.get("input_shape", dict(task.input_shape) if task is not None else {})
    if not isinstance(shape_raw, dict):
        raise AccelsimError(f"{where}: input_shape: expected a mapping of "
                            f"{', '.join(SHAPE_KEYS)}")
    _check_keys(shape_raw, SHAPE_KEYS, where, "input_shape.")
    shape = {k: _number(v, where, f"input_shape.{k}", minimum=0) for k, v in shape_raw.items()}
    checkpoint = raw.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise AccelsimError(f"{where}: checkpoint: {checkpoint!r} must be a path or "
                            f"'{RUN_PREFIX}fp32'")
    if checkpoint is not None and checkpoint.startswith(RUN_PREFIX) \
            and checkpoint != f"{RUN_PREFIX}fp32":
        raise AccelsimError(f"{where}: checkpoint: {checkpoint!r}; allowed: '{RUN_PREFIX}fp32' "
                            "(the accuracy pipeline's FP32 run) or a path")
    if checkpoint is not None and not checkpoint.startswith(RUN_PREFIX):
        checkpoint = str((path.parent / checkpoint).resolve())
        if not Path(checkpoint).exists():
            raise AccelsimError(f"{where}: checkpoint: {checkpoint!r} does not exist; make the "
                                f"FP32 run with: python experiments/accuracy/{task_name}.py "
                                f"--recipes fp32 (then checkpoint: {RUN_PREFIX}fp32)")
    if task is not None and checkpoint is None and not tiny:
        raise AccelsimError(f"{where}: checkpoint: missing; a real task needs its fine-tuned "
                            f"FP32 model ('{RUN_PREFIX}fp32' or a checkpoint path; make it with "
                            f"python experiments/accuracy/{task.name}.py --recipes fp32)")
    seed = _number(raw.get("seed", 0), where, "seed", integer=True)
    latency = raw.get("latency_ms_max")
    if latency is not None:
        _number(latency, where, "latency_ms_max", minimum=0)
    qat_recipe = raw.get("qat_recipe", "w4a4_sp24")
    if qat_recipe not in available_recipes():
        raise AccelsimError(f"{where}: qat_recipe: unknown recipe {qat_recipe!r}"
                            f"{did_you_mean(str(qat_recipe), available_recipes())}")
    accuracy_model = raw.get("accuracy_model", ACCURACY_MODELS[0])
    if accuracy_model not in ACCURACY_MODELS:
        raise AccelsimError(f"{where}: accuracy_model: {accuracy_model!r}; allowed: "
                            f"{', '.join(ACCURACY_MODELS)}")
    baselines = raw.get("baselines", []) or []
    quantized = [r for r in available_recipes() if load_recipe(r).quantized]
    for i, item in enumerate(baselines):
        if item not in quantized:
            # A float recipe on an integer grid would run at the array's native integer width
            # and be priced as the cheapest point of all; its hardware is another design.
            raise AccelsimError(f"{where}: baselines[{i}]: {item!r} is not a quantized recipe"
                                f"{did_you_mean(str(item), quantized)}; allowed: a recipe "
                                f"with integer weights (e.g. w8a8, w4a4, w4a4_sp24)")
    hw_raw = raw.get("hw")
    if not isinstance(hw_raw, str):
        raise AccelsimError(f"{where}: hw: give the base hardware config as a path (string)")
    grid_raw = raw.get("grid", {}) or {}
    if not isinstance(grid_raw, dict):
        raise AccelsimError(f"{where}: grid: expected a mapping of hardware field -> values")
    grid = tuple((field, _parse_values(values, where, f"grid.{field}"))
                 for field, values in grid_raw.items())
    constraints_raw = raw.get("constraints", []) or []
    if not isinstance(constraints_raw, list):
        raise AccelsimError(f"{where}: constraints: expected a list of 'FIELD OP VALUE'")
    spec = CodesignSpec(
        name=str(raw.get("name", path.stem)), path=path, model=model, input_shape=shape,
        task=task_name, tiny=tiny, limit=limit, checkpoint=checkpoint, seed=seed,
        search=_parse_search(raw.get("search", {}), where),
        hw_path=(path.parent / hw_raw).resolve(), grid=grid,
        constraints=tuple(parse_constraint(text, f"{where}: constraints[{i}]")
                          for i, text in enumerate(constraints_raw)),
        accuracy_budgets_pct=tuple(float(b) for b in budgets),
        latency_ms_max=None if latency is None else float(latency),
        sensitivity_batches=_number(raw.get("sensitivity_batches", 4), where,
                                    "sensitivity_batches", integer=True, minimum=1),
        solutions_per_point=_number(raw.get("solutions_per_point", 4), where,
                                    "solutions_per_point", integer=True, minimum=1),
        verify_points=_number(raw.get("verify_points", 3), where, "verify_points",
                              integer=True, minimum=0),
        qat_recipe=qat_recipe, baselines=tuple(baselines), accuracy_model=accuracy_model,
        description=str(raw.get("description", "")),
    )
    _check_hardware(spec, where)
    return spec
