"""Side by side: accelsim's memory hierarchy against ZigZag 3.9.1 on the same array and layers.

Run:  python benchmarks/zigzag_compare.py [--zigzag-python /work/zigzag_venv/bin/python]
          [--hw hw_configs/int4_sparse.yaml] [--opt energy] [--lpf-limit 6]
          [--out-dir benchmarks/results]

ZigZag 3.9.1 (KU Leuven's design-space exploration tool, pip package ``zigzag-dse``) lives in
its own virtualenv, see benchmarks/README.md. This script builds ZigZag's three inputs from
accelsim's own objects, then re-launches itself under that interpreter with ``--worker``; the
worker imports only the standard library, PyYAML and zigzag, never accelsim.

* **Accelerator** (``zigzag_accelerator``): the config's rows x cols array; per PE a weight, an
  activation and an accumulator register (``precision`` widths); the weight, input and output
  SRAM buffers (size, double buffering, one word of ``word_bits`` the smallest access, ``banks``
  words per cycle); DRAM at the config's bytes per cycle. Per-access energies are accelsim's
  (``accelsim.sim.energy``): an SRAM access of ``banks`` words costs their bytes x
  ``sram_energy_pj_per_byte`` (so a partial word costs a whole one, as in accelsim), a DRAM
  access ``dram.energy_pj_per_byte`` per byte; a MAC costs ``mac_energy_pj`` plus the pipeline
  registers it toggles (``register_bits_per_mac`` x ``register_pj_per_byte``), which is what
  accelsim's array energy prices per MAC, so the PE registers themselves cost nothing more.
* **Mapping** (``zigzag_mapping``): the hardware's output-stationary spatial unrolling (output
  rows on the array's rows, output columns on its columns) is fixed; ZigZag's LOMA engine
  searches the temporal mapping (loop order and which loops each memory level holds),
  exhaustively over the loop prime factors up to ``--lpf-limit`` (deterministic: no random
  sampling), keeping the best by ``--opt``.
* **Workload** (``comparison_layers``, ``zigzag_layer``): the distinct weight GEMMs of the
  traced ViT-B/16 and BERT-base graphs compressed W4A4 (``experiments/recipes/w4a4.yaml``), at
  their bit widths; partial sums at ``accumulator_bits``, outputs at the activation width.

The hardware is the config with ``sparsity.support=none``: ZigZag has no 2:4 datapath, so the
comparison is of the dense datapath. Attention's QK^T and PV are left out: they are 8-bit on a
4-bit array, which accelsim runs in four shift-and-add passes and ZigZag cannot express.

Per layer, three sources: ``zigzag`` (its best mapping), ``accelsim_layer`` (``simulate`` on a
one-GEMM graph: every operand from DRAM and the output written back, as ZigZag assumes) and
``accelsim_in_graph`` (the layer's first instance in ``simulate`` of the whole graph, where the
graph plan keeps activations on chip and fuses the FFN). Each gives DRAM bytes by operand, SRAM
bytes per buffer, energy (array, SRAM, DRAM; leakage and the vector unit left out, ZigZag models
neither) and cycles. The table goes to stdout and, with the mapping each tool chose, to
``<out-dir>/zigzag_compare.csv`` and ``zigzag_compare.md`` (generated; never edit them by hand).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker runs under ZigZag's interpreter, without accelsim
    from accelsim.graph.ir import Graph
    from accelsim.hw import HwConfig
    from accelsim.sim.simulate import LayerResult

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ZIGZAG_PYTHON = Path("/work/zigzag_venv/bin/python")
DEFAULT_HW = REPO_ROOT / "hw_configs" / "int4_sparse.yaml"
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"
ZIGZAG_VERSION = "3.9.1"
MODELS = ("vit_b16", "bert_base")
RECIPE = "w4a4"
DENSE = {"sparsity.support": "none"}
# ZigZag's memory operands: I1 the activation (A), I2 the weight (B), O the output.
OPERAND_BUFFER = {"W": "weights", "I": "inputs", "O": "outputs"}
MEMORY_OPERAND = {"W": "I2", "I": "I1", "O": "O"}
OPTIMIZE = ("energy", "latency", "EDP")
DEFAULT_OPT = "energy"
DEFAULT_LPF_LIMIT = 6  # LOMA's search at 7 took minutes a layer on 2 shared cores
LEVELS = ("reg", "SRAM", "DRAM")  # each operand's memory levels in zigzag_accelerator
_PJ_PER_UJ = 1e6


@dataclass(frozen=True)
class Layer:
    """One distinct weight GEMM ``out[m, n] = A[m, k] @ W[k, n]`` of a model's graph; ``node``
    names its first instance and ``instances`` counts the graph's nodes of that shape."""

    model: str
    node: str
    label: str
    m: int
    k: int
    n: int
    weight_bits: int
    act_bits: int
    instances: int


