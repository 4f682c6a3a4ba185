import dataclasses
import re
from pathlib import Path

import pytest

from accelsim.errors import AccelsimError
from accelsim.graph.ir import VECTOR_OPS
from accelsim.hw import (
    Area,
    Energy,
    VectorCycles,
    hw_from_dict,
    hw_to_dict,
    load_hw,
    parse_override,
    with_overrides,
)

CONFIGS = Path(__file__).resolve().parents[1] / "hw_configs"
NAMES = ("int4_sparse", "int4_dense", "int8_dense", "fp16_dense", "tpu_v1")


@pytest.mark.parametrize("name", NAMES)
def test_shipped_configs_load_and_round_trip(name):
    hw = load_hw(CONFIGS / f"{name}.yaml")
    assert hw.name == name
    assert hw_from_dict(hw_to_dict(hw)) == hw


def test_tpu_v1_reproduces_published_figures():
    hw = load_hw(CONFIGS / "tpu_v1.yaml")
    assert hw.peak_tops == pytest.approx(91.75, abs=0.005)
    assert hw.sram.inputs.size_kib == 24 * 1024  # 24 MiB Unified Buffer
    assert hw.dram.bandwidth_gbps == 34
    assert (hw.array.rows, hw.array.cols, hw.precision.weight_bits) == (256, 256, 8)


def test_precisions_and_sparsity_of_shipped_configs():
    sparse, dense = load_hw(CONFIGS / "int4_sparse.yaml"), load_hw(CONFIGS / "int4_dense.yaml")
    assert sparse.sparsity.support == "2:4" and dense.sparsity.support == "none"
    assert load_hw(CONFIGS / "fp16_dense.yaml").precision.kind == "fp"


@pytest.mark.parametrize("name", NAMES)
def test_every_energy_and_area_constant_cites_a_source(name):
    section = None
    for line in (CONFIGS / f"{name}.yaml").read_text().splitlines():
        if re.match(r"^\w", line):
            section = line.split(":")[0]
        elif section in ("energy", "area") and re.match(r"^\s+\w+:\s*[-\d.]", line):
            assert "#" in line, f"{name}.yaml {section}: constant without a source: {line}"


def test_energy_sources_doc_covers_every_constant_and_configs_point_at_it():
    doc = (CONFIGS.parent / "docs" / "energy_sources.md").read_text()
    for section, cls in (("energy", Energy), ("area", Area)):
        for fld in dataclasses.fields(cls):
            assert fld.name in doc, f"{section}.{fld.name} missing"
    for name in NAMES:
        text = (CONFIGS / f"{name}.yaml").read_text()
        assert "docs/energy_sources.md" in text and "shared/" not in text


def test_vector_cycle_fields_match_graph_vector_ops():
    assert tuple(f.name for f in dataclasses.fields(VectorCycles)) == VECTOR_OPS


def _base() -> dict:
    return hw_to_dict(load_hw(CONFIGS / "int4_sparse.yaml"))


