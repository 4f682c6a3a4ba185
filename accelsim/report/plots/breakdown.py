"""Per-layer breakdown of one run's JSON: stacked cycles or energy components per layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelsim.errors import AccelsimError
from accelsim.report.plots.common import (
    BLOCK_INDEX,
    hw_name,
    layer_role,
    plain_number_axis,
    pyplot,
    run_layers,
    save_figure,
)

ENERGY_COMPONENTS = ("mac", "sram", "dram", "vector", "leakage")
CYCLE_COMPONENTS = ("compute_cycles", "stall_cycles")


@dataclass(frozen=True)
class BreakdownInfo:
    layers: tuple[str, ...]
    components: tuple[str, ...]
    values: np.ndarray  # layers x components
    value_label: str
    title: str


def breakdown_info(
    run: Mapping[str, Any], metric: str = "cycles", top: int = 30, group_blocks: bool = True
) -> BreakdownInfo:
    """Per-layer stacked components of ``cycles`` (compute, stall) or ``energy`` (mac, sram, ...).

    With ``group_blocks`` the repeated encoder blocks are summed per layer role
    (``encoder.layer.*.attention.query (12 layers)``), in first-seen order. Then the ``top``
    largest bars are kept in order and the rest summed into one bar.
    """
    layers = run_layers(run)
    if metric == "cycles":
        components = CYCLE_COMPONENTS
        values = np.array([[float(layer[c]) for c in components] for layer in layers])
        label = "cycles"
    elif metric == "energy":
        components = ENERGY_COMPONENTS
        values = np.array([[float(layer["energy_uj"][c]) for c in components] for layer in layers])
        label = "energy (µJ)"
    else:
        raise AccelsimError(f"breakdown metric {metric!r} is not one of cycles, energy")
    names = [str(layer["name"]) for layer in layers]
    if group_blocks:
        names, values = _group_blocks(names, values)
    if len(names) > top:
        keep = np.sort(np.argsort(-values.sum(axis=1), kind="stable")[:top])
        rest = np.setdiff1d(np.arange(len(names)), keep)
        names = [names[i] for i in keep] + [f"{len(rest)} other rows"]
        values = np.vstack([values[keep], values[rest].sum(axis=0)])
    return BreakdownInfo(
        layers=tuple(names),
        components=tuple(c.replace("_cycles", "") for c in components),
        values=values,
        value_label=label,
        title=f"{run.get('model', '')} on {hw_name(run)}: {label} by layer",
    )


def _group_blocks(names: Sequence[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sum rows that are the same op of different blocks (``layers.3.fc1`` ~ ``layers.7.fc1``).

    An op is its name with block indices and op numbering removed, plus its ordinal among such
    ops in its block (attention's first matmul, QK^T, stays apart from its second, PV).
    """
    groups: dict[str, list[int]] = {}
    seen: dict[tuple[tuple[str, ...], str], int] = {}
    for i, name in enumerate(names):
        block = tuple(BLOCK_INDEX.findall(name))
        pattern = layer_role(name)
        ordinal = seen.get((block, pattern), 0)
        seen[(block, pattern)] = ordinal + 1
        groups.setdefault(pattern if ordinal == 0 else f"{pattern} #{ordinal + 1}", []).append(i)
    labels = [key if len(rows) == 1 else f"{key} ({len(rows)} layers)"
              for key, rows in groups.items()]
    return labels, np.array([values[rows].sum(axis=0) for rows in groups.values()])


def render_breakdown(info: BreakdownInfo, path: str | Path) -> Path:
    return save_figure(breakdown_figure(info), path, pyplot())


def breakdown_figure(info: BreakdownInfo) -> Any:
    """The figure: stacked horizontal bars, the legend beside the axes."""
    plt = pyplot()
    height = max(4.0, 0.22 * len(info.layers) + 1.5)
    fig, ax = plt.subplots(figsize=(9, height))
    positions = np.arange(len(info.layers))
    left = np.zeros(len(info.layers))
    for j, component in enumerate(info.components):
        ax.barh(positions, info.values[:, j], left=left, label=component, height=0.8)
        left += info.values[:, j]
    ax.set_yticks(positions, info.layers, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(info.value_label)
    ax.set_title(info.title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="x", alpha=0.3)
    plain_number_axis(ax, "x")
    return fig
