import json

import numpy as np
import pandas as pd
import pytest

from accelsim.errors import AccelsimError
from accelsim.report.plots.breakdown import breakdown_info, render_breakdown
from accelsim.report.plots.common import axis_label, resolve_column
from accelsim.report.plots.pareto import pareto_info, render_pareto
from accelsim.report.plots.roofline import render_roofline, roofline_info

HW = {
    "name": "toy_hw",
    "array": {"rows": 4, "cols": 4, "clock_mhz": 1000.0},
    "dram": {"bandwidth_gbps": 10.0},
    "sparsity": {"support": "2:4"},
}


def layer(name, op="gemm", compute=100, stall=20, macs=1600, dram=800, sparsity="dense"):
    return {
        "name": name, "op": op, "compute_cycles": compute, "stall_cycles": stall,
        "cycles": compute + stall, "macs": macs, "dram_bytes": dram, "sparsity": sparsity,
        "energy_uj": {"mac": 1.0, "sram": 0.5, "dram": 2.0, "vector": 0.0, "leakage": 0.1,
                      "total": 3.6},
    }


RUN = {
    "model": "toy", "hw": "toy_hw",
    "layers": [
        layer("embed"),
        layer("layers.0.attention.q_proj"), layer("layers.0.attention/matmul"),
        layer("layers.0.attention/matmul_1"), layer("layers.0/add", op="vector", macs=0, dram=0),
        layer("layers.1.attention.q_proj", sparsity="2:4"), layer("layers.1.attention/matmul_2"),
        layer("layers.1.attention/matmul_3"), layer("layers.1/add_1", op="vector", macs=0, dram=0),
    ],
}


def frame():
    return pd.DataFrame({
        "model": ["a"] * 4 + ["b"] * 2,
        "latency_ms": [1.0, 2.0, 3.0, 2.5, 1.0, 2.0],
        "energy_uj": [5.0, 3.0, 1.0, 4.0, 2.0, 1.0],
        "accuracy_pct": [np.nan] * 6,
        "recipe": ["w8a8", "w4a4", "w4a4", "w8a8", "w8a8", "w8a8"],
        "variant": [""] * 6,
        "hw_array_rows": [16, 32, 64, 16, 16, 32],
        "hw_sram_weights_size_kib": [128.0] * 6,
    })


def test_axis_labels_carry_units():
    assert axis_label("latency_ms") == "latency (ms)"
    assert axis_label("energy_uj") == "energy (µJ)"
    assert axis_label("area_mm2") == "area (mm²)"
    assert axis_label("tops_per_w") == "efficiency (TOPS/W)"
    assert axis_label("hw_sram_weights_size_kib") == "sram weights size (KiB)"
    assert resolve_column(frame(), "accuracy") == "accuracy_pct"
    with pytest.raises(AccelsimError, match="column 'speed' is not in the results"):
        resolve_column(frame(), "speed")


def test_pareto_info_panels_labels_and_missing_accuracy():
    data = frame()
    front = pd.Series([True, True, True, False, True, True])
    eligible = pd.Series([True] * 6)
    info = pareto_info(data, "latency_ms", "energy_uj", front, eligible, color="accuracy")
    assert [p.model for p in info.panels] == ["a", "b"]
    a = info.panels[0]
    assert a.front.tolist() == [True, True, True, False]
    assert a.front_order.tolist() == [0, 1, 2]
    # Only fields that differ among the front points label them; constant buffers do not.
    assert a.labels == ("rows=16 w8a8", "rows=32 w4a4", "rows=64 w4a4")
    assert info.panels[1].labels == ("rows=16", "rows=32")
    assert info.note == "accuracy (%): not available"
    assert [p.note for p in info.panels] == ["", ""]
    partly = data.assign(latency_ms=[1.0, None, 3.0, 2.5, None, None])
    notes = [p.note for p in pareto_info(partly, "latency_ms", "energy_uj", front, eligible).panels]
    assert notes == ["1 of 4 points without latency (ms)", "latency (ms): not available"]
    data.loc[3, "hw_sram_weights_size_kib"] = 512.0  # swept, but every front point has 128
    again = pareto_info(data, "latency_ms", "energy_uj", front, eligible)
    assert again.panels[0].common == "weights_size_kib=128" and again.panels[0].labels == a.labels
    assert (info.x_label, info.y_label) == ("latency (ms)", "energy (µJ)")
    assert [p.reference_y for p in info.panels] == [None, None]
    with_reference = pareto_info(data, "latency_ms", "energy_uj", front, eligible,
                                 references={"b": 2.5}, reference_label="fp32")
    assert [p.reference_y for p in with_reference.panels] == [None, 2.5]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_render_pareto_writes_png_and_svg(tmp_path, suffix):
    data = frame()
    info = pareto_info(data, "latency_ms", "energy_uj", pd.Series([True] * 6),
                       pd.Series([True] * 6), color="recipe")
    out = render_pareto(info, tmp_path / f"p{suffix}", title="toy")
    assert out.stat().st_size > 1000
    if suffix == ".svg":
        assert "latency (ms)" in out.read_text()


def test_breakdown_groups_blocks_and_keeps_attention_matmuls_apart():
    info = breakdown_info(RUN, "cycles")
    assert info.layers == (
        "embed", "layers.*.attention.q_proj (2 layers)", "layers.*.attention/matmul (2 layers)",
        "layers.*.attention/matmul #2 (2 layers)", "layers.*/add (2 layers)",
    )
    assert info.components == ("compute", "stall")
    assert info.values[1].tolist() == [200.0, 40.0]
    per_layer = breakdown_info(RUN, "energy", top=3, group_blocks=False)
    assert per_layer.layers[-1] == "6 other rows"
    assert per_layer.values.sum() == pytest.approx(3.6 * 9)