def dense_hw(path: Path) -> HwConfig:
    """The config at ``path`` with the dense datapath (ZigZag has no 2:4 skipping)."""
    from accelsim.hw import load_hw, with_overrides

    return with_overrides(load_hw(path), DENSE)


def _label(node_name: str) -> str:
    """A layer label without the model prefix and block index (``layers.0.mlp.fc1`` ->
    ``mlp.fc1``, ``embeddings.patch_embeddings.projection`` -> ``patch_embeddings.projection``)."""
    parts = node_name.split(".")
    blocks = [index for index, part in enumerate(parts) if part.isdigit()]
    return ".".join(parts[blocks[0] + 1:] if blocks else parts[1:] or parts)


def comparison_layers(model: str, graph: Graph, hw: HwConfig) -> tuple[Layer, ...]:
    """The graph's distinct weight GEMMs at their resolved bit widths, in execution order."""
    from accelsim.errors import AccelsimError
    from accelsim.graph.ir import GemmNode
    from accelsim.sim.plan import resolve_bits

    first: dict[tuple[int, ...], GemmNode] = {}
    instances: dict[tuple[int, ...], int] = {}
    for node in graph.gemms:
        if node.weight_is_activation:
            continue
        weight_bits, act_bits, passes = resolve_bits(node, hw)
        if passes != 1:
            raise AccelsimError(f"{model} {node.name}: weight_bits={weight_bits}, "
                                f"act_bits={act_bits} on a {hw.precision.weight_bits}-bit "
                                "array needs several passes, which ZigZag cannot express; "
                                "use a recipe at the array's width")
        if node.count != 1:
            raise AccelsimError(f"{model} {node.name}: count={node.count}; the comparison "
                                "takes single weight GEMMs, allowed: 1")
        key = (node.m, node.k, node.n, weight_bits, act_bits)
        first.setdefault(key, node)
        instances[key] = instances.get(key, 0) + 1
    return tuple(Layer(model, node.name, _label(node.name), *key, instances[key])
                 for key, node in first.items())


def _port(name: str, kind: str, bits_min: int, bits_max: int, allocation: list[str]) -> dict:
    return {"name": name, "type": kind, "bandwidth_min": bits_min, "bandwidth_max": bits_max,
            "allocation": allocation}


def _register(operand: str, bits: int) -> dict:
    """A PE's own register for one operand (priced in the MAC's energy, see the docstring)."""
    if operand == "O":
        ports = [_port("r_port_1", "read", bits, bits, ["O, tl"]),
                 _port("r_port_2", "read", bits, bits, ["O, th"]),
                 _port("w_port_1", "write", bits, bits, ["O, fh"]),
                 _port("w_port_2", "write", bits, bits, ["O, fl"])]
    else:
        ports = [_port("r_port_1", "read", bits, bits, [f"{operand}, tl"]),
                 _port("w_port_1", "write", bits, bits, [f"{operand}, fh"])]
    return {"size": bits, "r_cost": 0.0, "w_cost": 0.0, "area": 0, "latency": 1,
            "operands": [operand], "ports": ports, "served_dimensions": []}


