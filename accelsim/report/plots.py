"""Plots: Pareto fronts of sweep results, per-layer breakdowns and rooflines of a single run.

Each plot is two steps: ``*_info`` computes what to draw (validated, testable, no matplotlib) and
``render_*`` draws it to a PNG or SVG file chosen by suffix. Axis labels carry units, derived from
the unit suffix of each column name (``latency_ms`` -> "latency (ms)").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    import pandas as pd

FORMATS = (".png", ".svg")
UNITS = {
    "_ms": "ms", "_uj": "µJ", "_pj": "pJ", "_mm2": "mm²", "_pct": "%", "_bytes": "bytes",
    "_kib": "KiB", "_gbps": "GB/s", "_mhz": "MHz", "_bits": "bits", "_nm": "nm",
}
# Columns whose unit is the whole name.
NAMED_LABELS = {
    "tops_per_w": "efficiency (TOPS/W)", "tops": "throughput (TOPS)", "cycles": "cycles",
    "macs": "MACs", "utilization": "utilization (fraction of PE-cycles)",
}
ENERGY_COMPONENTS = ("mac", "sram", "dram", "vector", "leakage")
CYCLE_COMPONENTS = ("compute_cycles", "stall_cycles")
MAX_FRONT_LABELS = 20
# Columns that tell design points apart (besides hw_* fields) in front-point labels.
IDENTITY_LABEL_COLUMNS = ("recipe", "variant")


def axis_label(column: str) -> str:
    """``latency_ms`` -> ``latency (ms)``; ``hw_array_rows`` -> ``array rows``."""
    if column in NAMED_LABELS:
        return NAMED_LABELS[column]
    name = column.removeprefix("hw_")
    for suffix, unit in UNITS.items():
        if name.endswith(suffix):
            return f"{name[: -len(suffix)].replace('_', ' ')} ({unit})"
    return name.replace("_", " ")


def resolve_column(frame: pd.DataFrame, name: str) -> str:
    """A column by exact name or by unit-less prefix (``accuracy`` -> ``accuracy_pct``)."""
    if name in frame:
        return name
    matches = [c for c in frame.columns if c.startswith(name + "_")]
    if len(matches) == 1:
        return matches[0]
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "fiub"]
    raise AccelsimError(
        f"column {name!r} is not in the results (numeric columns: {', '.join(numeric)})"
    )


# ---------------------------------------------------------------------------------------------
# Pareto


@dataclass(frozen=True)
class ParetoPanel:
    """One model's points: coordinates, colour values, the front, and labels of front points."""

    model: str
    x: np.ndarray
    y: np.ndarray
    color: np.ndarray | None
    eligible: np.ndarray
    front: np.ndarray
    front_order: np.ndarray
    labels: tuple[str, ...]
    common: str
    reference_y: float | None
    note: str


@dataclass(frozen=True)
class ParetoInfo:
    panels: tuple[ParetoPanel, ...]
    x_label: str
    y_label: str
    color_label: str | None
    color_categories: tuple[str, ...]
    note: str
    staircase: bool
    reference_label: str


