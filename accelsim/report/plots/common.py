"""What the plot kinds share: axis labels with units, column lookup, run-JSON access, drawing.

Axis labels carry units, derived from the unit suffix of each column name (``latency_ms`` ->
"latency (ms)"); tick labels carry thousands separators (``1,234,567`` cycles). Categories get a
colour and a marker shape each (:func:`category_styles`), and point labels are placed by a
greedy search (:func:`place_labels`) so that they neither overlap each other nor leave the axes.
A greedy search, not adjustText: the labels here are short (a number, a layer role), a fixed
candidate order keeps the output deterministic, and it needs no extra dependency.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from accelsim.errors import AccelsimError
from accelsim.files import read_json

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


def plain_number(value: float, _position: Any = None) -> str:
    """A tick label: ``1,234,567`` for whole numbers from 1,000 up, else the shortest form."""
    if abs(value) >= 1000 and float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:g}"


def plain_number_axis(ax: Any, axis: str) -> None:
    """Tick labels of ``axis`` ("x" or "y") as :func:`plain_number` (thousands separators)."""
    from matplotlib.ticker import FuncFormatter

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(FuncFormatter(plain_number))


def plain_log_axis(ax: Any, axis: str) -> None:
    """Log scale with plain-number ticks at 1, 2, 5 x 10^k (no 2x10^0 labels)."""
    from matplotlib.ticker import LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    plain_number_axis(ax, axis)
    target.set_minor_formatter(NullFormatter())


# tab10's 10 colours against 7 shapes (coprime): 70 distinct pairs, and neighbouring categories
# differ in both colour and shape.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def category_styles(count: int) -> list[tuple[tuple[float, float, float, float], str]]:
    """``count`` distinct (colour, marker) pairs, the same for the points and the legend."""
    import matplotlib

    tab10 = matplotlib.colormaps["tab10"]
    return [(tab10(i % 10), MARKERS[i % len(MARKERS)]) for i in range(count)]


BLOCK_INDEX = re.compile(r"(?:(?<=[./])|^)\d+(?=[./])")  # numeric path parts: block indices
_NODE_SUFFIX = re.compile(r"_\d+$")  # torch.export's per-graph op numbering (add_7)


def layer_role(name: str) -> str:
    """A layer's name with block indices and op numbering removed: the same op in every block
    (``layers.3.fc1`` and ``layers.7.fc1`` -> ``layers.*.fc1``)."""
    return _NODE_SUFFIX.sub("", BLOCK_INDEX.sub("*", name))


# Label offsets (points) tried in order: rings of growing radius, 8 directions on the first ring
# and 16 further out (a label away from its point gets a thin leader line).
_OFFSETS = tuple(
    (round(r * math.cos(a)), round(r * math.sin(a)))
    for r, directions in ((5, 8), (12, 16), (22, 16), (34, 16), (48, 16), (64, 16))
    for a in (math.pi / 4 + 2 * math.pi * i / directions for i in range(directions))
)
_LEADER_FROM = 10  # points: offsets this far get a leader line


def _overlap(a: Any, b: Any) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def _text_box(annotation: Any, renderer: Any) -> Any:
    """The annotation's text alone (an Annotation's own extent includes its leader line)."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)  # place the offset text where it will be drawn
    return Text.get_window_extent(annotation, renderer)


def place_labels(ax: Any, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                 **style: Any) -> list[Any]:
    """Annotate each point with its text at the first offset (of :data:`_OFFSETS`) where the
    label overlaps no label already placed and stays inside the axes, else where it overlaps
    least. Call it once the axes' scales, limits and size are final."""
    renderer = ax.figure.canvas.get_renderer()
    ax.autoscale_view()
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = []
    annotations = []
    for x, y, text in zip(xs, ys, texts, strict=True):
        best, best_cost = None, 0.0
        for dx, dy in _OFFSETS:
            leader = ({"arrowprops": {"arrowstyle": "-", "color": "gray", "linewidth": 0.5,
                                      "shrinkA": 0, "shrinkB": 2}}
                      if math.hypot(dx, dy) >= _LEADER_FROM else {})
            candidate = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points",
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center", **leader, **style)
            box = _text_box(candidate, renderer)
            cost = sum(_overlap(box, other) for other in placed)
            cost += box.width * box.height - _overlap(box, frame)  # the part outside the axes
            if best is None or cost < best_cost:
                if best is not None:
                    best.remove()
                best, best_cost = candidate, cost
            else:
                candidate.remove()
            if cost == 0:
                break
        placed.append(_text_box(best, renderer))
        annotations.append(best)
    return annotations


def run_layers(run: object) -> list[Mapping[str, Any]]:
    layers = run.get("layers") if isinstance(run, Mapping) else None
    if not isinstance(layers, list) or not layers:
        phase = run.get("phase") if isinstance(run, Mapping) else None
        if isinstance(phase, Mapping) and phase.get("phase") == "generate":
            raise AccelsimError("a run of --phase generate has no per-layer table (a table is "
                                "one pass: `accelsim run --phase prefill --json` or `--phase "
                                "decode --json` writes one)")
        raise AccelsimError("run JSON has no 'layers' list (write it with `accelsim run --json`)")
    return layers


def load_run(path: Path) -> Mapping[str, Any]:
    """The run JSON at ``path`` (``accelsim run --json``), checked to hold its layers."""
    run = read_json(path)
    try:
        run_layers(run)
    except AccelsimError as exc:
        raise AccelsimError(f"{path}: {exc}") from None
    return cast(Mapping[str, Any], run)


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