def test_roofline_points_and_roofs(tmp_path):
    info = roofline_info(RUN, HW)
    assert info.peak_tops == pytest.approx(2 * 16 * 1e9 / 1e12)
    assert info.sparse_peak_tops == pytest.approx(2 * info.peak_tops)
    assert len(info.names) == 7 and info.skipped == 0
    # 1600 MACs = 3200 ops over 800 bytes; 120 cycles at 1 GHz.
    assert info.intensity_ops_per_byte[0] == pytest.approx(4.0)
    assert info.achieved_tops[0] == pytest.approx(3200 / 120e-9 / 1e12)
    assert info.sparse.tolist().count(True) == 1
    assert render_roofline(info, tmp_path / "r.svg").exists()
    assert render_breakdown(breakdown_info(RUN), tmp_path / "b.png").exists()


def test_bad_plot_inputs_are_one_line(tmp_path):
    with pytest.raises(AccelsimError, match="needs the run's hardware config"):
        roofline_info(RUN)
    with pytest.raises(AccelsimError, match="breakdown metric 'power'"):
        breakdown_info(RUN, "power")
    with pytest.raises(AccelsimError, match="no 'layers' list"):
        breakdown_info({"model": "x"})
    with pytest.raises(AccelsimError, match="plot format '.jpg'"):
        render_breakdown(breakdown_info(RUN), tmp_path / "b.jpg")
    json.dumps(RUN)




def _boxes_overlap(a, b) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


def crowded_frame(variants: int = 14, points: int = 30) -> pd.DataFrame:
    """``points`` random design points per variant on one model, plus a front of 20 points
    packed into 2 % of the latency range, so the front's numbers crowd together."""
    rng = np.random.default_rng(0)
    rows = [{"model": "m", "latency_ms": rng.uniform(1.2, 3.0), "energy_uj": rng.uniform(1.2, 3.0),
             "variant": f"variant_{v:02d}", "hw_array_rows": 16 + p, "front": False}
            for v in range(variants) for p in range(points)]
    rows += [{"model": "m", "latency_ms": 1.0 + 0.002 * i, "energy_uj": 1.2 - 0.002 * i,
              "variant": f"variant_{i % variants:02d}", "hw_array_rows": 100 + i, "front": True}
             for i in range(20)]
    frame = pd.DataFrame(rows)
    return frame.assign(cycles=(frame["latency_ms"] * 1e6).round(), recipe="r")


def crowded_figure(y: str = "energy_uj"):
    from accelsim.report.plots.pareto import pareto_figure

    data = crowded_frame()
    info = pareto_info(data, "latency_ms", y, data["front"], pd.Series([True] * len(data)),
                       color="variant")
    fig = pareto_figure(info, "crowded")
    fig.canvas.draw()
    return info, fig


def test_the_pareto_legend_sits_outside_every_panel():
    _, fig = crowded_figure()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    panels = [ax.get_window_extent() for ax in fig.axes if ax.get_visible()]
    assert panels and not any(_boxes_overlap(box, panel) for panel in panels)
    assert not any(ax.get_legend() for ax in fig.axes)  # no legend left inside a panel


def test_fourteen_variants_get_distinct_colour_and_marker_pairs():
    from matplotlib.colors import to_hex

    from accelsim.report.plots.common import category_styles

    styles = category_styles(14)
    assert len({(to_hex(colour), marker) for colour, marker in styles}) == 14
    # neighbours differ in both colour and shape, and 70 categories still stay apart
    assert all(styles[i][0] != styles[i + 1][0] and styles[i][1] != styles[i + 1][1]
               for i in range(13))
    assert len({(to_hex(c), m) for c, m in category_styles(70)}) == 70
    info, fig = crowded_figure()
    (legend,) = fig.legends
    drawn = {(to_hex(h.get_color()), h.get_marker()) for h in legend.legend_handles
             if h.get_label().startswith("variant_")}
    assert len(drawn) == 14 == len(info.color_categories)


def test_front_numbers_avoid_each_other_and_stay_inside_the_panel():
    from matplotlib.text import Text

    info, fig = crowded_figure()
    ax = fig.axes[0]
    numbers = [t for t in ax.texts if t.get_text().isdigit()]
    assert len(numbers) == min(len(info.panels[0].front_order), 20)
    boxes = [Text.get_window_extent(t) for t in numbers]  # the text, not its leader line
    frame = ax.get_window_extent()
    assert not any(_boxes_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1
               for b in boxes)


def test_roofline_points_are_labelled_by_layer_role_without_overlaps():
    from accelsim.report.plots.roofline import point_labels, roofline_figure

    info = roofline_info(RUN, HW)
    labels = point_labels(info)
    # all 7 toy GEMMs share one point: one label, the first role (embed) and how many other
    # roles (q_proj, matmul) and layers share it
    assert labels == [(4.0, pytest.approx(3200 / 120e-9 / 1e12), "embed +2 more x7")]
    fig = roofline_figure(info)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["embed +2 more x7"]
    assert not _boxes_overlap(ax.get_legend().get_window_extent(), ax.get_window_extent())


def test_cycle_axes_use_thousands_separators():
    from accelsim.report.plots.breakdown import breakdown_figure
    from accelsim.report.plots.common import plain_number

    assert plain_number(1234567.0) == "1,234,567" and plain_number(0.25) == "0.25"
    fig = breakdown_figure(breakdown_info(RUN, "cycles"))
    assert fig.axes[0].xaxis.get_major_formatter()(2_500_000, 0) == "2,500,000"
    _, pareto = crowded_figure(y="cycles")
    assert pareto.axes[0].yaxis.get_major_formatter()(12_000_000, 0) == "12,000,000"