def pareto_info(
    frame: pd.DataFrame,
    x: str,
    y: str,
    front: pd.Series,
    eligible: pd.Series,
    *,
    color: str | None = None,
    staircase: bool = True,
    references: Mapping[str, float] | None = None,
    reference_label: str = "",
) -> ParetoInfo:
    """What a Pareto plot draws: one panel per model, its points, its front and their labels.

    ``front`` marks the non-dominated rows (computed per model by ``accelsim.dse.pareto``),
    ``eligible`` the feasible rows that meet the constraints; both align with ``frame``.
    ``staircase`` joins the front with a step line: right for a front over exactly x and y, not
    for the projection of a front over more objectives. ``references`` (model -> y value) draws
    a dashed horizontal line per panel, e.g. each model's FP32 accuracy.
    """
    x, y = resolve_column(frame, x), resolve_column(frame, y)
    color = resolve_column(frame, color) if color else None
    mask_all = eligible.to_numpy(bool)
    front_all = front.to_numpy(bool)
    categories: tuple[str, ...] = ()
    # A column with no values at all (accuracy before the accuracy results exist) is said so.
    missing = [c for c in (x, y, color) if c is not None and frame[c].isna().all()]
    note = ", ".join(f"{axis_label(c)}: not available" for c in missing)
    if color is not None and frame[color].dtype.kind not in "fiub":
        categories = tuple(sorted(frame[color].astype(str).unique()))
    panels = []
    implied = _implied_by_variant(frame)
    models = frame["model"] if "model" in frame else np.full(len(frame), "")
    for model in dict.fromkeys(models):
        rows = np.flatnonzero(np.asarray(models) == model)
        part = frame.iloc[rows]
        front = front_all[rows]
        order = np.flatnonzero(front)[np.argsort(part[x].to_numpy(float)[front], kind="stable")]
        labels, common = _front_labels(part.iloc[order], part, implied)
        panels.append(ParetoPanel(
            model=str(model),
            x=part[x].to_numpy(float),
            y=part[y].to_numpy(float),
            color=None if color is None else (
                np.array([categories.index(v) for v in part[color].astype(str)])
                if categories else part[color].to_numpy(float)
            ),
            eligible=mask_all[rows],
            front=front,
            front_order=order,
            labels=labels,
            common=common,
            reference_y=(references or {}).get(str(model)),
            note=_missing_note(part, (x, y)),
        ))
    return ParetoInfo(
        panels=tuple(panels),
        x_label=axis_label(x),
        y_label=axis_label(y),
        color_label=None if color is None else axis_label(color),
        color_categories=categories,
        note=note,
        staircase=staircase,
        reference_label=reference_label,
    )


def _missing_note(part: pd.DataFrame, columns: Sequence[str]) -> str:
    """Say which axis values are missing: all of them, or how many points lack one."""
    notes = []
    for column in columns:
        missing = int(part[column].isna().sum())
        if missing == len(part):
            notes.append(f"{axis_label(column)}: not available")
        elif missing:
            notes.append(f"{missing} of {len(part)} points without {axis_label(column)}")
    return ", ".join(notes)


def _implied_by_variant(frame: pd.DataFrame) -> set[str]:
    """Columns a design point's variant already determines (its recipe and the fields it sets)."""
    if "variant" not in frame or not frame["variant"].astype(bool).any():
        return set()
    columns = [c for c in frame.columns if c.startswith("hw_") or c == "recipe"]
    counts = frame.groupby("variant")[columns].nunique(dropna=False).max()
    return {c for c in columns if counts[c] <= 1}


def _front_labels(
    front: pd.DataFrame, panel: pd.DataFrame, implied: set[str]
) -> tuple[tuple[str, ...], str]:
    """Per front point, the swept fields that differ among front points; and, once, the swept
    fields that all front points share (``dataflow=os``)."""
    columns = [c for c in front.columns if c.startswith("hw_") and c not in implied] + [
        c for c in IDENTITY_LABEL_COLUMNS if c in front and c not in implied
    ]
    swept = [c for c in columns if panel[c].astype(str).nunique() > 1]
    varying = [c for c in swept if front[c].astype(str).nunique() > 1]
    shared = [c for c in swept if c not in varying and len(front)]
    short = _short_names(swept)

    def describe(row: pd.Series, names: Sequence[str]) -> str:
        return " ".join(
            str(row[c]) if c in IDENTITY_LABEL_COLUMNS else f"{short[c]}={_fmt(row[c])}"
            for c in names
        )

    if len(front) == 1:  # a lone front point is described in full on its own line
        return (describe(front.iloc[0], shared),), ""
    labels = tuple(describe(row, varying) for _, row in front.iterrows())
    return labels, describe(front.iloc[0], shared) if shared else ""


# Name tails that say too little alone (which buffer's size_kib?).
_TOO_SHORT = ("kib", "size_kib", "gbps", "bits", "mhz", "support")


def _short_names(columns: Sequence[str]) -> dict[str, str]:
    """``hw_array_rows`` -> ``rows`` when unambiguous among ``columns``, else longer."""
    names = {}
    for column in columns:
        words = column.removeprefix("hw_").split("_")
        for take in range(1, len(words) + 1):
            candidate = "_".join(words[-take:])
            others = [c for c in columns if c != column and c.endswith("_" + candidate)]
            if not others and candidate not in _TOO_SHORT:
                break
        names[column] = candidate
    return names


