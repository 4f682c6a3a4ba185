"""The co-design front of a task: energy per inference against accuracy, searched points beside
the uniform recipes priced on the same hardware grid (``experiments/codesign/results.csv``).

Only QAT-measured accuracies are drawn: a point whose accuracy is the calibration-only prediction
(a lower bound that QAT beats by several points, docs/codesign.md) would share the axis with
numbers of another kind, so the title counts what was left out. The front (least energy for at
least that accuracy) is a dashed step. Each label names the point's recipe (a uniform recipe,
or ``searched@B`` for accuracy budget B) at its cheapest hardware point; the other points of a
recipe are the other hardware points of the grid.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from accelsim.errors import AccelsimError
from accelsim.report.plots.common import (
    axis_label,
    category_styles,
    place_labels,
    plain_number_axis,
    pyplot,
    save_figure,
)

MEASURED = "qat_integer_reference"


def render_codesign_front(frame: pd.DataFrame, task: str, on_front: pd.Series,
                          path: str | Path) -> Path:
    """Draw ``task``'s rows of a co-design results frame to ``path`` (.png or .svg);
    ``on_front`` marks the measured rows on the front (``accelsim.dse.pareto.pareto_front`` over
    least energy and most accuracy)."""
    rows = frame[frame["task"] == task].copy()
    measured = rows[rows["accuracy_source"] == MEASURED].copy()
    if measured.empty:
        raise AccelsimError(f"co-design results: no QAT-measured row of task {task!r}")
    measured["label"] = measured["config"].str.split(" | ", regex=False).str[0]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    labels = sorted(measured["label"].unique(), key=lambda s: (s.startswith("searched"), s))
    for (colour, marker), label in zip(category_styles(len(labels)), labels, strict=True):
        part = measured[measured["label"] == label]
        ax.scatter(part["energy_uj"], part["accuracy_pct"], marker=marker, color=colour, s=36,
                   label=label)
    front = measured[on_front.reindex(measured.index, fill_value=False)].sort_values(
        "energy_uj")
    ax.step(front["energy_uj"], front["accuracy_pct"], where="post", color="black",
            linewidth=0.8, linestyle="--", label="front")
    ax.set_xlabel(axis_label("energy_uj"))
    ax.set_ylabel(axis_label("accuracy_pct") + ", test split")
    left_out = len(rows) - len(measured)
    ax.set_title(f"{task} ({rows['model'].iloc[0]}): QAT-measured points"
                 + (f" ({left_out} with a predicted accuracy only, not drawn)" if left_out
                    else ""), fontsize=9)
    plain_number_axis(ax, "x")
    ax.grid(True, linewidth=0.3)
    cheapest = measured.sort_values("energy_uj").groupby("label", sort=False).head(1)
    place_labels(ax, list(cheapest["energy_uj"]), list(cheapest["accuracy_pct"]),
                 list(cheapest["label"]), fontsize=7)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return save_figure(fig, path, plt)
