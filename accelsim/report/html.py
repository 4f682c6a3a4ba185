"""Interactive reports: one self-contained HTML page (Plotly, its JavaScript inlined).

* :func:`pareto_explorer_html`: a sweep's design points, one panel, with selectable x and y axes
  among the objective columns, the Pareto front of each model for the chosen pair (computed by
  the caller for every pair, since the front depends on the axes), points filtered by model and
  by variant (checkboxes), and a hover that shows a point's full design point: model, variant,
  recipe, every hardware field and every metric.
* :func:`run_report_html`: one run's JSON as its per-layer breakdown: stacked cycles (compute,
  stall) and energy by component for every layer, the layer's shape, bits and sparsity on hover,
  with the run's totals and design point above.

The pages need no network: ``include_plotlyjs=True`` writes plotly.js (~4.5 MB) into the file,
and the few lines of JavaScript the controls need are inline too. Building a page imports plotly
(and pandas for the sweep), nothing of torch.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError
from accelsim.report.plots.breakdown import ENERGY_COMPONENTS
from accelsim.report.plots.common import axis_label, category_styles, hw_name, run_layers

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

PLOT_ID = "accelsim-plot"
# Plotly marker names for the plots' matplotlib shapes (common.MARKERS), in the same order.
_PLOTLY_SYMBOLS = {"o": "circle", "s": "square", "^": "triangle-up", "D": "diamond",
                   "v": "triangle-down", "P": "cross", "X": "x"}
_STYLE = """
body { font-family: sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: 0.2em; }
.summary { color: #444; font-size: 0.9em; margin: 0.2em 0 0.8em; }
.controls { display: flex; flex-wrap: wrap; gap: 1.5em; font-size: 0.9em; margin-bottom: 0.5em; }
.controls fieldset { border: 1px solid #ccc; padding: 0.3em 0.8em; }
.controls label { margin-right: 0.8em; white-space: nowrap; }
"""


@dataclass(frozen=True)
class ExplorerData:
    """What the Pareto explorer shows. ``fronts[(x, y)][model]``: row positions of that model's
    front over the pair, in order of x (computed by the caller, e.g. with ``dse.pareto``)."""

    frame: pd.DataFrame
    axes: tuple[str, ...]
    eligible: np.ndarray
    fronts: Mapping[tuple[str, str], Mapping[str, Sequence[int]]]
    x: str
    y: str
    title: str


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _cell(value: Any) -> str:
    number = _number(value)
    if number is None or isinstance(value, str):
        return html.escape(str(value))
    if float(number).is_integer() and abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:.6g}"


def design_point_text(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """A point's hover text: every given column as ``name: value``, one per line."""
    return "<br>".join(f"<b>{html.escape(c)}</b>: {_cell(row[c])}" for c in columns)


def _hover_columns(frame: pd.DataFrame) -> list[str]:
    identity = [c for c in ("model", "variant", "recipe") if c in frame]
    hardware = [c for c in frame.columns if c.startswith("hw_")]
    rest = [c for c in frame.columns if c not in identity and c not in hardware
            and c not in ("key", "torch_loaded")]
    return identity + hardware + rest


def pareto_explorer_html(data: ExplorerData) -> str:
    """The explorer page for a sweep's results (see the module docstring)."""
    import plotly.graph_objects as go

    frame = data.frame.reset_index(drop=True)
    if len(frame) == 0:
        raise AccelsimError("report: the results hold no design points")
    for axis in (data.x, data.y):
        if axis not in data.axes:
            raise AccelsimError(f"report: axis {axis!r} is not one of {', '.join(data.axes)}")
    models = [str(m) for m in dict.fromkeys(frame["model"])] if "model" in frame else [""]
    model_of = frame["model"].astype(str).tolist() if "model" in frame else [""] * len(frame)
    has_variants = "variant" in frame and frame["variant"].astype(str).str.len().gt(0).any()
    variant_of = frame["variant"].astype(str).tolist() if has_variants else [""] * len(frame)
    variants = list(dict.fromkeys(variant_of))
    hover = [design_point_text(row, _hover_columns(frame)) for _, row in frame.iterrows()]
    columns = {axis: [_number(v) for v in frame[axis]] for axis in data.axes}

    # One trace per (model, variant) of eligible points, one of the rest, one front per model.
    traces: list[dict[str, Any]] = []
    fig = go.Figure()
    styles = dict(zip(variants, category_styles(len(variants)), strict=True))
    for model in models:
        for variant in variants:
            rows = [i for i in range(len(frame)) if data.eligible[i] and model_of[i] == model
                    and variant_of[i] == variant]
            if not rows:
                continue
            colour, marker = styles[variant]
            name = " / ".join(part for part in (model, variant) if part) or "design points"
            fig.add_trace(go.Scatter(
                mode="markers", name=name, text=[hover[i] for i in rows],
                hovertemplate="%{text}<extra></extra>",
                marker={"color": _rgb(colour), "symbol": _PLOTLY_SYMBOLS[marker], "size": 7,
                        "opacity": 0.75}))
            traces.append({"rows": rows, "model": model, "variant": variant, "kind": "points"})
    rest = [i for i in range(len(frame)) if not data.eligible[i]]
    if rest:
        fig.add_trace(go.Scatter(
            mode="markers", name="infeasible / fails constraints", text=[hover[i] for i in rest],
            hovertemplate="%{text}<extra></extra>",
            marker={"color": "lightgray", "symbol": "x", "size": 6}))
        traces.append({"rows": rest, "model": None, "variant": None, "kind": "ineligible",
                       "models": [model_of[i] for i in rest],
                       "variants": [variant_of[i] for i in rest]})
    for model in models:
        fig.add_trace(go.Scatter(
            mode="lines+markers", name=f"Pareto front {model}".strip(), line={"shape": "hv",
                                                                           "color": "black"},
            marker={"size": 11, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 2}},
            hovertemplate="%{text}<extra>Pareto front</extra>"))
        traces.append({"rows": [], "model": model, "variant": None, "kind": "front"})
    fig.update_layout(
        template="plotly_white", height=700, legend={"x": 1.02, "y": 1, "xanchor": "left"},
        margin={"l": 70, "r": 20, "t": 30, "b": 60}, hoverlabel={"align": "left"})
    fig.update_xaxes(separatethousands=True, exponentformat="none")
    fig.update_yaxes(separatethousands=True, exponentformat="none")
    payload = {
        "columns": columns, "labels": {a: axis_label(a) for a in data.axes}, "hover": hover,
        "traces": traces,
        "fronts": {f"{x}|{y}": {m: list(map(int, rows)) for m, rows in per_model.items()}
                   for (x, y), per_model in data.fronts.items()},
        "x": data.x, "y": data.y,
    }
    controls = [_select("x", "x axis", data.axes, data.x),
                _select("y", "y axis", data.axes, data.y)]
    if len(models) > 1:
        controls.append(_checkboxes("model", "models", models))
    if has_variants:
        controls.append(_checkboxes("variant", "variants", variants))
    summary = (f"{len(frame):,} design points, {int(data.eligible.sum()):,} feasible and within "
               f"the constraints; hover a point for its full design point. The front is each "
               f"model's, over the two axes shown, among all its eligible points.")
    return _page(data.title, summary, "".join(controls), fig, _EXPLORER_JS, payload)


def _rgb(colour: Sequence[float]) -> str:
    red, green, blue = (round(255 * c) for c in colour[:3])
    return f"rgb({red},{green},{blue})"


def _select(name: str, label: str, options: Sequence[str], chosen: str) -> str:
    items = "".join(
        f'<option value="{html.escape(o)}"{" selected" if o == chosen else ""}>'
        f"{html.escape(axis_label(o))}</option>" for o in options)
    return f'<label>{label} <select id="axis-{name}">{items}</select></label>'


def _checkboxes(name: str, legend: str, values: Sequence[str]) -> str:
    boxes = "".join(
        f'<label><input type="checkbox" class="filter-{name}" value="{html.escape(v)}" checked>'
        f" {html.escape(v)}</label>" for v in values)
    return f"<fieldset><legend>{legend}</legend>{boxes}</fieldset>"


# Applies the chosen axes and filters to every trace: a points trace shows its rows when its
# model and variant are both ticked; the infeasible trace filters row by row; a front trace
# shows its model's front for the chosen pair (precomputed in Python).
_EXPLORER_JS = """
const data = JSON.parse(document.getElementById("accelsim-data").textContent);
const plot = document.getElementById("PLOT_ID");
function ticked(kind) {
  const boxes = Array.from(document.querySelectorAll(".filter-" + kind));
  return boxes.length ? new Set(boxes.filter(b => b.checked).map(b => b.value)) : null;
}
function shown(set, value) { return set === null || value === null || set.has(value); }
function update() {
  const x = document.getElementById("axis-x").value, y = document.getElementById("axis-y").value;
  const models = ticked("model"), variants = ticked("variant");
  const xs = [], ys = [], texts = [];
  data.traces.forEach(trace => {
    let rows = trace.rows;
    if (trace.kind === "front") {
      const front = (data.fronts[x + "|" + y] || {})[trace.model] || [];
      rows = shown(models, trace.model) ? front : [];
    } else if (trace.kind === "ineligible") {
      rows = rows.filter((r, i) => shown(models, trace.models[i]) &&
                                   shown(variants, trace.variants[i]));
    } else if (!shown(models, trace.model) || !shown(variants, trace.variant)) {
      rows = [];
    }
    xs.push(rows.map(r => data.columns[x][r]));
    ys.push(rows.map(r => data.columns[y][r]));
    texts.push(rows.map(r => data.hover[r]));
  });
  Plotly.update(plot, {x: xs, y: ys, text: texts},
                {"xaxis.title.text": data.labels[x], "yaxis.title.text": data.labels[y]});
}
document.querySelectorAll("select, input").forEach(el => el.addEventListener("change", update));
update();
""".replace("PLOT_ID", PLOT_ID)


def _page(title: str, summary: str, controls: str, fig: Any, script: str,
          payload: Mapping[str, Any]) -> str:
    plot = fig.to_html(full_html=False, include_plotlyjs=True, div_id=PLOT_ID,
                       config={"displaylogo": False, "responsive": True})
    # "</" inside the JSON would end the script element early.
    data = json.dumps(payload, allow_nan=False).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class=\"summary\">{summary}</p>"
        f"<div class=\"controls\">{controls}</div>{plot}"
        f"<script type=\"application/json\" id=\"accelsim-data\">{data}</script>"
        f"<script>{script}</script></body></html>\n"
    )