def zigzag_accelerator(hw: HwConfig) -> dict:
    """ZigZag's accelerator description of ``hw`` (see the module docstring)."""
    from accelsim.errors import AccelsimError
    from accelsim.sim.actions import register_bits_per_mac
    from accelsim.sim.energy import mac_energy_pj, sram_energy_pj_per_byte

    if hw.array.dataflow != "os":
        raise AccelsimError(f"zigzag_compare: array.dataflow={hw.array.dataflow!r}; the ZigZag "
                            "description models the output-stationary array, allowed: 'os'")
    if hw.sparsity.support != "none":
        raise AccelsimError(f"zigzag_compare: sparsity.support={hw.sparsity.support!r}; ZigZag "
                            "has no 2:4 datapath, allowed: 'none'")
    p = hw.precision
    memories: dict[str, dict] = {
        "reg_w": _register("I2", p.weight_bits),
        "reg_i": _register("I1", p.act_bits),
        "reg_o": _register("O", p.accumulator_bits),
    }
    for name, operand in (("weights", "I2"), ("inputs", "I1"), ("outputs", "O")):
        buffer = getattr(hw.sram, name)
        access_bits = buffer.word_bits * buffer.banks
        cost = sram_energy_pj_per_byte(hw, buffer) * access_bits / 8
        reads, writes = ((["O, tl", "O, th"], ["O, fh", "O, fl"]) if operand == "O"
                         else ([f"{operand}, tl"], [f"{operand}, fh"]))
        memories[f"sram_{name}"] = {
            "size": buffer.size_bytes * 8, "r_cost": cost, "w_cost": cost, "area": 0,
            "latency": 1, "operands": [operand],
            "ports": [_port("r_port_1", "read", buffer.word_bits, access_bits, reads),
                      _port("w_port_1", "write", buffer.word_bits, access_bits, writes)],
            "served_dimensions": ["D1", "D2"],
            "force_double_buffering": buffer.double_buffered,
        }
    dram_bits = round(hw.dram_bytes_per_cycle * 8)
    dram_cost = hw.dram.energy_pj_per_byte * dram_bits / 8
    every = [f"{op}, {d}" for op in ("I1", "I2") for d in ("fh", "tl")] + [
        f"O, {d}" for d in ("fh", "tl", "fl", "th")]
    memories["dram"] = {
        "size": 10**12, "r_cost": dram_cost, "w_cost": dram_cost, "area": 0, "latency": 1,
        "operands": ["I1", "I2", "O"],
        # One byte is the smallest transfer: accelsim prices DRAM per byte.
        "ports": [_port("rw_port_1", "read_write", 8, dram_bits, every)],
        "served_dimensions": ["D1", "D2"],
    }
    unit_pj = (mac_energy_pj(hw)
               + hw.energy.register_pj_per_byte * register_bits_per_mac(hw, False) / 8)
    return {
        "name": f"accelsim_{hw.name}_dense",
        "memories": memories,
        "operational_array": {
            "input_precision": [p.act_bits, p.weight_bits], "unit_energy": unit_pj,
            "unit_area": 1, "dimensions": ["D1", "D2"], "sizes": [hw.array.rows, hw.array.cols],
            # Operands and results move one PE per cycle along both axes (fill and drain).
            "systolic_dimensions": ["D1", "D2"],
        },
    }