def _error(data: dict) -> str:
    with pytest.raises(AccelsimError) as info:
        hw_from_dict(data, source="t.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_key_lists_allowed_keys():
    data = _base()
    data["array"]["depth"] = 3
    assert _error(data) == ("t.yaml: array.depth: unknown key; allowed at array: rows, cols, "
                            "dataflow, clock_mhz, pipelined_folds")


def test_wrong_type_names_field_and_value():
    data = _base()
    data["array"]["rows"] = "many"
    assert _error(data) == "t.yaml: array.rows: 'many' is not an integer"


def test_bool_is_not_an_integer():
    data = _base()
    data["array"]["rows"] = True
    assert "array.rows: True is not an integer" in _error(data)


def test_impossible_value_states_the_bound():
    data = _base()
    data["dram"]["bandwidth_gbps"] = 0
    assert _error(data) == "t.yaml: dram.bandwidth_gbps: 0.0 must be > 0"


def test_bad_choice_lists_allowed_values():
    data = _base()
    data["array"]["dataflow"] = "xs"
    assert _error(data) == "t.yaml: array.dataflow: 'xs' is not one of os, ws, is"


def test_gelu_table_segments_are_a_listed_size_on_the_int_format_only():
    data = _base()
    assert hw_from_dict(data).vector_unit.gelu_table_segments == 0  # left out: I-BERT's
    data["vector_unit"]["gelu_table_segments"] = 64
    assert _error(data) == ("t.yaml: vector_unit.gelu_table_segments 64 needs vector format int "
                            "(the float formats evaluate erf), not fp16; allowed with fp16: 0")
    data["vector_unit"]["format"] = "int"
    assert hw_from_dict(data).vector_unit.gelu_table_segments == 64
    data["vector_unit"]["gelu_table_segments"] = 48
    assert _error(data) == ("t.yaml: vector_unit.gelu_table_segments: 48 is not one of 0, 4, 8, "
                            "16, 32, 64, 128, 256")


def test_residual_scale_is_a_listed_rule_on_the_int_format_only():
    data = _base()
    assert hw_from_dict(data).vector_unit.residual_scale == "coarser"  # left out
    data["vector_unit"]["residual_scale"] = "fitted"
    assert _error(data) == ("t.yaml: vector_unit.residual_scale fitted needs vector format int "
                            "(the float formats add in floating point), not fp16; allowed with "
                            "fp16: coarser")
    data["vector_unit"]["format"] = "int"
    assert hw_from_dict(data).vector_unit.residual_scale == "fitted"
    data["vector_unit"]["residual_scale"] = "finer"
    assert _error(data) == ("t.yaml: vector_unit.residual_scale: 'finer' is not one of coarser, "
                            "fitted, calibrated")


def test_missing_key_is_reported():
    data = _base()
    del data["sram"]["weights"]["word_bits"]
    assert _error(data) == "t.yaml: sram.weights.word_bits: missing (required)"


def test_banks_must_be_at_least_one():
    data = _base()
    data["sram"]["outputs"]["banks"] = 0
    assert _error(data) == "t.yaml: sram.outputs.banks: 0 must be >= 1"


def test_word_bits_must_be_whole_bytes():
    data = _base()
    data["sram"]["inputs"]["word_bits"] = 12
    assert "sram.inputs.word_bits: 12 must be a multiple of 8" in _error(data)


def test_newer_version_is_rejected():
    data = _base()
    data["version"] = 99
    assert "version: 99 is newer" in _error(data)


def test_duplicate_yaml_key_is_rejected(tmp_path):
    text = (CONFIGS / "int4_dense.yaml").read_text().replace("  rows: 64\n",
                                                             "  rows: 64\n  rows: 32\n")
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(AccelsimError, match=r"dup.yaml: duplicate key 'rows'"):
        load_hw(path)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(AccelsimError, match="cannot read hardware config"):
        load_hw(tmp_path / "nope.yaml")


def test_overrides_apply_and_revalidate():
    hw = load_hw(CONFIGS / "int4_sparse.yaml")
    changed = with_overrides(hw, {"array.rows": 32, "sram.weights.size_kib": 64,
                                  "array.dataflow": "ws"})
    assert (changed.array.rows, changed.sram.weights.size_kib, changed.array.dataflow) == (
        32, 64.0, "ws")
    assert with_overrides(hw, {}) is hw
    with pytest.raises(AccelsimError, match="array.rows: -1 must be >= 1"):
        with_overrides(hw, {"array.rows": -1})


def test_bad_override_path_lists_allowed_keys():
    hw = load_hw(CONFIGS / "int4_sparse.yaml")
    with pytest.raises(AccelsimError) as info:
        with_overrides(hw, {"sram.weight.size_kib": 1})
    assert str(info.value) == ("--set sram.weight.size_kib: unknown key 'weight'; allowed at "
                               "sram: weights, inputs, outputs")
    with pytest.raises(AccelsimError, match="is a section"):
        with_overrides(hw, {"array": 1})
    with pytest.raises(AccelsimError, match="array.rows is a value, not a section"):
        with_overrides(hw, {"array.rows.x": 1})


def test_parse_override_uses_yaml_scalars():
    assert parse_override("array.rows=32") == ("array.rows", 32)
    assert parse_override("sram.inputs.double_buffered=false") == (
        "sram.inputs.double_buffered", False)
    assert parse_override("sparsity.support=2:4") == ("sparsity.support", "2:4")
    assert parse_override("array.dataflow = ws") == ("array.dataflow", "ws")
    with pytest.raises(AccelsimError, match="expected KEY=VALUE"):
        parse_override("array.rows")


def test_datapath_fields_default_and_derive_the_element_width():
    data = _base()
    del data["precision"]["overflow"]
    hw = hw_from_dict(data)
    assert hw.precision.overflow == "saturate"
    assert hw.vector_unit.format == "fp16" and hw.vector_unit.element_bits == 16
    assert with_overrides(hw, {"vector_unit.format": "fp32"}).vector_unit.element_bits == 32
    assert with_overrides(hw, {"vector_unit.format": "int"}).vector_unit.element_bits == 32


def test_unsupported_vector_format_and_overflow_are_one_line():
    hw = load_hw(CONFIGS / "int4_sparse.yaml")
    with pytest.raises(AccelsimError, match=r"vector_unit\.format: 'fp8' is not one of "
                                            r"fp32, fp16, bf16, int"):
        with_overrides(hw, {"vector_unit.format": "fp8"})
    with pytest.raises(AccelsimError, match=r"precision\.overflow: 'clip' is not one of "
                                            r"saturate, wrap"):
        with_overrides(hw, {"precision.overflow": "clip"})


def test_accumulator_narrower_than_one_product_is_rejected():
    hw = load_hw(CONFIGS / "int4_sparse.yaml")
    assert with_overrides(hw, {"precision.accumulator_bits": 8}).precision.accumulator_bits == 8
    with pytest.raises(AccelsimError, match=r"precision\.accumulator_bits: 7 is narrower than "
                                            r"one 4-bit x 4-bit product \(8 bits\); allowed: "
                                            r">= 8"):
        with_overrides(hw, {"precision.accumulator_bits": 7})


@pytest.mark.parametrize("name", NAMES)
def test_vector_lane_is_priced_per_format(name):
    # A lane is its format's multiplier + adder: fp32 above fp16 above bf16 in energy and area,
    # and the int lane (int32 x Q31 products, 64-bit sums) above fp16 (docs/hardware.md).
    hw = load_hw(CONFIGS / f"{name}.yaml")
    energy, lane_area = hw.energy.vector_pj_per_lane_cycle, hw.area.vector_lane_um2
    for costs in (energy, lane_area):
        assert costs.fp32 > costs.fp16 > costs.bf16 > 0 and costs.int > costs.fp16
    assert energy.of(hw.vector_unit.format) == energy.fp16
