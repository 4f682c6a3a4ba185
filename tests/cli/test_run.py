"""``accelsim run`` end to end on a SCALE-Sim topology CSV (no torch needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from accelsim.cli import main
from accelsim.hw import hw_to_dict, load_hw

CONFIGS = Path(__file__).resolve().parents[2] / "hw_configs"
HW = str(CONFIGS / "int4_sparse.yaml")

NUMBER = (int, float)
TOTALS_SCHEMA = {"cycles": int, "latency_ms": NUMBER, "energy_uj": NUMBER, "area_mm2": NUMBER,
                 "macs": int, "utilization": NUMBER, "dram_bytes": int, "tops": NUMBER,
                 "tops_per_w": NUMBER, "host_macs": int}
LAYER_SCHEMA = {"name": str, "op": str, "m": int, "k": int, "n": int, "count": int,
                "weight_bits": (int, type(None)), "act_bits": int, "sparsity": str,
                "on_host": bool, "compute_cycles": int, "stall_cycles": int, "cycles": int,
                "macs": int, "utilization": NUMBER, "dram_bytes": int, "energy_uj": dict}
ENERGY_PARTS = {"mac", "sram", "dram", "vector", "leakage", "total"}


@pytest.fixture
def topology(tmp_path):
    path = tmp_path / "vit_block.csv"
    path.write_text("Layer, M, N, K,\nqkv, 197, 2304, 768,\nproj, 197, 768, 768, 2:4,\n"
                    "fc1, 197, 3072, 768, 2:4,\nfc2, 197, 768, 3072, 2:4,\n")
    return path


def check(obj: dict, schema: dict) -> None:
    assert set(obj) >= set(schema), set(schema) - set(obj)
    for key, kind in schema.items():
        value = obj[key]
        assert isinstance(value, kind) and (kind is bool or not isinstance(value, bool)), (
            key, value)


def test_json_output_follows_the_documented_schema(topology, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert main(["run", "--hw", HW, "--model", str(topology), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["model"] == "vit_block"
    assert data["hw"] == {"name": "int4_sparse", "overrides": {},
                          "config": json.loads(json.dumps(hw_to_dict(load_hw(HW))))}
    check(data["totals"], TOTALS_SCHEMA)
    assert [layer["name"] for layer in data["layers"]] == ["qkv", "proj", "fc1", "fc2"]
    for layer in data["layers"]:
        check(layer, LAYER_SCHEMA)
        assert set(layer["energy_uj"]) == ENERGY_PARTS
        assert layer["op"] == "gemm" and layer["cycles"] == (
            layer["compute_cycles"] + layer["stall_cycles"])
    printed = capsys.readouterr().out
    for word in ("latency", "energy", "TOPS", "TOPS/W", "utilization", "DRAM", "area", "fc2"):
        assert word in printed


def test_csv_output_has_one_row_per_layer(topology, tmp_path):
    out = tmp_path / "layers.csv"
    assert main(["run", "--hw", HW, "--model", str(topology), "--csv", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame["layer"]) == ["qkv", "proj", "fc1", "fc2"]
    assert {"cycles", "dram_bytes", "energy_total_uj"} <= set(frame.columns)


def test_set_overrides_change_the_result(topology, tmp_path):
    base, small = tmp_path / "base.json", tmp_path / "small.json"
    main(["run", "--hw", HW, "--model", str(topology), "--json", str(base)])
    main(["run", "--hw", HW, "--model", str(topology), "--json", str(small),
          "--set", "array.rows=16", "--set", "array.cols=16", "--set", "array.dataflow=ws"])
    cycles = [json.loads(p.read_text())["totals"]["cycles"] for p in (base, small)]
    assert cycles[1] > cycles[0]


def test_scalesim_compat_has_no_stalls(topology, tmp_path):
    out = tmp_path / "compat.json"
    assert main(["run", "--hw", HW, "--model", str(topology), "--json", str(out),
                 "--scalesim-compat"]) == 0
    layers = json.loads(out.read_text())["layers"]
    assert all(layer["stall_cycles"] == 0 for layer in layers)


def test_scalesim_compat_with_pipelined_folds_is_one_line_exit_2(topology, tmp_path, capsys):
    out = tmp_path / "never.json"
    code = main(["run", "--hw", HW, "--model", str(topology), "--json", str(out),
                 "--scalesim-compat", "--set", "array.pipelined_folds=true"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and not out.exists()
    assert "array.pipelined_folds=true, but SCALE-Sim 3.0.0 models an array" in err


def test_unpipelined_array_is_slower_and_smaller(topology, tmp_path):
    outs = [tmp_path / "fast.json", tmp_path / "slow.json"]
    for out, value in zip(outs, ("true", "false"), strict=True):
        assert main(["run", "--hw", HW, "--model", str(topology), "--json", str(out),
                     "--set", f"array.pipelined_folds={value}"]) == 0
    fast, slow = (json.loads(out.read_text())["totals"] for out in outs)
    assert slow["cycles"] > fast["cycles"] and slow["area_mm2"] < fast["area_mm2"]


def test_bad_override_is_one_line_exit_2(topology, tmp_path, capsys):
    out = tmp_path / "never.json"
    code = main(["run", "--hw", HW, "--model", str(topology), "--json", str(out),
                 "--set", "array.colz=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("accelsim: error: --set array.colz: unknown key 'colz'")
    assert not out.exists()


def test_bad_csv_row_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("Layer, M, N, K,\na, 1, two, 3,\n")
    assert main(["run", "--hw", HW, "--model", str(bad)]) == 2
    assert "bad.csv: row 2, column N: 'two'" in capsys.readouterr().err


def test_infeasible_design_prints_reason_on_stderr_and_exits_1(topology, tmp_path, capsys):
    out = tmp_path / "inf.json"
    code = main(["run", "--hw", HW, "--model", str(topology), "--json", str(out),
                 "--set", "sram.outputs.size_kib=1"])
    assert code == 1
    printed = capsys.readouterr()
    assert "INFEASIBLE" in printed.err and "exceeds" in printed.err
    assert "INFEASIBLE" not in printed.out
    data = json.loads(out.read_text())
    assert data["feasible"] is False and "exceeds" in data["reason"] and data["layers"] == []


def test_unwritable_output_is_an_error_and_leaves_nothing(topology, tmp_path, capsys):
    target = tmp_path / "missing_dir" / "out.json"
    assert main(["run", "--hw", HW, "--model", str(topology), "--json", str(target)]) == 2
    assert f"--json {target}: folder {target.parent} does not exist" in capsys.readouterr().err
    assert not target.parent.exists()


def test_zoo_name_without_tracer_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "accelsim.graph.trace_cache", None)
    assert main(["run", "--hw", HW, "--model", "vit_b16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "zoo models need accelsim.graph.trace_cache" in err