def zigzag_mapping(hw: HwConfig) -> list[dict]:
    """Output stationary: output rows (D) on the array's rows, output columns (K) on its
    columns; the temporal mapping is left to ZigZag's search."""
    return [{"name": "default",
             "spatial_mapping": {"D1": [f"D, {hw.array.rows}"], "D2": [f"K, {hw.array.cols}"]},
             "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]


def zigzag_layer(layer: Layer, hw: HwConfig, layer_id: int = 0) -> dict:
    """ZigZag's GEMM ``O[d][k] += I[d][c] * W[c][k]`` (its ONNX parser's naming: D = m,
    C = k, K = n)."""
    return {
        "id": layer_id, "name": f"{layer.model}.{layer.label}", "operator_type": "Gemm",
        "equation": "O[d][k]+=I[d][c]*W[c][k]", "loop_dims": ["D", "C", "K"],
        "loop_sizes": [layer.m, layer.k, layer.n],
        "operand_precision": {"W": layer.weight_bits, "I": layer.act_bits,
                              "O": hw.precision.accumulator_bits, "O_final": layer.act_bits},
    }


def missing_zigzag_message(python: Path) -> str:
    return (f"ZigZag not found at {python}: create its virtualenv with `python -m venv "
            f"/work/zigzag_venv && /work/zigzag_venv/bin/pip install zigzag-dse=={ZIGZAG_VERSION}"
            " six`, or pass --zigzag-python PATH")


def require_zigzag(python: Path) -> None:
    """Raise one clear line when ``python`` is not an interpreter with zigzag importable."""
    from accelsim.errors import AccelsimError

    if not python.exists():
        raise AccelsimError(missing_zigzag_message(python))
    probe = subprocess.run([str(python), "-c", "import zigzag.api"], capture_output=True)
    if probe.returncode != 0:
        raise AccelsimError(missing_zigzag_message(python))


# ---------------------------------------------------------------------------------------------
# Worker side: runs under ZigZag's interpreter, imports no accelsim.

def _loops(levels: list) -> list[str]:
    return [" ".join(f"{dim}{size:g}" for dim, size in level) for level in levels]


def _run_zigzag_jobs(jobs_path: Path, results_path: Path) -> int:
    import logging

    import yaml
    from zigzag.api import get_hardware_performance_zigzag
    from zigzag.mapping.data_movement import DataMoveAttr

    logging.disable(logging.WARNING)  # ZigZag logs every stage at INFO and WARNING
    job = json.loads(jobs_path.read_text())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        accelerator = Path(tmp) / "accelerator.yaml"
        mapping = Path(tmp) / "mapping.yaml"
        accelerator.write_text(yaml.safe_dump(job["accelerator"], sort_keys=False))
        mapping.write_text(yaml.safe_dump(job["mapping"], sort_keys=False))
        for index, layer in enumerate(job["layers"]):
            start_s = time.perf_counter()
            _, _, cmes = get_hardware_performance_zigzag(
                [layer], str(accelerator), str(mapping), opt=job["opt"],
                dump_folder=str(Path(tmp) / f"out{index}"), lpf_limit=job["lpf_limit"],
                loma_show_progress_bar=False)
            wall_s = time.perf_counter() - start_s
            cme = cmes[0][1][0][0]
            operands: dict[str, dict] = {}
            for operand, patterns in cme.mapping.unit_mem_data_movement.items():
                levels = []
                for level, pattern in enumerate(patterns):
                    moved = pattern.get_attribute(DataMoveAttr.DATA_ELEM_MOVE_COUNT)
                    bits = pattern.get_attribute(DataMoveAttr.DATA_PRECISION)
                    energy = cme.mem_energy_breakdown_further[operand][level]
                    accesses = cme.memory_word_access[operand][level]
                    levels.append({
                        "bits": {str(d): moved.get(d) * bits.get(d) for d in moved.data},
                        "energy_pj": {str(d): energy.get(d) for d in energy.data},
                        "accesses": {str(d): accesses.get(d) for d in accesses.data},
                    })
                operands[str(operand)] = {"levels": levels}
            mapping_levels = cme.temporal_mapping.mapping_dic_stationary
            results.append({
                "name": layer["name"], "wall_s": wall_s,
                "mac_energy_pj": cme.mac_energy, "energy_total_pj": cme.energy_total,
                "latency_cycles": cme.latency_total2, "ideal_cycles": cme.ideal_cycle,
                "ideal_temporal_cycles": cme.ideal_temporal_cycle,
                "stall_cycles": cme.stall_slack_comb, "drain_cycles": cme.systolic_drain_cycle,
                "onloading_cycles": cme.latency_total1 - cme.latency_total0,
                "offloading_cycles": cme.latency_total2 - cme.latency_total1,
                "operands": operands,
                "temporal_mapping": {str(op): _loops(levels)
                                     for op, levels in mapping_levels.items()},
            })
            print(f"  zigzag {layer['name']}: {cme.energy_total / _PJ_PER_UJ:.1f} uJ, "
                  f"{cme.latency_total2:,.0f} cycles, {wall_s:.1f} s", file=sys.stderr,
                  flush=True)
    results_path.write_text(json.dumps(results))
    return 0


def run_zigzag(python: Path, job: dict) -> list[dict]:
    """Run ``job`` (accelerator, mapping, layers, opt, lpf_limit) under ZigZag's interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs_path = Path(tmp) / "job.json"
        results_path = Path(tmp) / "results.json"
        jobs_path.write_text(json.dumps(job))
        # Fixed hash seed: ZigZag iterates sets of loops, whose order follows string hashes.
        env = os.environ | {"PYTHONHASHSEED": "0"}
        subprocess.run([str(python), str(Path(__file__).resolve()), "--worker", str(jobs_path),
                        str(results_path)], check=True, stdout=subprocess.DEVNULL, env=env)
        return json.loads(results_path.read_text())


# ---------------------------------------------------------------------------------------------
# The side-by-side rows.

ROW_FIELDS = (
    "model", "layer", "m", "k", "n", "instances", "source",
    "dram_read_weights_bytes", "dram_read_inputs_bytes", "dram_write_outputs_bytes",
    "dram_bytes", "sram_weights_bytes", "sram_inputs_bytes", "sram_outputs_bytes",
    "array_uj", "sram_weights_uj", "sram_inputs_uj", "sram_outputs_uj", "sram_uj", "dram_uj",
    "energy_uj", "compute_cycles", "cycles", "cycles_detail", "mapping",
)


def zigzag_row(result: dict) -> dict:
    """One ZigZag result in the table's terms. Levels: 0 the PE register, 1 the SRAM buffer,
    2 DRAM; ``rd_out_to_low`` is a read toward the array, ``wr_in_by_low`` a write from it."""
    ops = result["operands"]

    def level(operand: str, index: int) -> dict:
        return ops[operand]["levels"][index]

    row: dict[str, Any] = {"source": "zigzag"}
    row["dram_read_weights_bytes"] = level("W", 2)["bits"]["rd_out_to_low"] / 8
    row["dram_read_inputs_bytes"] = level("I", 2)["bits"]["rd_out_to_low"] / 8
    row["dram_write_outputs_bytes"] = (level("O", 2)["bits"]["wr_in_by_low"]
                                       + level("O", 2)["bits"]["rd_out_to_low"]) / 8
    row["dram_bytes"] = sum(sum(level(op, 2)["bits"].values()) for op in ops) / 8
    sram_uj = 0.0
    for operand, buffer in OPERAND_BUFFER.items():
        row[f"sram_{buffer}_bytes"] = sum(level(operand, 1)["bits"].values()) / 8
        row[f"sram_{buffer}_uj"] = sum(level(operand, 1)["energy_pj"].values()) / _PJ_PER_UJ
        sram_uj += row[f"sram_{buffer}_uj"]
    registers_pj = sum(sum(level(op, 0)["energy_pj"].values()) for op in ops)
    row["array_uj"] = (result["mac_energy_pj"] + registers_pj) / _PJ_PER_UJ
    row["sram_uj"] = sram_uj
    row["dram_uj"] = sum(sum(level(op, 2)["energy_pj"].values()) for op in ops) / _PJ_PER_UJ
    row["energy_uj"] = row["array_uj"] + sram_uj + row["dram_uj"]
    row["compute_cycles"] = result["ideal_temporal_cycles"]
    row["cycles"] = result["latency_cycles"]
    row["cycles_detail"] = (f"onloading {result['onloading_cycles']:,.0f}, stall "
                            f"{result['stall_cycles']:,.0f}, offloading "
                            f"{result['offloading_cycles']:,.0f}, systolic drain "
                            f"{result['drain_cycles']:,.0f}")
    tm = result["temporal_mapping"]
    row["mapping"] = "; ".join(
        f"{op}: " + ", ".join(f"{level} [{loops}]" for level, loops in zip(LEVELS, tm[op],
                                                                           strict=True))
        for op in ("O", "I", "W"))
    return row


def accelsim_row(source: str, layer_result: LayerResult, hw: HwConfig, mapping: str) -> dict:
    from accelsim.sim.energy import sram_energy_by_buffer_pj

    a, dram, e = layer_result.actions, layer_result.dram, layer_result.energy
    row: dict[str, Any] = {"source": source}
    row["dram_read_weights_bytes"] = dram.weights
    row["dram_read_inputs_bytes"] = dram.inputs + dram.spills
    row["dram_write_outputs_bytes"] = dram.outputs
    row["dram_bytes"] = dram.total
    sram = sram_energy_by_buffer_pj(a, hw)
    for buffer in OPERAND_BUFFER.values():
        row[f"sram_{buffer}_bytes"] = (getattr(a, f"sram_read_bytes_{buffer}")
                                       + getattr(a, f"sram_write_bytes_{buffer}"))
        row[f"sram_{buffer}_uj"] = sram[buffer] / _PJ_PER_UJ
    row["array_uj"] = e.mac_pj / _PJ_PER_UJ
    row["sram_uj"] = e.sram_pj / _PJ_PER_UJ
    row["dram_uj"] = e.dram_pj / _PJ_PER_UJ
    row["energy_uj"] = (e.mac_pj + e.sram_pj + e.dram_pj) / _PJ_PER_UJ
    row["compute_cycles"] = layer_result.compute_cycles
    row["cycles"] = layer_result.cycles
    row["cycles_detail"] = (f"DRAM stall {layer_result.stall_cycles:,}, SRAM stall "
                            f"{layer_result.sram_stall_cycles:,}")
    row["mapping"] = mapping
    return row


def accelsim_tiling(layer: Layer, hw: HwConfig, layer_result: LayerResult) -> str:
    """The tiling ``simulate`` chose for the one-GEMM graph, recomputed with the public memory
    functions and checked against its DRAM bytes and stalls."""
    from accelsim.errors import AccelsimError
    from accelsim.sim import memory
    from accelsim.sim.mapping import map_gemm

    ops = memory.Operands(layer.m, layer.k, layer.n, layer.act_bits, layer.weight_bits,
                          hw.precision.accumulator_bits, layer.act_bits)
    compute = map_gemm(layer.m, layer.k, layer.n, hw.array.rows, hw.array.cols,
                       hw.array.dataflow, pipelined=hw.array.pipelined_folds).compute_cycles
    candidates = memory.candidate_tilings(
        ops, hw, memory.granule(hw.array.dataflow, hw.array.rows, hw.array.cols))
    assert not isinstance(candidates, str)
    plan = memory.plan_memory(ops, hw, compute, 1, candidates)
    if (plan.dram_bytes, plan.stall_cycles) != (layer_result.dram_bytes,
                                                layer_result.stall_cycles):
        raise AccelsimError(f"{layer.node}: the recomputed tiling does not reproduce simulate's "
                            "DRAM bytes and stalls")
    t = plan.tiling
    outer, inner = (("n", "m") if t.order == "n_outer" else ("m", "n"))
    return (f"tile m{t.tile_m} k{t.tile_k} n{t.tile_n} ({t.tiles_m}x{t.tiles_k}x{t.tiles_n} "
            f"tiles), {outer} outer, {inner} inner")


def in_graph_mapping(layer_result: LayerResult, weight_density: float) -> str:
    dram = layer_result.dram
    where_a = "A from DRAM" if dram.inputs + dram.spills else "A on chip"
    where_c = "C to DRAM" if dram.outputs else "C stays on chip"
    return (f"whole-graph plan: {where_a}, {where_c}; traced weight density "
            f"{weight_density:.3f} (zero weights gated)")


def comparison_rows(hw_path: Path, python: Path, opt: str, lpf_limit: int) -> list[dict]:
    from accelsim.graph.ir import GemmNode, Graph
    from accelsim.graph.workload import workload_graph
    from accelsim.sim.simulate import simulate

    hw = dense_hw(hw_path)
    layers: list[Layer] = []
    in_graph: dict[tuple[str, str], LayerResult] = {}
    density: dict[tuple[str, str], float] = {}
    for model in MODELS:
        graph = workload_graph(model, recipe=RECIPE)
        model_layers = comparison_layers(model, graph, hw)
        layers.extend(model_layers)
        by_name = {layer.name: layer for layer in simulate(graph, hw).layers}
        nodes = {node.name: node for node in graph.gemms}
        for layer in model_layers:
            in_graph[(layer.model, layer.node)] = by_name[layer.node]
            density[(layer.model, layer.node)] = nodes[layer.node].weight_density
    job = {"accelerator": zigzag_accelerator(hw), "mapping": zigzag_mapping(hw),
           "layers": [zigzag_layer(layer, hw) for layer in layers], "opt": opt,
           "lpf_limit": lpf_limit}
    zigzag = run_zigzag(python, job)
    rows = []
    for layer, result in zip(layers, zigzag, strict=True):
        node = GemmNode(layer.node, layer.m, layer.k, layer.n, weight_bits=layer.weight_bits,
                        act_bits=layer.act_bits)
        alone = simulate(Graph(layer.node, (node,)), hw).layers[0]
        ours = in_graph[(layer.model, layer.node)]
        shape = {"model": layer.model, "layer": layer.label, "m": layer.m, "k": layer.k,
                 "n": layer.n, "instances": layer.instances}
        rows.append(shape | zigzag_row(result))
        rows.append(shape | accelsim_row("accelsim_layer", alone, hw,
                                         accelsim_tiling(layer, hw, alone)))
        rows.append(shape | accelsim_row("accelsim_in_graph", ours, hw, in_graph_mapping(
            ours, density[(layer.model, layer.node)])))
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: (f"{value:.6g}" if isinstance(value, float) else value)
                             for key, value in row.items()})


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| model | layer (m x k x n) | source | DRAM W / A / C (KB) | DRAM (KB) | "
             "SRAM W / I / O (KB) | array / SRAM / DRAM (uJ) | energy (uJ) | "
             "compute / total cycles |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['layer']} ({row['m']}x{row['k']}x{row['n']}) | "
            f"{row['source']} | {row['dram_read_weights_bytes'] / 1e3:,.1f} / "
            f"{row['dram_read_inputs_bytes'] / 1e3:,.1f} / "
            f"{row['dram_write_outputs_bytes'] / 1e3:,.1f} | {row['dram_bytes'] / 1e3:,.1f} | "
            f"{row['sram_weights_bytes'] / 1e3:,.1f} / {row['sram_inputs_bytes'] / 1e3:,.1f} / "
            f"{row['sram_outputs_bytes'] / 1e3:,.1f} | {row['array_uj']:.2f} / "
            f"{row['sram_uj']:.2f} / {row['dram_uj']:.2f} | {row['energy_uj']:.2f} | "
            f"{row['compute_cycles']:,.0f} / {row['cycles']:,.0f} |")
    lines += ["", "Mappings (ZigZag: the temporal loops each memory level holds, innermost "
              "first, D = m, C = k, K = n; accelsim: the tiling it chose).", "",
              "| model | layer | source | mapping | cycles beyond compute |",
              "|---|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['layer']} | {row['source']} | {row['mapping']} | "
              f"{row['cycles_detail']} |" for row in rows]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> str:
    """accelsim's one-GEMM run against ZigZag over all layers: which counts agree exactly and
    the range of the energy and cycle ratios."""
    pairs = [(z, a) for z, a in zip(rows, rows[1:], strict=False)
             if z["source"] == "zigzag" and a["source"] == "accelsim_layer"]

    def same(key: str) -> int:
        return sum(round(z[key]) == round(a[key]) for z, a in pairs)

    def spread(key: str) -> str:
        ratios = [a[key] / z[key] for z, a in pairs]
        return f"{min(ratios):.3f}-{max(ratios):.3f}"

    return (f"accelsim_layer against zigzag over {len(pairs)} layers: DRAM bytes equal in "
            f"{same('dram_bytes')}, weight-buffer bytes in {same('sram_weights_bytes')}, "
            f"input-buffer bytes in {same('sram_inputs_bytes')}, output-buffer bytes in "
            f"{same('sram_outputs_bytes')}; energy ratio (accelsim / ZigZag) "
            f"{spread('energy_uj')}, array {spread('array_uj')}, SRAM {spread('sram_uj')}, "
            f"DRAM {spread('dram_uj')}; compute cycles {spread('compute_cycles')}, total cycles "
            f"{spread('cycles')}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zigzag-python", type=Path, default=DEFAULT_ZIGZAG_PYTHON,
                        help=f"interpreter of a virtualenv with zigzag-dse=={ZIGZAG_VERSION}")
    parser.add_argument("--hw", type=Path, default=DEFAULT_HW)
    parser.add_argument("--opt", choices=OPTIMIZE, default=DEFAULT_OPT,
                        help="what ZigZag's mapping search minimizes")
    parser.add_argument("--lpf-limit", type=int, default=DEFAULT_LPF_LIMIT,
                        help="LOMA's loop-prime-factor limit (larger: wider, slower search)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _run_zigzag_jobs(*args.worker)

    from accelsim.errors import AccelsimError

    try:
        require_zigzag(args.zigzag_python)
        rows = comparison_rows(args.hw, args.zigzag_python, args.opt, args.lpf_limit)
    except AccelsimError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        hw_name = args.hw.resolve().relative_to(REPO_ROOT)
    except ValueError:
        hw_name = args.hw
    options = "".join(f" {flag} {value}" for flag, value, default in (
        ("--hw", hw_name, DEFAULT_HW.relative_to(REPO_ROOT)), ("--opt", args.opt, DEFAULT_OPT),
        ("--lpf-limit", args.lpf_limit, DEFAULT_LPF_LIMIT)) if value != default)
    header = (f"ZigZag {ZIGZAG_VERSION} (LOMA, lpf_limit {args.lpf_limit}, best {args.opt}) vs "
              f"accelsim on {hw_name} with sparsity.support=none, {', '.join(MODELS)} "
              f"compressed {RECIPE}; generated by `python benchmarks/zigzag_compare.py"
              f"{options}` (do not edit).")
    text = markdown(rows, header) + "\n" + summary(rows) + "\n"
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.out_dir / "zigzag_compare.csv", rows)
    (args.out_dir / "zigzag_compare.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
