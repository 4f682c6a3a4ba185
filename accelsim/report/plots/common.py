"""What the plot kinds share: axis labels with units, column lookup, run-JSON access, drawing.

Axis labels carry units, derived from the unit suffix of each column name (``latency_ms`` ->
"latency (ms)").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def plain_log_axis(ax: Any, axis: str) -> None:
    """Log scale with plain-number ticks at 1, 2, 5 x 10^k (no 2x10^0 labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())


def run_layers(run: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    layers = run.get("layers") if isinstance(run, Mapping) else None
    if not isinstance(layers, list) or not layers:
        raise AccelsimError("run JSON has no 'layers' list (write it with `accelsim run --json`)")
    return layers


def hw_name(run: Mapping[str, Any]) -> str:
    hw = run.get("hw")
    return str(hw.get("name", "")) if isinstance(hw, Mapping) else str(hw or "")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, plt: Any) -> Path:
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