def _fmt(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:.4g}"
    return str(value)


def render_pareto(info: ParetoInfo, path: str | Path, title: str = "") -> Path:
    plt = _pyplot()
    n = len(info.panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    key_lines = max((min(len(p.front_order), MAX_FRONT_LABELS) for p in info.panels), default=0)
    panel_height = 5.0 + 0.14 * key_lines
    fig, axes = plt.subplots(rows, cols, figsize=(6.8 * cols, panel_height * rows),
                             squeeze=False, gridspec_kw={"hspace": 0.25 + 0.04 * key_lines})
    scatter = None
    for ax, panel in zip(axes.flat, info.panels, strict=False):
        scatter = _draw_panel(ax, panel, info, plt)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    has_colors = any(p.color is not None and np.isfinite(p.color).any() for p in info.panels)
    if info.color_label and not info.color_categories and scatter is not None and has_colors:
        fig.colorbar(scatter, ax=axes.ravel().tolist(), label=info.color_label, shrink=0.85)
    if info.color_categories:
        cmap = plt.get_cmap("tab10")
        handles = [
            plt.Line2D([], [], marker="o", linestyle="", color=cmap(i % 10), label=name)
            for i, name in enumerate(info.color_categories)
        ]
        axes.flat[0].legend(handles=handles, title=info.color_label, fontsize=8, loc="upper right")
    heading = title or "Pareto front"
    if info.note:
        heading += f" ({info.note})"
    # Lift the heading above two-line panel titles (model + a missing-values note).
    lift_in = 0.3 if any(p.note for p in info.panels) else 0.0
    fig.suptitle(heading, y=1.0 + lift_in / fig.get_figheight())
    return _save(fig, path, plt)


def _draw_panel(ax: Any, panel: ParetoPanel, info: ParetoInfo, plt: Any) -> Any:
    dim = ~panel.eligible
    if dim.any():
        ax.scatter(panel.x[dim], panel.y[dim], s=8, c="lightgray", marker="x", linewidths=0.6,
                   label="infeasible / fails constraints")
    ok = panel.eligible & ~panel.front
    if panel.color is not None and np.isfinite(panel.color).any():
        cmap = "tab10" if info.color_categories else "viridis"
        norm = (None if info.color_categories else
                plt.Normalize(np.nanmin(panel.color), np.nanmax(panel.color)))
        scatter = ax.scatter(panel.x[ok], panel.y[ok], s=10, c=panel.color[ok], cmap=cmap,
                             norm=norm, vmin=0 if info.color_categories else None,
                             vmax=9 if info.color_categories else None, alpha=0.6)
    else:
        scatter = ax.scatter(panel.x[ok], panel.y[ok], s=10, c="tab:blue", alpha=0.45,
                             label="design points")
    order = panel.front_order
    # The front is drawn in black, hollow rings on a step line, so no colour map can hide it.
    if info.staircase:
        ax.step(panel.x[order], panel.y[order], where="post", color="black", linewidth=1.0,
                zorder=3)
    ax.scatter(panel.x[order], panel.y[order], s=46, facecolors="none", edgecolors="black",
               linewidths=1.3, zorder=4, label=f"Pareto front ({len(order)} points)")
    _draw_front_key(ax, panel, info.x_label)
    ax.set_xlabel(info.x_label)
    ax.set_ylabel(info.y_label)
    if panel.model or panel.note:
        ax.set_title(panel.model + (f"\n({panel.note})" if panel.note else ""), fontsize=10)
    if not np.isfinite(panel.x + panel.y).any():
        ax.text(0.5, 0.5, panel.note or "no points", transform=ax.transAxes, ha="center",
                va="center", fontsize=10, color="dimgray")
        ax.set_xticks([])
        ax.set_yticks([])
        return scatter
    if panel.reference_y is not None:
        ax.axhline(panel.reference_y, color="dimgray", linestyle="--", linewidth=1.0,
                   label=f"{info.reference_label} {panel.reference_y:.4g}")
    _log_if_wide(ax, panel.x[panel.eligible], "x")
    _log_if_wide(ax, panel.y[panel.eligible], "y")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    return scatter


def _draw_front_key(ax: Any, panel: ParetoPanel, x_label: str) -> None:
    """Number the front points; the key below the axes spells out what each one is, so long
    labels never overlap the data or each other."""
    order = panel.front_order
    step = max(1, math.ceil(len(order) / MAX_FRONT_LABELS))
    key = []
    for number, i in enumerate(range(0, len(order), step), start=1):
        ax.annotate(str(number), (panel.x[order[i]], panel.y[order[i]]), fontsize=7,
                    fontweight="bold", xytext=(4, 4), textcoords="offset points")
        key.append(f"{number:>2}  {panel.labels[i] or '(same fields)'}")
    if not key:
        return
    shown = "" if step == 1 else f", {len(key)} of {len(order)} shown"
    header = f"Pareto points in order of {x_label}{shown}"
    if panel.common:
        header += f"\nall of them: {panel.common}"
    ax.text(0.0, -0.13, header + ":\n" + "\n".join(key), transform=ax.transAxes,
            va="top", ha="left", fontsize=7, family="monospace")


def _log_if_wide(ax: Any, values: np.ndarray, axis: str) -> None:
    """Log scale when the values span more than ~1.5 decades (sweeps over sizes usually do),
    with plain-number ticks at 1, 2, 5 x 10^k."""
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() / values.min() > 30:
        _plain_log_axis(ax, axis)


def _plain_log_axis(ax: Any, axis: str) -> None:
    """Log scale with plain-number ticks at 1, 2, 5 x 10^k (no 2x10^0 labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------------------------------------
# Breakdown (one run's JSON)


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
    layers = _layers(run)
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
        title=f"{run.get('model', '')} on {_hw_name(run)}: {label} by layer",
    )


_BLOCK_INDEX = re.compile(r"(?:(?<=[./])|^)\d+(?=[./])")  # numeric path parts: block indices
_NODE_SUFFIX = re.compile(r"_\d+$")  # torch.export's per-graph op numbering (add_7)


def _group_blocks(names: Sequence[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sum rows that are the same op of different blocks (``layers.3.fc1`` ~ ``layers.7.fc1``).

    An op is its name with block indices and op numbering removed, plus its ordinal among such
    ops in its block (attention's first matmul, QK^T, stays apart from its second, PV).
    """
    groups: dict[str, list[int]] = {}
    seen: dict[tuple[tuple[str, ...], str], int] = {}
    for i, name in enumerate(names):
        block = tuple(_BLOCK_INDEX.findall(name))
        pattern = _NODE_SUFFIX.sub("", _BLOCK_INDEX.sub("*", name))
        ordinal = seen.get((block, pattern), 0)
        seen[(block, pattern)] = ordinal + 1
        groups.setdefault(pattern if ordinal == 0 else f"{pattern} #{ordinal + 1}", []).append(i)
    labels = [key if len(rows) == 1 else f"{key} ({len(rows)} layers)"
              for key, rows in groups.items()]
    return labels, np.array([values[rows].sum(axis=0) for rows in groups.values()])


def render_breakdown(info: BreakdownInfo, path: str | Path) -> Path:
    plt = _pyplot()
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
    return _save(fig, path, plt)


# ---------------------------------------------------------------------------------------------
# Roofline (one run's JSON)


@dataclass(frozen=True)
class RooflineInfo:
    names: tuple[str, ...]
    intensity_ops_per_byte: np.ndarray
    achieved_tops: np.ndarray
    sparse: np.ndarray
    peak_tops: float
    sparse_peak_tops: float | None
    bandwidth_gbps: float
    title: str
    skipped: int


def roofline_info(run: Mapping[str, Any], hw: Mapping[str, Any] | None = None) -> RooflineInfo:
    """GEMM layers as (ops per DRAM byte, achieved TOPS) under the array's compute and DRAM roofs.

    ``hw`` is the run's hardware config as a dict (``hw_to_dict``); by default the run JSON's own
    ``hw`` entry when that is a dict. One MAC is 2 ops. Layers that move no DRAM bytes (everything
    on chip) have no finite intensity and are counted in ``skipped``.
    """
    hw = hw if hw is not None else run.get("hw")
    try:
        rows, cols = hw["array"]["rows"], hw["array"]["cols"]
        clock_mhz = float(hw["array"]["clock_mhz"])
        bandwidth = float(hw["dram"]["bandwidth_gbps"])
        sparse_support = hw["sparsity"]["support"] == "2:4"
    except (KeyError, TypeError):
        raise AccelsimError(
            "roofline: needs the run's hardware config (array.rows/cols/clock_mhz, "
            "dram.bandwidth_gbps, sparsity.support); give it with --hw PATH [--set KEY=VALUE]"
        ) from None
    gemms = [layer for layer in _layers(run) if layer.get("op") == "gemm"]
    ops = np.array([2.0 * float(g["macs"]) for g in gemms])
    dram = np.array([float(g["dram_bytes"]) for g in gemms])
    seconds = np.array([float(g["cycles"]) for g in gemms]) / (clock_mhz * 1e6)
    ok = (dram > 0) & (seconds > 0) & (ops > 0)
    peak = 2 * rows * cols * clock_mhz * 1e6 / 1e12
    return RooflineInfo(
        names=tuple(str(g["name"]) for g, keep in zip(gemms, ok, strict=True) if keep),
        intensity_ops_per_byte=ops[ok] / dram[ok],
        achieved_tops=ops[ok] / seconds[ok] / 1e12,
        sparse=np.array([g.get("sparsity") == "2:4" for g in gemms], bool)[ok],
        peak_tops=peak,
        sparse_peak_tops=2 * peak if sparse_support else None,
        bandwidth_gbps=bandwidth,
        title=f"{run.get('model', '')} on {hw.get('name', _hw_name(run))}: roofline",
        skipped=int((~ok).sum()),
    )


def render_roofline(info: RooflineInfo, path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    # Span the layers and the ridge points (where bandwidth stops limiting), with some margin.
    ridge = info.peak_tops * 1e3 / info.bandwidth_gbps
    ridges = [ridge] if info.sparse_peak_tops is None else [ridge, 2 * ridge]
    span = [*info.intensity_ops_per_byte, *ridges]
    low, high = min(span) / 4, max(span) * 4
    grid = np.geomspace(low, high, 200)
    memory_tops = info.bandwidth_gbps * grid / 1e3
    ax.plot(grid, np.minimum(memory_tops, info.peak_tops), color="black",
            label=f"roof: {info.peak_tops:.3g} TOPS dense, {info.bandwidth_gbps:g} GB/s DRAM")
    if info.sparse_peak_tops is not None:
        ax.plot(grid, np.minimum(memory_tops, info.sparse_peak_tops), color="gray",
                linestyle="--", label=f"2:4 effective roof: {info.sparse_peak_tops:.3g} TOPS")
    for sparse, colour, name in ((False, "tab:blue", "dense GEMM"), (True, "tab:orange",
                                                                       "2:4 GEMM")):
        pick = info.sparse == sparse
        if pick.any():
            ax.scatter(info.intensity_ops_per_byte[pick], info.achieved_tops[pick], s=14,
                       color=colour, alpha=0.7, label=f"{name} layers", zorder=3)
    _plain_log_axis(ax, "x")
    _plain_log_axis(ax, "y")
    ax.set_xlabel("operational intensity (ops / DRAM byte)")
    ax.set_ylabel("achieved performance (TOPS)")
    title = info.title
    if info.skipped:
        title += f"\n({info.skipped} GEMM layers with no DRAM traffic not shown)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path, plt)


# ---------------------------------------------------------------------------------------------


def _layers(run: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    layers = run.get("layers") if isinstance(run, Mapping) else None
    if not isinstance(layers, list) or not layers:
        raise AccelsimError("run JSON has no 'layers' list (write it with `accelsim run --json`)")
    return layers


def _hw_name(run: Mapping[str, Any]) -> str:
    hw = run.get("hw")
    return str(hw.get("name", "")) if isinstance(hw, Mapping) else str(hw or "")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path, plt: Any) -> Path:
    path = Path(path)
    if path.suffix not in FORMATS:
        plt.close(fig)
        raise AccelsimError(f"{path}: plot format {path.suffix!r} is not one of .png, .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    # SVG text stays text; a fixed date keeps committed plots byte-stable across runs.
    metadata = {"Date": None} if path.suffix == ".svg" else {}
    fig.savefig(path, dpi=130, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return path
