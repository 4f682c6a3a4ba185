"""A whole co-design run: spec -> sensitivities -> per hardware point ILP -> store -> front ->
QAT verification -> result rows.

Everything computed is kept in a results store (``accelsim.dse.store.ResultStore``, the sweeps'
SQLite format, so ``accelsim plot pareto`` and ``accelsim report`` read it): one row per
(hardware point, budget) searched and per (hardware point, baseline recipe), keyed by a digest
of what made it, and the sensitivity table and QAT results in its ``meta`` table. A rerun skips
every row and measurement already stored.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelsim import __version__
from accelsim.codesign.accuracy import (
    FACTORS,
    AccuracyModel,
    Sensitivity,
    load_fp32,
    measure_sensitivity,
    sensitivity_runs,
)
from accelsim.codesign.anchors import (
    AnchoredModel,
    anchor_accuracies,
    qat_anchored,
    recipe_assignment,
    table_rows,
    table_runs,
)
from accelsim.codesign.cost import CostCache
from accelsim.codesign.groups import Format, Groups, find_groups, parse_format, templates
from accelsim.codesign.search import config_string, run_key, search_point
from accelsim.codesign.spec import CodesignSpec
from accelsim.errors import AccelsimError

RESULT_COLUMNS = ("task", "model", "kind", "config", "energy_uj", "latency_ms", "area_mm2",
                  "accuracy_pct", "accuracy_source", "seed")
ALL_FORMATS = tuple(Format(w, a, s) for w in (4, 8) for a in (4, 8) for s in (False, True))
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class CodesignSummary:
    hardware_points: int
    searched: int  # rows evaluated in this call
    skipped: int  # rows already in the store
    rows: list[dict[str, Any]]  # results.csv rows of this task


def _digest_sources() -> str:
    """What a stored search or baseline row depends on: the cost model and all of codesign
    (cheap to recompute, so any edit re-prices)."""
    from accelsim.dse.runner import cost_model_digest
    from accelsim.files import source_digest

    return cost_model_digest() + source_digest("codesign")


# What a sensitivity or QAT measurement depends on (minutes of training and integer-reference
# runs each): compression, training, tasks, weights, the integer reference and the codesign
# modules that compress and verify an assignment; not the search, pricing or CLI around them.
MEASUREMENT_SOURCES = ("codesign/accuracy.py", "codesign/groups.py", "codesign/verify.py",
                       "compress", "tasks", "zoo", "ref", "accuracy/evaluate.py")


def _measurement_digest() -> str:
    from accelsim.files import source_digest

    return source_digest(*MEASUREMENT_SOURCES)


def _sensitivity(spec: CodesignSpec, store: Any, groups: Groups, progress: Progress | None,
                 fp_model: Any, task: Any) -> Sensitivity:
    """Measured once per (task, checkpoint, groups, options, seed), kept in the store."""
    from accelsim.compress.recipe import load_recipe

    options = spec.search.options
    key = run_key({"task": spec.task, "tiny": spec.tiny, "limit": spec.limit,
                   "checkpoint": spec.checkpoint, "groups": groups.names,
                   "grouping": groups.grouping, "options": [f.name for f in options],
                   "seed": spec.seed, "batches": spec.sensitivity_batches,
                   "recipe": spec.qat_recipe, "source": _measurement_digest()})
    stored = store.meta(f"sensitivity:{key}")
    if stored is not None:
        return Sensitivity(tuple(stored["groups"]), stored["fp32_pct"], stored["reference_pct"],
                           np.array(stored["drop_pct"], dtype=float),
                           np.array(stored["kl"], dtype=float), stored["examples"])
    total = sensitivity_runs(groups.names, options)
    done = 0

    def ticks():  # type: ignore[no-untyped-def]
        nonlocal done
        while True:
            done += 1
            if progress is not None:
                progress("sensitivity", done, total)
            yield None

    recipe = load_recipe(spec.qat_recipe)
    calibration = list(itertools.islice(task.batches("train", recipe.batch_size, seed=spec.seed),
                                        spec.sensitivity_batches))
    sens = measure_sensitivity(task, fp_model, recipe, groups.grouping, groups.names, options,
                               calibration, spec.seed, ticks())
    store.set_meta(f"sensitivity:{key}", {
        "groups": list(sens.groups), "fp32_pct": sens.fp32_pct,
        "reference_pct": sens.reference_pct, "factors": list(FACTORS),
        "drop_pct": np.where(np.isnan(sens.drop_pct), None, sens.drop_pct).tolist(),
        "kl": np.where(np.isnan(sens.kl), None, sens.kl).tolist(), "examples": sens.examples})
    return sens


class _Store:
    """The results store plus JSON meta values."""

    def __init__(self, path: Path) -> None:
        from accelsim.dse.store import ResultStore

        self.results = ResultStore(path)
        self.path = path

    def meta(self, name: str) -> Any:
        db = sqlite3.connect(self.path)
        try:
            row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        finally:
            db.close()
        return None if row is None else json.loads(row[0])

    def meta_items(self, prefix: str) -> dict[str, Any]:
        """Every meta value whose name starts with ``prefix``, by name."""
        db = sqlite3.connect(self.path)
        try:
            rows = db.execute("SELECT name, value FROM meta WHERE substr(name, 1, ?) = ?",
                              (len(prefix), prefix)).fetchall()
        finally:
            db.close()
        return {name: json.loads(value) for name, value in rows}

    def set_meta(self, name: str, value: Any) -> None:
        self.results.set_meta(name, value)

    def close(self) -> None:
        self.results.close()


def run_codesign(spec: CodesignSpec, store_path: Path, *, verify: bool = True,
                 progress: Progress | None = None, budget: Any = None) -> CodesignSummary:
    """Search every hardware point of ``spec`` under each accuracy budget, price the baseline
    recipes on the same points, then (``verify``) QAT-verify the front points the budgets
    select. ``budget``: the QAT training budget (``accelsim.accuracy.budgets.Budget``; default
    the task's). Returns this task's result rows."""
    from accelsim.hw import hw_to_dict, load_hw, with_overrides
    from accelsim.tasks import get_task

    base_hw = load_hw(spec.hw_path)
    points = spec.hardware_points()
    if not points:
        raise AccelsimError(f"{spec.path}: constraints rule out every hardware point of the grid")
    shape = dict(spec.input_shape)
    tmpl = templates(spec.model, shape)
    groups = find_groups(tmpl.base, spec.search.grouping)
    task = get_task(spec.task, limit=spec.limit, tiny=spec.tiny) if spec.task else None
    fp_model = sens = anchors = None
    model: AccuracyModel | None = None
    if task is not None and spec.accuracy_budgets_pct:
        # Both before anything is written or measured.
        fp_model = load_fp32(task, spec.checkpoint, spec.seed)
        anchors = None if spec.accuracy_model == "calibration" else \
            anchor_accuracies(spec, table_runs(spec, task, fp_model, groups, budget))
    store = _Store(store_path)
    try:
        if task is not None and fp_model is not None:
            sens = _sensitivity(spec, store, groups, progress, fp_model, task)
            model = sens if anchors is None else qat_anchored(sens, anchors)
        budgets: Sequence[float | None] = spec.accuracy_budgets_pct or (None,)
        done_keys = store.results.finished_keys()
        evaluated = skipped = 0
        keys: list[str] = []  # this spec's rows (the store may hold other specs' too)
        total = len(points) * (len(budgets) + len(spec.baselines))
        identity = {"model": spec.model, "shape": shape, "grouping": groups.grouping,
                    "options": [f.name for f in spec.search.options],
                    "latency_ms_max": spec.latency_ms_max, "k": spec.solutions_per_point,
                    "source": _digest_sources(), "version": __version__,
                    "sensitivity": None if sens is None else sens.rows(),
                    "accuracy_model": spec.accuracy_model,
                    "anchors": model.describe() if isinstance(model, AnchoredModel) else None}
        for point in points:
            overrides = dict(point.overrides)
            hw = with_overrides(base_hw, overrides)
            hw_dict = hw_to_dict(hw)
            cache: CostCache | None = None
            for budget_pct in budgets:
                key = run_key({**identity, "hw": hw_dict, "budget": budget_pct})
                keys.append(key)
                if key in done_keys:
                    skipped += 1
                    continue
                cache = cache or CostCache(tmpl, groups, hw)
                found = search_point(cache, spec.search.options, model, budget_pct,
                                     spec.latency_ms_max, spec.solutions_per_point)
                store.results.write([_searched_row(spec, key, overrides, groups, found,
                                                   budget_pct)])
                evaluated += 1
                if progress is not None:
                    progress("search", evaluated + skipped, total)
            for recipe in spec.baselines:
                key = run_key({**identity, "hw": hw_dict, "baseline": recipe})
                keys.append(key)
                if key in done_keys:
                    skipped += 1
                    continue
                store.results.write([_baseline_row(spec, key, overrides, hw, recipe, groups,
                                                   model)])
                evaluated += 1
                if progress is not None:
                    progress("search", evaluated + skipped, total)
        store.results.set_meta("constraints", [[c.field, c.op, c.value]
                                               for c in spec.constraints])
        rows = result_rows(spec, store, keys, task, fp_model, groups, verify, progress,
                           budget)
    finally:
        store.close()
    return CodesignSummary(len(points), evaluated, skipped, rows)


def _identity(spec: CodesignSpec, key: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "sweep": spec.name, "model": spec.model,
            "input_shape": json.dumps(spec.input_shape, sort_keys=True),
            "overrides": json.dumps(overrides, sort_keys=True), "accelsim_version": __version__}


def _searched_row(spec: CodesignSpec, key: str, overrides: dict[str, Any], groups: Groups,
                  found: list, budget_pct: float | None) -> dict[str, Any]:
    label = "searched" if budget_pct is None else f"searched@{budget_pct:g}"
    row = {**_identity(spec, key, overrides), "recipe": label, "variant": "searched",
           "budget_pct": budget_pct}
    if not found:
        reason = ("no assignment meets the accuracy budget and latency bound on this hardware "
                  "point")
        return {**row, "feasible": False, "reason": reason}
    best = found[0]
    return {**row, "feasible": True, "reason": "", "config": config_string(groups,
                                                                           best.assignment),
            "energy_uj": best.cost.energy_uj, "latency_ms": best.cost.latency_ms,
            "area_mm2": best.cost.area_mm2, "cycles": float(best.cost.cycles),
            "surrogate_energy_uj": best.surrogate_energy_uj,
            "accuracy_pct": best.predicted_pct, "accuracy_source": "predicted"}


def _baseline_row(spec: CodesignSpec, key: str, overrides: dict[str, Any], hw: Any,
                  recipe: str, groups: Groups, model: AccuracyModel | None) -> dict[str, Any]:
    from accelsim.graph.workload import workload_graph
    from accelsim.sim.simulate import simulate

    result = simulate(workload_graph(spec.model, recipe=recipe, **spec.input_shape), hw)
    assignment = recipe_assignment(recipe, groups)
    predicted = None
    if model is not None and assignment is not None:
        value = model.predict(ALL_FORMATS, assignment)
        predicted = None if np.isnan(value) else value
    row = {**_identity(spec, key, overrides), "recipe": recipe, "variant": "uniform",
           "feasible": bool(result.feasible), "reason": result.reason,
           "config": recipe if assignment is None else config_string(groups, assignment),
           "accuracy_pct": predicted, "accuracy_source": "predicted"}
    if result.feasible:
        row.update(energy_uj=result.totals.energy_uj, latency_ms=result.totals.latency_ms,
                   area_mm2=result.totals.area_mm2, cycles=float(result.totals.cycles))
    return row


def selected_points(frame: Any, spec: CodesignSpec) -> Any:
    """Per budget, the searched point of least energy over all hardware points that meets the
    constraints: the points the budgets select, verified by QAT."""
    searched = frame[(frame["variant"] == "searched") & frame["meets_constraints"]]
    if searched.empty:
        return searched
    best = searched.sort_values("energy_uj").groupby("recipe", sort=False).head(1)
    return best.sort_values("energy_uj").head(spec.verify_points)


def result_rows(spec: CodesignSpec, store: _Store, keys: Sequence[str], task: Any,
                fp_model: Any, groups: Groups, verify: bool, progress: Progress | None,
                budget: Any) -> list[dict[str, Any]]:
    """This spec's ``results.csv`` rows (store rows ``keys``): every uniform baseline and
    searched point meeting the constraints, with QAT-verified accuracy where measured (kept in
    the store's meta)."""
    from accelsim.dse.store import load_results

    frame = load_results(store.path)
    frame = frame[frame["key"].isin(set(keys))]
    verified: dict[str, float] = {}
    chosen = selected_points(frame, spec)
    if verify and task is not None and fp_model is not None:
        verified = _verify(spec, store, task, fp_model, groups, list(chosen["config"]),
                           progress, budget)
    table = table_accuracy(spec, fp_model) if task is not None and fp_model is not None else {}
    rows = []
    for _, point in frame[frame["meets_constraints"]].iterrows():
        config = point["config"]
        searched = point["variant"] == "searched"
        # An assignment's QAT accuracy is measured once, on the base chip's datapath, and holds
        # for the hardware points that share it; a uniform recipe's is the accuracy table's row
        # for it (same FP32 parent, seed and datapath) when there is one, else its prediction.
        measured = verified.get(config) if searched else table.get(point["recipe"])
        accuracy = point["accuracy_pct"]
        hw = " ".join(f"{k}={v}" for k, v in json.loads(point["overrides"]).items())
        rows.append({
            "task": spec.task or "", "model": spec.model,
            "kind": "searched" if searched else "uniform",
            "config": f"{point['recipe']} | hw {hw or 'base'} | {config}",
            "energy_uj": round(float(point["energy_uj"]), 6),
            "latency_ms": round(float(point["latency_ms"]), 6),
            "area_mm2": round(float(point["area_mm2"]), 6),
            "accuracy_pct": round(measured, 2) if measured is not None else (
                None if accuracy is None or np.isnan(accuracy) else round(float(accuracy), 2)),
            "accuracy_source": "qat_integer_reference" if measured is not None else "predicted",
            "seed": spec.seed,
        })
    return rows


def table_accuracy(spec: CodesignSpec, fp_model: Any) -> dict[str, float]:
    """Test accuracy [%] of each recipe among :func:`table_rows` trained under the task's
    current budget (a row of an older schedule is not this recipe's run any more)."""
    from accelsim.accuracy.budgets import BUDGETS
    from accelsim.accuracy.provenance import schedule_differences

    def current(row: dict[str, str]) -> bool:
        return spec.task not in BUDGETS or not schedule_differences(row, row["recipe"],
                                                                    BUDGETS[spec.task])

    return {row["recipe"]: float(row["accuracy_pct"]) for row in table_rows(spec, fp_model)
            if current(row)}


def qat_setup(spec: CodesignSpec, task: Any, budget: Any) -> tuple[Any, Any]:
    """(QAT training budget, chip datapath) every QAT measurement of ``spec`` uses: ``budget``
    (default the task's) and the spec's base chip's datapath (its accumulator width and vector
    format)."""
    from accelsim.accuracy.budgets import BUDGETS
    from accelsim.accuracy.evaluate import chip_datapath
    from accelsim.hw import load_hw

    qat_budget = budget if budget is not None else BUDGETS[task.name]
    return qat_budget, chip_datapath(load_hw(spec.hw_path)).datapath


def qat_key(spec: CodesignSpec, task: Any, qat_budget: Any, datapath: Any, config: str) -> str:
    """The store meta key (``qat:KEY``) of ``config``'s QAT measurement."""
    return run_key({"task": task.name, "tiny": spec.tiny, "limit": spec.limit,
                    "checkpoint": spec.checkpoint, "config": config, "seed": spec.seed,
                    "recipe": spec.qat_recipe, "budget": repr(qat_budget),
                    "datapath": repr(datapath), "source": _measurement_digest()})


def measure_qat(spec: CodesignSpec, store: _Store, task: Any, fp_model: Any, groups: Groups,
                configs: Sequence[str], progress: Progress | None, budget: Any, *,
                kind: str = "searched", stage: str = "verify") -> dict[str, dict[str, Any]]:
    """QAT fine-tune each assignment ``config`` from ``fp_model`` and measure it by the integer
    reference: per config, ``{"config", "test_pct", "val_pct", "kind"}``, kept in the store's
    meta (a stored one is not measured again). ``kind`` says why it was measured (``searched``:
    a point the budgets select; ``sampled``: the accuracy model's check)."""
    from accelsim.codesign.verify import verify_assignment
    from accelsim.compress.recipe import load_recipe
    from accelsim.tasks._data import cache_root

    qat_budget, datapath = qat_setup(spec, task, budget)
    out: dict[str, dict[str, Any]] = {}
    for i, config in enumerate(configs):
        assignment = {name: parse_format(fmt, "config") for name, fmt in
                      (item.split("=") for item in config.split())}
        key = qat_key(spec, task, qat_budget, datapath, config)
        stored = store.meta(f"qat:{key}")
        if stored is None:
            run_dir = cache_root() / "codesign" / task.name / key[:16]
            test_pct, val_pct = verify_assignment(task, fp_model, load_recipe(spec.qat_recipe),
                                                  qat_budget, groups.grouping, assignment,
                                                  spec.seed, run_dir, datapath)
            stored = {"config": config, "test_pct": test_pct, "val_pct": val_pct, "kind": kind}
            store.set_meta(f"qat:{key}", stored)
        out[config] = stored
        if progress is not None:
            progress(stage, i + 1, len(configs))
    return out


def _verify(spec: CodesignSpec, store: _Store, task: Any, fp_model: Any, groups: Groups,
            configs: list[str], progress: Progress | None, budget: Any) -> dict[str, float]:
    """QAT test accuracy [%] of each selected point's assignment (:func:`measure_qat`)."""
    measured = measure_qat(spec, store, task, fp_model, groups, configs, progress, budget)
    return {config: float(value["test_pct"]) for config, value in measured.items()}
