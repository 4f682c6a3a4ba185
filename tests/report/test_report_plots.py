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


@pytest.mark.parametrize("count", [3, 12, 25])
def test_category_palette_gives_every_category_its_own_colour(count):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from accelsim.report.plots.pareto import category_palette

    palette = category_palette(count, plt)
    # 12 categories once shared colours: the points clipped at tab10's last, the legend cycled.
    assert len(palette) == count == len(set(palette))
