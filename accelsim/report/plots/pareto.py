"""Pareto plot of sweep results: one panel per model, its points and its labelled front."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from accelsim.report.plots.common import (
    axis_label,
    category_styles,
    place_labels,
    plain_log_axis,
    plain_number_axis,
    pyplot,
    resolve_column,
    save_figure,
)

if TYPE_CHECKING:
    import pandas as pd

MAX_FRONT_LABELS = 20
# Columns that tell design points apart (besides hw_* fields) in front-point labels.
IDENTITY_LABEL_COLUMNS = ("recipe", "variant")


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
    return save_figure(pareto_figure(info, title), path, pyplot())


def pareto_figure(info: ParetoInfo, title: str = "") -> Any:
    """The figure: one panel per model; one legend for all panels, beside them (never over the
    data); the front points numbered, the numbers placed clear of each other."""
    plt = pyplot()
    n = len(info.panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    key_lines = max((min(len(p.front_order), MAX_FRONT_LABELS) for p in info.panels), default=0)
    panel_height = 5.0 + 0.14 * key_lines
    fig, axes = plt.subplots(rows, cols, figsize=(6.8 * cols, panel_height * rows),
                             squeeze=False, gridspec_kw={"hspace": 0.25 + 0.04 * key_lines})
    scatter = None
    for ax, panel in zip(axes.flat, info.panels, strict=False):
        scatter = _draw_panel(ax, panel, info)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    has_colors = any(p.color is not None and np.isfinite(p.color).any() for p in info.panels)
    if info.color_label and not info.color_categories and scatter is not None and has_colors:
        bar = fig.colorbar(scatter, ax=axes.ravel().tolist(), label=info.color_label,
                           shrink=0.85)
        plain_number_axis(bar.ax, "y")
    _figure_legend(fig, list(axes.flat), info, plt)
    heading = title or "Pareto front"
    if info.note:
        heading += f" ({info.note})"
    # Lift the heading above two-line panel titles (model + a missing-values note).
    lift_in = 0.3 if any(p.note for p in info.panels) else 0.0
    fig.suptitle(heading, y=1.0 + lift_in / fig.get_figheight())
    for ax, panel in zip(axes.flat, info.panels, strict=False):
        _number_front(ax, panel)  # last: the numbers are placed against the final layout
    return fig


def _figure_legend(fig: Any, panels: list[Any], info: ParetoInfo, plt: Any) -> None:
    """One legend right of all panels: what the marks mean, then the categories."""
    line = plt.Line2D
    handles = [line([], [], marker="x", linestyle="", color="lightgray",
                    label="infeasible / fails constraints"),
               line([], [], marker="o", linestyle="-" if info.staircase else "",
                    markerfacecolor="none", color="black", label="Pareto front (numbered)")]
    if not info.color_label:
        handles.insert(1, line([], [], marker="o", linestyle="", color="tab:blue", alpha=0.45,
                               label="design points"))
    if any(p.reference_y is not None for p in info.panels):
        handles.append(line([], [], linestyle="--", color="dimgray", label=info.reference_label))
    if info.color_categories:
        handles.append(line([], [], linestyle="", label=f"\n{info.color_label}:"))
        handles += [line([], [], marker=marker, linestyle="", color=colour, label=name)
                    for (colour, marker), name in zip(category_styles(len(
                        info.color_categories)), info.color_categories, strict=True)]
    # A panel's own box (its key hangs below it, left-aligned), a colour bar's with its label.
    renderer = fig.canvas.get_renderer()
    right = max((ax.get_window_extent(renderer) if ax in panels else ax.get_tightbbox(renderer)).x1
                for ax in fig.axes if ax.get_visible()) / fig.bbox.width
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(right + 0.01, 0.95),
               fontsize=8, frameon=False)


def _draw_panel(ax: Any, panel: ParetoPanel, info: ParetoInfo) -> Any:
    dim = ~panel.eligible
    if dim.any():
        ax.scatter(panel.x[dim], panel.y[dim], s=8, c="lightgray", marker="x", linewidths=0.6)
    ok = panel.eligible & ~panel.front
    scatter = None
    if panel.color is not None and info.color_categories:
        styles = category_styles(len(info.color_categories))
        for index, (colour, marker) in enumerate(styles):
            pick = ok & (panel.color == index)
            if pick.any():
                ax.scatter(panel.x[pick], panel.y[pick], s=12, alpha=0.7, color=colour,
                           marker=marker, linewidths=0)
    elif panel.color is not None and np.isfinite(panel.color).any():
        norm = _normalize(panel.color)
        scatter = ax.scatter(panel.x[ok], panel.y[ok], s=10, c=panel.color[ok], cmap="viridis",
                             norm=norm, alpha=0.6)
    else:
        scatter = ax.scatter(panel.x[ok], panel.y[ok], s=10, c="tab:blue", alpha=0.45)
    order = panel.front_order
    # The front is drawn in black, hollow rings on a step line, so no colour map can hide it.
    if info.staircase:
        ax.step(panel.x[order], panel.y[order], where="post", color="black", linewidth=1.0,
                zorder=3)
    ax.scatter(panel.x[order], panel.y[order], s=46, facecolors="none", edgecolors="black",
               linewidths=1.3, zorder=4)
    _draw_front_key(ax, panel, info.x_label)
    ax.set_xlabel(info.x_label)
    ax.set_ylabel(info.y_label)
    count = f"{len(order)} point{'s' if len(order) != 1 else ''}"
    title = f"{panel.model} (front: {count})" if panel.model else ""
    if title or panel.note:
        ax.set_title(title + (f"\n({panel.note})" if panel.note else ""), fontsize=10)
    if not np.isfinite(panel.x + panel.y).any():
        ax.text(0.5, 0.5, panel.note or "no points", transform=ax.transAxes, ha="center",
                va="center", fontsize=10, color="dimgray")
        ax.set_xticks([])
        ax.set_yticks([])
        return scatter
    if panel.reference_y is not None:
        ax.axhline(panel.reference_y, color="dimgray", linestyle="--", linewidth=1.0)
        ax.annotate(f"{info.reference_label} {panel.reference_y:.4g}", (1.0, panel.reference_y),
                    xycoords=("axes fraction", "data"), xytext=(-2, 2),
                    textcoords="offset points", ha="right", va="bottom", fontsize=7,
                    color="dimgray")
    plain_number_axis(ax, "x")
    plain_number_axis(ax, "y")
    _log_if_wide(ax, panel.x[panel.eligible], "x")
    _log_if_wide(ax, panel.y[panel.eligible], "y")
    ax.grid(True, which="both", alpha=0.25)
    return scatter


def _normalize(values: np.ndarray) -> Any:
    from matplotlib.colors import Normalize

    return Normalize(np.nanmin(values), np.nanmax(values))


def _shown_front(panel: ParetoPanel) -> list[int]:
    """Positions in ``front_order`` that get a number (every one, or evenly spread up to
    :data:`MAX_FRONT_LABELS`)."""
    step = max(1, math.ceil(len(panel.front_order) / MAX_FRONT_LABELS))
    return list(range(0, len(panel.front_order), step))


def _number_front(ax: Any, panel: ParetoPanel) -> None:
    if not np.isfinite(panel.x + panel.y).any():
        return
    shown = [panel.front_order[i] for i in _shown_front(panel)]
    place_labels(ax, panel.x[shown], panel.y[shown], [str(n) for n in range(1, len(shown) + 1)],
                 fontsize=7, fontweight="bold")


def _draw_front_key(ax: Any, panel: ParetoPanel, x_label: str) -> None:
    """The key below the axes spells out what each numbered front point is, so long labels
    never overlap the data or each other."""
    order = panel.front_order
    shown = _shown_front(panel)
    key = [f"{number:>2}  {panel.labels[i] or '(same fields)'}"
           for number, i in enumerate(shown, start=1)]
    if not key:
        return
    more = "" if len(key) == len(order) else f", {len(key)} of {len(order)} shown"
    header = f"Pareto points in order of {x_label}{more}"
    if panel.common:
        header += f"\nall of them: {panel.common}"
    ax.text(0.0, -0.13, header + ":\n" + "\n".join(key), transform=ax.transAxes,
            va="top", ha="left", fontsize=7, family="monospace")


def _log_if_wide(ax: Any, values: np.ndarray, axis: str) -> None:
    """Log scale when the values span more than ~1.5 decades (sweeps over sizes usually do),
    with plain-number ticks at 1, 2, 5 x 10^k."""
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() / values.min() > 30:
        plain_log_axis(ax, axis)
