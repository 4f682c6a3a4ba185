"""The search: an ILP per hardware point (HAWQ-V3 style) inside a loop over hardware points.

Why an ILP and not a sampler (Optuna's NSGA-II / TPE, pymoo): given a hardware point, the
per-group part is a multiple-choice knapsack. The accuracy model is additive by construction
(``accelsim.codesign.accuracy``) and the cost is nearly additive (each group's cost change from
a reference assignment, ``CostCache.deltas``), so ``scipy.optimize.milp`` (HiGHS, installed with
scikit-learn's scipy) returns the optimum of that model in milliseconds with a certificate, for
any number of groups; a sampler would spend thousands of evaluations approximating it and give
no bound. The hardware space is small and discrete (a sweep grid), so it is enumerated; its
objectives (energy, latency, area) are reported per point and the Pareto front is taken over
all of them (``accelsim.dse.pareto``). No new dependency.

The cost surrogate ignores the memory plan's coupling between groups, so every ILP solution is
re-priced exactly (``CostCache.evaluate``, equal to ``simulate``), excluded by a no-good cut and
the ILP solved again, ``solutions_per_point`` times; the exactly cheapest solution that meets
the latency bound is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from accelsim.codesign.accuracy import AccuracyModel
from accelsim.codesign.cost import Cost, CostCache
from accelsim.codesign.groups import Format, Groups
from accelsim.errors import AccelsimError


@dataclass(frozen=True)
class Solution:
    """One assignment with its exact cost, its surrogate energy and predicted accuracy."""

    assignment: tuple[Format, ...]
    cost: Cost
    surrogate_energy_uj: float
    predicted_pct: float | None


def config_string(groups: Groups, assignment: Sequence[Format]) -> str:
    """``group=format`` pairs in group order, space separated (the results' ``config``)."""
    return " ".join(f"{g}={f.name}" for g, f in zip(groups.names, assignment, strict=True))


def solve(energy: np.ndarray, loss: np.ndarray | None, loss_budget: float | None,
          latency: np.ndarray | None, latency_budget: float | None,
          cuts: Sequence[Sequence[int]] = ()) -> tuple[int, ...] | None:
    """Minimize ``sum energy[g, o_g]`` over one option ``o_g`` per group, subject to
    ``sum loss[g, o_g] <= loss_budget`` and ``sum latency[g, o_g] <= latency_budget`` (each
    when given) and to differing from every assignment in ``cuts``; None when infeasible.
    ``inf`` entries are options a group cannot take."""
    groups, options = energy.shape
    size = groups * options
    allowed = np.isfinite(energy).ravel()
    c = np.where(allowed, energy.ravel(), 0.0)
    one_each = np.zeros((groups, size))
    for g in range(groups):
        one_each[g, g * options:(g + 1) * options] = 1.0
    constraints = [LinearConstraint(one_each, 1.0, 1.0)]
    for table, budget in ((loss, loss_budget), (latency, latency_budget)):
        if table is not None and budget is not None:
            row = np.where(allowed, table.ravel(), 0.0)
            constraints.append(LinearConstraint(row[None, :], -np.inf, budget))
    for cut in cuts:
        row = np.zeros(size)
        row[[g * options + o for g, o in enumerate(cut)]] = 1.0
        constraints.append(LinearConstraint(row[None, :], -np.inf, groups - 1))
    result = milp(c, constraints=constraints, integrality=np.ones(size),
                  bounds=Bounds(0.0, allowed.astype(float)))
    if result.status != 0 or result.x is None:
        return None
    chosen = np.round(result.x).reshape(groups, options)
    return tuple(int(np.argmax(row)) for row in chosen)


def search_point(cache: CostCache, options: Sequence[Format],
                 model: AccuracyModel | None, budget_pct: float | None,
                 latency_ms_max: float | None, solutions: int) -> list[Solution]:
    """Up to ``solutions`` distinct ILP optima on ``cache``'s hardware point, each re-priced
    exactly, cheapest exact energy first; those over ``latency_ms_max`` are dropped."""
    if (budget_pct is None) != (model is None):
        raise AccelsimError("accuracy_budget_pct: a budget needs a task's sensitivities and "
                            "sensitivities need a budget")
    groups = len(cache.groups.names)
    # The widest uniform assignment whose tiles fit is the point the deltas start from.
    for fmt in sorted(options, key=lambda f: (f.weight_bits, f.act_bits, not f.sparse),
                      reverse=True):
        reference = (fmt,) * groups
        if cache.evaluate(reference).feasible:
            break
    else:
        return []
    ref_cost, d_energy, d_latency = cache.deltas(reference, options)
    loss = loss_budget = None
    if model is not None and budget_pct is not None:
        loss = model.predicted_loss(options)
        ref_index = options.index(reference[0])
        loss_budget = (budget_pct - model.reference_loss_pct
                       - float(loss[:, ref_index].sum()))
        loss = loss - loss[:, ref_index:ref_index + 1]
    latency_budget = None if latency_ms_max is None else latency_ms_max - ref_cost.latency_ms
    found: list[Solution] = []
    cuts: list[tuple[int, ...]] = []
    for _ in range(solutions):
        choice = solve(d_energy, loss, loss_budget, d_latency, latency_budget, cuts)
        if choice is None:
            break
        cuts.append(choice)
        assignment = tuple(options[o] for o in choice)
        cost = cache.evaluate(assignment)
        surrogate = ref_cost.energy_uj + float(sum(d_energy[g, o] for g, o in enumerate(choice)))
        predicted = None if model is None else model.predict(options, assignment)
        if cost.feasible and (latency_ms_max is None or cost.latency_ms <= latency_ms_max):
            found.append(Solution(assignment, cost, surrogate, predicted))
    return sorted(found, key=lambda s: s.cost.energy_uj)


def run_key(payload: dict) -> str:
    """SHA-256 of a JSON payload: a stored result's identity."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