def run_report_html(run: Mapping[str, Any]) -> str:
    """The per-layer breakdown page for one run's JSON (see the module docstring)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layers = run_layers(run)
    try:
        names = [str(layer["name"]) for layer in layers]
        compute = [float(layer["compute_cycles"]) for layer in layers]
        stall = [float(layer["stall_cycles"]) for layer in layers]
        energy = {c: [float(layer["energy_uj"][c]) for layer in layers]
                  for c in ENERGY_COMPONENTS}
    except (KeyError, TypeError, ValueError) as exc:
        raise AccelsimError(f"report: a layer of the run JSON lacks {exc} (write it with "
                            "`accelsim run --json`)") from None
    hover = [design_point_text(_flat_layer(layer), list(_flat_layer(layer))) for layer in layers]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.02,
                        subplot_titles=("cycles", "energy (µJ)"))
    for label, values in (("compute", compute), ("stall", stall)):
        fig.add_trace(go.Bar(y=names, x=values, orientation="h", name=f"{label} cycles",
                             text=hover, hovertemplate="%{text}<extra>%{fullData.name}</extra>",
                             textposition="none"), row=1, col=1)
    for component, values in energy.items():
        fig.add_trace(go.Bar(y=names, x=values, orientation="h", name=f"{component} energy",
                             text=hover, hovertemplate="%{text}<extra>%{fullData.name}</extra>",
                             textposition="none"), row=1, col=2)
    fig.update_layout(barmode="stack", template="plotly_white", height=120 + 16 * len(names),
                      legend={"x": 1.02, "y": 1, "xanchor": "left"}, hoverlabel={"align": "left"},
                      margin={"l": 20, "r": 20, "t": 40, "b": 40})
    fig.update_yaxes(autorange="reversed", tickfont={"size": 9}, row=1, col=1)
    fig.update_xaxes(tickformat=",d", row=1, col=1)
    model = str(run.get("model", ""))
    title = f"{model} on {hw_name(run)}: per-layer breakdown"
    return _page(title, _run_summary(run, len(layers)), "", fig, "", {})


def _flat_layer(layer: Mapping[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in layer.items() if k != "energy_uj"}
    energy = layer.get("energy_uj")
    if isinstance(energy, Mapping):
        flat.update({f"energy_{k}_uj": v for k, v in energy.items()})
    return flat


def _run_summary(run: Mapping[str, Any], count: int) -> str:
    totals = run.get("totals") if isinstance(run.get("totals"), Mapping) else {}
    parts = [f"{count:,} layers"]
    for key, unit in (("cycles", "cycles"), ("latency_ms", "ms"), ("energy_uj", "µJ"),
                      ("area_mm2", "mm²")):
        if _number(totals.get(key)) is not None:
            parts.append(f"{_cell(totals[key])} {unit}")
    hw = run.get("hw")
    overrides = hw.get("overrides") if isinstance(hw, Mapping) else None
    if overrides:
        parts.append("overrides " + ", ".join(f"{html.escape(str(k))}={_cell(v)}"
                                              for k, v in overrides.items()))
    if run.get("recipe"):
        parts.append(f"recipe {html.escape(str(run['recipe']))}")
    return "; ".join(parts) + ". Hover a bar for the layer's shape, bits and energy."
