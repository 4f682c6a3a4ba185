"""What ``accelsim run`` prints: a summary by default, every layer with ``--layers``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accelsim.cli import main
from accelsim.hw import load_hw
from accelsim.report.tables import layer_groups
from accelsim.sim import simulate

CONFIGS = Path(__file__).resolve().parents[2] / "hw_configs"
INT4_DENSE, INT8_DENSE = str(CONFIGS / "int4_dense.yaml"), str(CONFIGS / "int8_dense.yaml")
MAX_SUMMARY_LINES = 60
PASSES_NOTE = ("8-bit x 8-bit operands of layers.{0,1}.attention/matmul, "
               "layers.{0,1}.attention/matmul_1 run in 4 passes on this 4-bit x 4-bit array")


def run_output(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert main(["run", *argv]) == 0
    return capsys.readouterr().out.splitlines()


def test_default_output_is_a_summary_of_grouped_layers_with_notes(tmp_path, capsys):
    out = tmp_path / "run.json"
    lines = run_output(capsys, "--hw", INT4_DENSE, "--model", "vit_tiny", "--json", str(out))
    text = "\n".join(lines)
    assert len(lines) <= MAX_SUMMARY_LINES
    assert "vit_tiny on int4_dense" in text and "latency" in text and "energy" in text
    assert "layer groups by cycles" in text and "layer groups by energy_uj" in text
    # Blocks 0 and 1 of the two-block ViT are one group; no single layer is listed.
    assert "layers.{0,1}.mlp.fc1" in text and "layers.0.mlp.fc1" not in text
    assert PASSES_NOTE in " ".join(text.split())  # notes wrap at 96 columns
    layers = json.loads(out.read_text())["layers"]
    assert f"{len(layers)} layers in all: every one with --layers, --json or --csv" in text
    assert any(layer["name"] == "layers.0.mlp.fc1" for layer in layers)


def test_layers_flag_prints_every_layer(capsys):
    lines = run_output(capsys, "--hw", INT4_DENSE, "--model", "vit_tiny", "--layers")
    text = "\n".join(lines)
    for name in ("layers.0.mlp.fc1", "layers.1.mlp.fc1", "layers.1.attention/matmul_3"):
        assert name in text
    assert "layer groups by" not in text and "latency" in text


def test_native_8_bit_array_has_no_passes_note(capsys):
    text = "\n".join(run_output(capsys, "--hw", INT8_DENSE, "--model", "vit_tiny"))
    assert "passes" not in text and "layers.{0,1}.mlp.fc1" in text


def test_groups_name_the_block_indices_they_span(tmp_path):
    from accelsim.graph.scalesim_io import read_topology_csv

    topology = tmp_path / "blocks.csv"
    topology.write_text("Layer, M, N, K,\nblocks.0.fc, 64, 64, 64,\nblocks.2.fc, 64, 64, 64,\n"
                        "blocks.3.fc, 64, 64, 64,\nhead, 1, 10, 64,\n")
    result = simulate(read_topology_csv(topology), load_hw(INT8_DENSE))
    groups = {group.name: group for group in layer_groups(result.layers)}
    assert list(groups) == ["blocks.{0,2,3}.fc", "head"]
    fc = groups["blocks.{0,2,3}.fc"]
    assert fc.layers == 3 and fc.cycles == sum(layer.cycles for layer in result.layers[:3])
