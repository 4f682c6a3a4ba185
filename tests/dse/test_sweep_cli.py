"""End to end through the command line, with the real tracer and simulator on a tiny BERT."""

import json

import pandas as pd
import pytest
from dse_fakes import INT8_HW, REPO

from accelsim.cli import main
from accelsim.dse.store import load_results

SWEEP = f"""\
version: 1
name: tiny
hw: {REPO / "hw_configs" / "int4_sparse.yaml"}
models: [{{name: bert_tiny, seq_len: 16}}]
recipes: [w8a8, w4a4_sp24]
grid:
  array.rows: [8, 16]
  array.cols: [8, 16]
constraints: ["area_mm2 <= 100"]
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    sweep = tmp / "tiny.yaml"
    sweep.write_text(SWEEP)
    code = main(["sweep", str(sweep), "--workers", "1", "--no-progress",
                 "--csv", str(tmp / "r.csv"), "--parquet", str(tmp / "r.parquet")])
    assert code == 0
    return tmp


def test_sweep_stores_and_exports_every_point(swept, capsys):
    frame = load_results(swept / "results" / "tiny.sqlite")
    assert len(frame) == 8 and frame["feasible"].all()
    assert frame["latency_ms"].gt(0).all() and frame["energy_uj"].gt(0).all()
    parts = frame[[f"energy_{p}_uj" for p in ("mac", "sram", "dram", "vector", "leakage")]]
    assert parts.sum(axis=1).to_numpy() == pytest.approx(frame["energy_uj"].to_numpy())
    assert (frame["compute_cycles"] + frame["stall_cycles"] == frame["cycles"]).all()
    bigger = frame[frame["hw_array_rows"] * frame["hw_array_cols"] == 256]
    smaller = frame[frame["hw_array_rows"] * frame["hw_array_cols"] == 64]
    assert bigger["cycles"].min() < smaller["cycles"].min()
    assert len(pd.read_csv(swept / "r.csv")) == 8
    pd.testing.assert_frame_equal(pd.read_parquet(swept / "r.parquet"), frame)
    assert main(["sweep", str(swept / "tiny.yaml"), "--workers", "1", "--no-progress"]) == 0
    assert "8 points (8 already stored, 0 evaluated)" in capsys.readouterr().out


def test_sweep_points_equal_what_run_reports(swept):
    """A sweep point simulates the graph ``accelsim run`` builds: the model compressed by the
    recipe file (real masks, bit widths, requantize ops), not a rewritten twin."""
    from accelsim.graph.workload import workload_graph
    from accelsim.hw import load_hw, with_overrides
    from accelsim.sim.simulate import simulate

    frame = load_results(swept / "results" / "tiny.sqlite")
    base = load_hw(REPO / "hw_configs" / "int4_sparse.yaml")
    assert set(frame["recipe"]) == {"w8a8", "w4a4_sp24"}
    for row in frame.itertuples():
        graph = workload_graph("bert_tiny", recipe=row.recipe, seq_len=16)
        totals = simulate(graph, with_overrides(base, json.loads(row.overrides))).totals
        for metric in ("cycles", "latency_ms", "energy_uj", "area_mm2", "macs", "dram_bytes"):
            assert getattr(row, metric) == pytest.approx(getattr(totals, metric), rel=1e-12)
    sparse = workload_graph("bert_tiny", recipe="w4a4_sp24", seq_len=16)
    assert any(g.sparsity == "2:4" for g in sparse.gemms)


def test_plot_pareto_from_the_store(swept, capsys):
    out = swept / "p.svg"
    code = main(["plot", "pareto", str(swept / "results" / "tiny.sqlite"), "--x", "latency_ms",
                 "--y", "energy_uj", "--color", "accuracy", "--constraint", "area_mm2 <= 50",
                 "--out", str(out)])
    assert code == 0 and out.exists()
    text = out.read_text()
    assert "accuracy (%): not available" in text and "Pareto front" in text


def test_plot_breakdown_and_roofline_from_run_json(swept):
    from accelsim.graph.trace_cache import trace_named_model
    from accelsim.hw import load_hw
    from accelsim.sim.simulate import simulate

    result = simulate(trace_named_model("bert_tiny", seq_len=16), load_hw(INT8_HW))
    run_json = swept / "run.json"
    run_json.write_text(json.dumps(result.to_dict()))
    assert main(["plot", "breakdown", str(run_json), "--metric", "energy"]) == 0
    assert (swept / "run_breakdown.png").stat().st_size > 1000
    assert main(["plot", "roofline", str(run_json), "--hw", str(INT8_HW),
                 "--set", "array.rows=32", "--out", str(swept / "roof.png")]) == 0


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["plot", "roofline", "RUN"], "records no hardware config"),
        (["plot", "pareto", "STORE", "--x", "speed_ms"], "column 'speed_ms' is not in the results"),
        (["plot", "pareto", "STORE", "--constraint", "area_mm2 < lots"], "< needs a number"),
        (["sweep", "BAD", "--workers", "1"], "grid.array.rowz: unknown hardware field"),
        (["sweep", "EMPTY", "--workers", "1"], "grid.array.rows: empty range"),
    ],
)
def test_cli_errors_are_one_line(swept, tmp_path, capsys, argv, fragment):
    (tmp_path / "bad.yaml").write_text(SWEEP.replace("array.rows:", "array.rowz:"))
    (tmp_path / "empty.yaml").write_text(SWEEP.replace("array.rows: [8, 16]", "array.rows: []"))
    (tmp_path / "run.json").write_text(json.dumps({"model": "m", "hw": "x", "layers": [{}]}))
    names = {"RUN": tmp_path / "run.json", "STORE": swept / "results" / "tiny.sqlite",
             "BAD": tmp_path / "bad.yaml", "EMPTY": tmp_path / "empty.yaml"}
    assert main([str(names.get(a, a)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err
