"""Non-dominated (Pareto) sets: pure functions over arrays and result frames.

A point dominates another when it is no worse in every objective and strictly better in one
("worse" by each objective's sense, ``min`` or ``max``). Rows with a NaN objective, or excluded by
the ``eligible`` mask (infeasible, or failing a constraint), are never on the front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    import pandas as pd

Sense = Literal["min", "max"]
SENSES: tuple[str, ...] = ("min", "max")
# The objective senses a user means without saying; anything else must be given.
DEFAULT_SENSES: dict[str, Sense] = {
    "cycles": "min", "latency_ms": "min", "energy_uj": "min", "area_mm2": "min",
    "dram_bytes": "min", "accuracy_pct": "max", "tops": "max", "tops_per_w": "max",
    "utilization": "max",
}


def pareto_mask(
    values: np.ndarray, senses: Sequence[str], eligible: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n points x d objectives).

    Duplicated non-dominated points are all kept. Cost O(n log n + n * front size * d).
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(senses) or not senses:
        raise AccelsimError(
            f"pareto: values of shape {values.shape} do not match {len(senses)} objective senses"
        )
    for sense in senses:
        if sense not in SENSES:
            raise AccelsimError(f"pareto: sense {sense!r} is not one of {', '.join(SENSES)}")
    signs = np.array([1.0 if s == "min" else -1.0 for s in senses])
    costs = values * signs
    candidates = ~np.isnan(costs).any(axis=1)
    if eligible is not None:
        candidates &= np.asarray(eligible, dtype=bool)
    index = np.flatnonzero(candidates)
    # Lexicographic order: a later point can never dominate an earlier one, so each point only
    # needs checking against the front kept so far.
    order = index[np.lexsort(costs[index].T[::-1])]
    front: list[int] = []
    front_costs = np.empty((len(order), costs.shape[1]))
    for i in order:
        point = costs[i]
        kept = front_costs[: len(front)]
        if not np.any(np.all(kept <= point, axis=1) & np.any(kept < point, axis=1)):
            front_costs[len(front)] = point
            front.append(i)
    mask = np.zeros(len(values), dtype=bool)
    mask[front] = True
    return mask


def parse_objectives(items: Sequence[str]) -> dict[str, Sense]:
    """``["latency_ms", "accuracy_pct:max"]`` -> ``{"latency_ms": "min", "accuracy_pct": "max"}``.

    A name without a sense takes its default from :data:`DEFAULT_SENSES`.
    """
    objectives: dict[str, Sense] = {}
    for item in items:
        name, _, sense = item.partition(":")
        sense = sense or DEFAULT_SENSES.get(name, "")
        if sense not in SENSES:
            raise AccelsimError(
                f"objective {item!r}: give a sense as NAME:min or NAME:max (known defaults: "
                f"{', '.join(f'{k}:{v}' for k, v in DEFAULT_SENSES.items())})"
            )
        objectives[name] = sense  # type: ignore[assignment]
    return objectives


def pareto_front(
    frame: pd.DataFrame,
    objectives: Mapping[str, str],
    eligible: pd.Series | None = None,
    by: str | None = None,
) -> pd.Series:
    """Boolean Series: the frame's non-dominated rows over ``{column: sense}``.

    With ``by`` (a column such as ``model``) each group gets its own front: design points of
    different workloads do not compete.
    """
    import pandas as pd

    if by is not None and by in frame:
        parts = [
            pareto_front(group, objectives, None if eligible is None else eligible.loc[group.index])
            for _, group in frame.groupby(by, sort=False)
        ]
        return pd.concat(parts).reindex(frame.index) if parts else pd.Series(
            [], dtype=bool, name="on_front"
        )
    missing = [name for name in objectives if name not in frame]
    if missing:
        raise AccelsimError(
            f"pareto: no column {missing[0]!r} in the results (columns: {', '.join(frame)})"
        )
    values = frame[list(objectives)].astype(float).to_numpy()
    mask = pareto_mask(
        values, list(objectives.values()), None if eligible is None else eligible.to_numpy()
    )
    return pd.Series(mask, index=frame.index, name="on_front")
