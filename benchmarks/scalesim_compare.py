"""Check accelsim's SCALE-Sim-compatible GEMM timing against SCALE-Sim itself, and time both.

Run:  python benchmarks/scalesim_compare.py [--scalesim-python /work/scalesim_venv/bin/python]
          [--write-golden tests/sim/scalesim_golden.json] [--include-slow]
          [--write-conv-golden tests/graph/scalesim_conv_golden.json]
          [--speed-dataflow os] [--skip-speed]

SCALE-Sim 3.0.0 lives in its own virtualenv (it needs numpy 2.2), see benchmarks/README.md. This
script re-launches itself under that interpreter with ``--worker``; the worker imports only the
standard library and scalesim, never accelsim. It prints, per case and dataflow, SCALE-Sim's
stall-free "Total Cycles" (COMPUTE_REPORT.csv, CALC bandwidth mode), accelsim's
``map_gemm(..., scalesim_compat=True)`` and accelsim's default pipelined model; then SCALE-Sim's
wall time on a 197x768x768 GEMM against ``map_gemm`` and (when the module exists)
``accelsim.sim.simulate.simulate`` on the same GEMM, with the speed ratios. Without SCALE-Sim it
still prints accelsim's side against the stored golden numbers.

Convolution topologies (SCALE-Sim's default format, ``CONV_CASES``) are checked the same way:
SCALE-Sim runs the topology file as written, accelsim reads the same text with
``accelsim.graph.scalesim_io.read_topology_csv`` (conv layers lowered to GEMMs) and sums
``map_gemm(..., scalesim_compat=True)`` over its layers; SCALE-Sim's side is the sum of its
layers' "Total Cycles". ``--write-conv-golden`` stores them (``tests/graph/test_scalesim_io.py``
asserts them without SCALE-Sim).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDEN_PATH = REPO_ROOT / "tests" / "sim" / "scalesim_golden.json"
CONV_GOLDEN_PATH = REPO_ROOT / "tests" / "graph" / "scalesim_conv_golden.json"
DEFAULT_SCALESIM_PYTHON = Path("/work/scalesim_venv/bin/python")
DATAFLOW_ORDER = ("os", "ws", "is")
SCALESIM_VERSION = "3.0.0"

@dataclass(frozen=True)
class Case:
    """One GEMM out[M,N] = A[M,K] @ B[K,N] on a rows x cols array (SCALE-Sim row: name, M, N, K,).

    ``sparsity="2:4"`` runs SCALE-Sim's layer-wise N:M mode (SparsitySupport on, ellpack_block,
    no optimized mapping), which compacts the weight's K to K/2; ``slow`` cases take minutes.
    """

    name: str
    m: int
    k: int
    n: int
    rows: int
    cols: int
    sparsity: str = "dense"
    slow: bool = False


# Chosen to hit: exact multiples, partial folds on either axis, GEMMs smaller than the array,
# tall/skinny and long-reduction shapes, 1-wide and non-square arrays, and 2:4 layers.
CASES: tuple[Case, ...] = (
    Case("square_exact_4x4", 8, 8, 8, 4, 4),
    Case("partial_all_4x4", 5, 9, 7, 4, 4),
    Case("tall_m_4x4", 16, 12, 4, 4, 4),
    Case("single_mac_4x4", 1, 1, 1, 4, 4),
    Case("smaller_than_array_4x4", 3, 2, 5, 4, 4),
    Case("skinny_m1000_4x4", 1000, 3, 2, 4, 4),
    Case("wide_n1000_4x4", 2, 1, 1000, 4, 4),
    Case("long_k2048_4x4", 1, 2048, 1, 4, 4),
    Case("odd_2x2", 3, 3, 3, 2, 2),
    Case("one_pe_1x1", 2, 3, 2, 1, 1),
    Case("one_row_1x8", 6, 5, 11, 1, 8),
    Case("one_col_8x1", 6, 5, 11, 8, 1),
    Case("partial_8x16", 20, 17, 33, 8, 16),
    Case("long_n_8x16", 7, 3, 100, 8, 16),
    Case("partial_16x8", 50, 31, 9, 16, 8),
    Case("exact_8x8", 64, 128, 64, 8, 8),
    Case("exact_16x16", 64, 64, 64, 16, 16),
    Case("tiny_on_32x32", 10, 3, 5, 32, 32),
    Case("matvec_on_32x32", 1, 64, 1, 32, 32),
    Case("attn_qk_32x8", 197, 64, 197, 32, 8),
    Case("partial_128x128", 300, 100, 200, 128, 128),
    Case("sparse_partial_4x4", 5, 12, 7, 4, 4, "2:4"),
    Case("sparse_k20_4x4", 3, 20, 2, 4, 4, "2:4"),
    Case("sparse_2x2", 3, 8, 3, 2, 2, "2:4"),
    Case("sparse_partial_8x16", 20, 36, 33, 8, 16, "2:4"),
    Case("sparse_partial_16x8", 50, 64, 9, 16, 8, "2:4"),
    Case("sparse_tiny_32x32", 10, 4, 5, 32, 32, "2:4"),
    Case("vit_b_qkv_32x32", 197, 768, 768, 32, 32, slow=True),
)
SPEED_CASE = Case("vit_b_qkv_32x32", 197, 768, 768, 32, 32, slow=True)


@dataclass(frozen=True)
class ConvCase:
    """A one-layer SCALE-Sim conv topology on a rows x cols array. A name holding ``DP`` is a
    depth-wise layer to SCALE-Sim (one layer per channel)."""

    name: str
    ifmap_h: int
    ifmap_w: int
    filter_h: int
    filter_w: int
    channels: int
    filters: int
    stride: int
    rows: int
    cols: int
    sparsity: str = "dense"


# Chosen to hit: stride 1 and a stride that does not divide (H - Fh) (SCALE-Sim rounds the
# output size up), rectangular maps and filters, 1x1 convolution, a ViT patch embedding
# (kernel = stride), a depth-wise layer and a 2:4 layer.
CONV_CASES: tuple[ConvCase, ...] = (
    ConvCase("conv3x3_s1_4x4", 8, 8, 3, 3, 3, 8, 1, 4, 4),
    ConvCase("conv3x3_s2_uneven_4x4", 8, 8, 3, 3, 2, 5, 2, 4, 4),
    ConvCase("rect_s1_8x4", 9, 6, 2, 3, 4, 6, 1, 8, 4),
    ConvCase("pointwise_8x8", 5, 5, 1, 1, 16, 16, 1, 8, 8),
    ConvCase("patch_embed_16x16", 32, 32, 8, 8, 3, 32, 8, 16, 16),
    ConvCase("DP_depthwise_4x4", 6, 6, 3, 3, 3, 1, 1, 4, 4),
    ConvCase("sparse_conv_4x4", 6, 6, 2, 2, 4, 6, 1, 4, 4, "2:4"),
)


def conv_topology(job: dict) -> str:
    """The conv topology text both simulators read (SCALE-Sim needs the trailing comma)."""
    ratio = f"{job['sparsity']}," if job["sparsity"] != "dense" else ""
    return ("Layer name,IFMAP Height,IFMAP Width,Filter Height,Filter Width,Channels,"
            "Num Filter,Strides,\n"
            f"{job['name']},{job['ifmap_h']},{job['ifmap_w']},{job['filter_h']},"
            f"{job['filter_w']},{job['channels']},{job['filters']},{job['stride']},{ratio}\n")

CONFIG_TEMPLATE = """[general]
run_name = accelsim_check

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: 64
FilterSramSzkB: 64
OfmapSramSzkB: 64
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: {dataflow}
MemoryBanks: 1
ReadRequestBuffer: 512
WriteRequestBuffer: 512

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: {sparsity_support}
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 4
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""
# SCALE-Sim 3.0.0 insists on a layout CSV even with custom layouts off; a header suffices.
LAYOUT_CSV = (
    "Layer,IFMAP Height,IFMAP Width,Filter Height,Filter Width,Channels,Num Filter,Strides,\n"
)


def _run_scalesim_jobs(jobs_path: Path, results_path: Path) -> int:
    """Worker side (runs under SCALE-Sim's interpreter): simulate each job, write JSON results."""
    from scalesim.scale_sim import scalesim

    jobs = json.loads(jobs_path.read_text())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        layout = tmp_dir / "layout.csv"
        layout.write_text(LAYOUT_CSV)
        for index, job in enumerate(jobs):
            config = tmp_dir / f"job{index}.cfg"
            sparse = job["sparsity"] != "dense"
            config.write_text(CONFIG_TEMPLATE.format(**job, sparsity_support=str(sparse).lower()))
            topology = tmp_dir / f"job{index}.csv"
            is_conv = "ifmap_h" in job
            if is_conv:
                topology.write_text(conv_topology(job))
            else:
                ratio = f"{job['sparsity']}," if sparse else ""
                # The trailing comma matters: SCALE-Sim drops each row's last field.
                topology.write_text(
                    f"Layer,M,N,K,\n{job['name']},{job['m']},{job['n']},{job['k']},{ratio}\n"
                )
            out_dir = tmp_dir / f"out{index}"
            start_s = time.perf_counter()
            sim = scalesim(
                save_disk_space=True,
                verbose=False,
                config=str(config),
                topology=str(topology),
                layout=str(layout),
                input_type_gemm=not is_conv,
            )
            sim.run_scale(top_path=str(out_dir))
            wall_s = time.perf_counter() - start_s
            with open(out_dir / "accelsim_check" / "COMPUTE_REPORT.csv", newline="") as report:
                layers = [
                    {key.strip(): value.strip() for key, value in row.items()
                     if key and key.strip()}
                    for row in csv.DictReader(report, skipinitialspace=True)
                ]
            # A depth-wise conv is one SCALE-Sim layer per channel: the topology's cycles sum.
            total = sum(int(layer["Total Cycles"]) for layer in layers)
            results.append(
                {
                    **job,
                    "total_cycles": total,
                    "stall_cycles": sum(int(layer["Stall Cycles"]) for layer in layers),
                    "layers": len(layers),
                    "wall_s": wall_s,
                }
            )
            print(f"  scalesim {job['name']} {job['dataflow']}: {total} cycles, "
                  f"{wall_s:.2f} s", file=sys.stderr, flush=True)
    results_path.write_text(json.dumps(results))
    return 0


def run_scalesim(scalesim_python: Path, jobs: list[dict]) -> list[dict]:
    """Run ``jobs`` (dicts with name, m, k, n, rows, cols, dataflow) through SCALE-Sim."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs_path = Path(tmp) / "jobs.json"
        results_path = Path(tmp) / "results.json"
        jobs_path.write_text(json.dumps(jobs))
        subprocess.run(
            [str(scalesim_python), str(Path(__file__).resolve()), "--worker",
             str(jobs_path), str(results_path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return json.loads(results_path.read_text())


def scalesim_version(scalesim_python: Path) -> str:
    probe = "from importlib.metadata import version; print(version('scalesim'))"
    return subprocess.run(
        [str(scalesim_python), "-c", probe], check=True, capture_output=True, text=True
    ).stdout.strip()


def case_jobs(cases: tuple[Case | ConvCase, ...],
              dataflows: tuple[str, ...] = DATAFLOW_ORDER) -> list[dict]:
    """One SCALE-Sim job per case and dataflow (the dataclass fields plus ``dataflow``)."""
    jobs = []
    for case in cases:
        fields = {key: value for key, value in asdict(case).items() if key != "slow"}
        jobs.extend(fields | {"dataflow": dataflow} for dataflow in dataflows)
    return jobs


def write_golden(path: Path, results: list[dict], version: str) -> None:
    entries = [
        {key: result[key] for key in ("name", "m", "k", "n", "sparsity", "rows", "cols",
                                      "dataflow")}
        | {"compute_cycles": result["total_cycles"], "stall_cycles": result["stall_cycles"]}
        for result in results
    ]
    golden = {
        "source": (
            f"SCALE-Sim {version} (pip install scalesim=={version}, numpy 2.2), run by "
            "benchmarks/scalesim_compare.py --write-golden; compute_cycles is COMPUTE_REPORT.csv "
            "'Total Cycles' of a one-layer GEMM topology (name, M, N, K, [2:4,]) in CALC "
            "bandwidth mode; 2:4 entries set SparsitySupport true in the config template"
        ),
        "scalesim_version": version,
        "config_template": CONFIG_TEMPLATE,
        "layout_csv": LAYOUT_CSV,
        "gemm_convention": "out[M,N] = A[M,K] @ B[K,N]; SCALE-Sim topology row: name, M, N, K,",
        "entries": entries,
    }
    path.write_text(json.dumps(golden, indent=1) + "\n")


CONV_FIELDS = ("name", "ifmap_h", "ifmap_w", "filter_h", "filter_w", "channels", "filters",
               "stride", "sparsity", "rows", "cols", "dataflow")


def write_conv_golden(path: Path, results: list[dict], version: str) -> None:
    entries = [{key: result[key] for key in CONV_FIELDS}
               | {"compute_cycles": result["total_cycles"], "stall_cycles": result["stall_cycles"],
                  "scalesim_layers": result["layers"]}
               for result in results]
    golden = {
        "source": (
            f"SCALE-Sim {version} (pip install scalesim=={version}, numpy 2.2), run by "
            "benchmarks/scalesim_compare.py --write-conv-golden; compute_cycles is the sum over "
            "COMPUTE_REPORT.csv rows of 'Total Cycles' for the one-line conv topology "
            "benchmarks/scalesim_compare.py:conv_topology writes, in CALC bandwidth mode, with "
            "config_template (2:4 entries set SparsitySupport true)"
        ),
        "scalesim_version": version,
        "config_template": CONFIG_TEMPLATE,
        "entries": entries,
    }
    path.write_text(json.dumps(golden, indent=1) + "\n")


def conv_compat_cycles(job: dict) -> tuple[int, int]:
    """(accelsim compat cycles summed over the layers it reads from the topology, layer count)."""
    from accelsim.graph.scalesim_io import read_topology_csv
    from accelsim.sim.mapping import map_gemm

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "topology.csv"
        path.write_text(conv_topology(job))
        graph = read_topology_csv(path)
    total = 0
    for node in graph.gemms:
        steps = node.k // 2 if node.sparsity == "2:4" else node.k
        total += map_gemm(node.m, steps, node.n, job["rows"], job["cols"], job["dataflow"],
                          scalesim_compat=True).compute_cycles
    return total, len(graph.gemms)


def print_conv_table(rows: list[dict]) -> int:
    """Print SCALE-Sim vs accelsim cycles of the conv topologies; return the mismatches."""
    header = (f"{'conv case':<24} {'df':<3} {'HxW':>7} {'FhxFw':>6} {'C':>3} {'N':>3} {'S':>2} "
              f"{'array':>8} {'layers':>6} {'scalesim':>10} {'compat':>10} {'match':>5}")
    print(header)
    print("-" * len(header))
    mismatches = 0
    for row in rows:
        compat, layers = conv_compat_cycles(row)
        reference = row["total_cycles"]
        match = compat == reference
        mismatches += not match
        print(f"{row['name']:<24} {row['dataflow']:<3} {row['ifmap_h']:>3}x{row['ifmap_w']:<3} "
              f"{row['filter_h']:>2}x{row['filter_w']:<3} {row['channels']:>3} "
              f"{row['filters']:>3} {row['stride']:>2} {row['rows']:>3}x{row['cols']:<4} "
              f"{layers:>6} {reference:>10,} {compat:>10,} {'yes' if match else 'NO':>5}")
    return mismatches


def print_table(rows: list[dict]) -> int:
    """Print SCALE-Sim vs accelsim cycles; return the number of compat mismatches."""
    from accelsim.sim.mapping import map_gemm

    header = (f"{'case':<24} {'df':<3} {'M':>5} {'K':>5} {'N':>5} {'array':>8} "
              f"{'scalesim':>10} {'compat':>10} {'match':>5} {'accelsim':>10} {'saved %':>8}")
    print(header)
    print("-" * len(header))
    mismatches = 0
    for row in rows:
        # SCALE-Sim's 2:4 mode compacts the weight's K to K/2, as accelsim's skipping datapath.
        steps = row["k"] // 2 if row["sparsity"] == "2:4" else row["k"]
        shape = (row["m"], steps, row["n"], row["rows"], row["cols"], row["dataflow"])
        compat = map_gemm(*shape, scalesim_compat=True).compute_cycles
        default = map_gemm(*shape).compute_cycles
        reference = row["total_cycles"]
        match = compat == reference
        mismatches += not match
        saved_pct = 100.0 * (reference - default) / reference if reference else 0.0
        print(f"{row['name']:<24} {row['dataflow']:<3} {row['m']:>5} {row['k']:>5} {row['n']:>5} "
              f"{row['rows']:>3}x{row['cols']:<4} {reference:>10,} {compat:>10,} "
              f"{'yes' if match else 'NO':>5} {default:>10,} {saved_pct:>8.1f}")
    return mismatches


def time_per_call_s(function, min_total_s: float = 0.5) -> float:
    """Mean wall time of ``function()`` over enough calls to fill ``min_total_s``."""
    calls = 1
    while True:
        start_s = time.perf_counter()
        for _ in range(calls):
            function()
        elapsed_s = time.perf_counter() - start_s
        if elapsed_s >= min_total_s:
            return elapsed_s / calls
        calls *= 4


def accelsim_timings(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> dict:
    """Per-call wall time of map_gemm (cold cache and warm) and, if present, simulate()."""
    from accelsim.sim import mapping

    def cold() -> None:
        mapping._map_cached.cache_clear()
        mapping.map_gemm(m, k, n, rows, cols, dataflow, scalesim_compat=True)

    timings = {
        "map_gemm (cold cache)": time_per_call_s(cold),
        "map_gemm (cached)": time_per_call_s(
            lambda: mapping.map_gemm(m, k, n, rows, cols, dataflow, scalesim_compat=True)
        ),
    }
    simulate_call = _simulate_call(m, k, n, rows, cols, dataflow)
    if simulate_call is not None:
        timings["simulate() one-GEMM graph"] = time_per_call_s(simulate_call)
    return timings


def _simulate_call(m: int, k: int, n: int, rows: int, cols: int, dataflow: str):
    """A no-argument call of the full simulator on a one-GEMM graph with ideal memory."""
    try:
        from accelsim.hw import load_hw, with_overrides
        from accelsim.sim.simulate import simulate
    except ImportError:  # the simulator is developed alongside; time map_gemm alone until then
        return None
    from accelsim.graph.ir import GemmNode, Graph

    graph = Graph(name="one_gemm", nodes=(GemmNode(name="gemm", m=m, k=k, n=n),))
    overrides = {"array.rows": rows, "array.cols": cols, "array.dataflow": dataflow,
                 "ideal_memory": True, "array.pipelined_folds": False}
    hw = with_overrides(load_hw(REPO_ROOT / "hw_configs" / "int8_dense.yaml"), overrides)
    result = simulate(graph, hw, scalesim_compat=True)
    if result.layers[0].compute_cycles != map_gemm_cycles(m, k, n, rows, cols, dataflow):
        raise AssertionError("simulate() and map_gemm disagree on compute cycles")
    return lambda: simulate(graph, hw, scalesim_compat=True)


def map_gemm_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> int:
    from accelsim.sim.mapping import map_gemm

    return map_gemm(m, k, n, rows, cols, dataflow, scalesim_compat=True).compute_cycles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scalesim-python", type=Path, default=DEFAULT_SCALESIM_PYTHON,
                        help="interpreter of a virtualenv with scalesim==3.0.0 installed")
    parser.add_argument("--write-golden", type=Path, metavar="PATH",
                        help="store SCALE-Sim's numbers for every case (slow ones included)")
    parser.add_argument("--include-slow", action="store_true",
                        help="also run the slow cases (about 1-2 min each in SCALE-Sim)")
    parser.add_argument("--write-conv-golden", type=Path, metavar="PATH",
                        help="run only the conv topologies and store SCALE-Sim's numbers")
    parser.add_argument("--speed-dataflow", choices=DATAFLOW_ORDER, default="os")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _run_scalesim_jobs(*args.worker)

    have_scalesim = args.scalesim_python.exists()
    if (args.write_golden or args.write_conv_golden) and not have_scalesim:
        print(f"--write-golden and --write-conv-golden need SCALE-Sim at "
              f"{args.scalesim_python}", file=sys.stderr)
        return 2
    if not have_scalesim:
        print(f"SCALE-Sim not found at {args.scalesim_python}: comparing against the stored "
              f"golden numbers in {GOLDEN_PATH.relative_to(REPO_ROOT)} and "
              f"{CONV_GOLDEN_PATH.relative_to(REPO_ROOT)}, skipping timing.\n")
        golden = json.loads(GOLDEN_PATH.read_text())
        rows = [entry | {"total_cycles": entry["compute_cycles"]} for entry in golden["entries"]]
        conv = json.loads(CONV_GOLDEN_PATH.read_text())
        conv_rows = [entry | {"total_cycles": entry["compute_cycles"]}
                     for entry in conv["entries"]]
        mismatches = print_table(rows)
        print()
        return 1 if mismatches + print_conv_table(conv_rows) else 0

    version = scalesim_version(args.scalesim_python)
    print(f"SCALE-Sim {version} at {args.scalesim_python} (CALC mode, stall-free)\n")
    conv_results = run_scalesim(args.scalesim_python, case_jobs(CONV_CASES))
    conv_mismatches = print_conv_table(conv_results)
    print(f"\n{len(conv_results) - conv_mismatches}/{len(conv_results)} SCALE-Sim conv "
          "topologies matched exactly by read_topology_csv + map_gemm(..., scalesim_compat=True)"
          "\n")
    if args.write_conv_golden:
        write_conv_golden(args.write_conv_golden, conv_results, version)
        print(f"wrote {len(conv_results)} entries to {args.write_conv_golden}")
        return 1 if conv_mismatches else 0
    include_slow = args.include_slow or args.write_golden is not None
    jobs = case_jobs(tuple(case for case in CASES if include_slow or not case.slow))
    (speed_job,) = case_jobs((SPEED_CASE,), (args.speed_dataflow,))
    if not args.skip_speed and speed_job not in jobs:
        jobs.append(speed_job)
    results = run_scalesim(args.scalesim_python, jobs)
    mismatches = print_table(results)
    print(f"\n{len(results) - mismatches}/{len(results)} SCALE-Sim results matched exactly by "
          "map_gemm(..., scalesim_compat=True)")
    if args.write_golden:
        write_golden(args.write_golden, results, version)  # the speed job is one of the cases
        print(f"wrote {len(results)} entries to {args.write_golden}")

    if not args.skip_speed:
        scalesim_wall_s = next(
            r["wall_s"] for r in results if all(r[key] == v for key, v in speed_job.items())
        )
        m, k, n, rows, cols = (SPEED_CASE.m, SPEED_CASE.k, SPEED_CASE.n, SPEED_CASE.rows,
                               SPEED_CASE.cols)
        print(f"\nSpeed, {m}x{k}x{n} GEMM (M x K x N) on {rows}x{cols}, {args.speed_dataflow}, "
              "stall-free:")
        print(f"  {'SCALE-Sim ' + version:<28} {scalesim_wall_s:>12.3f} s")
        for label, seconds in accelsim_timings(m, k, n, rows, cols, args.speed_dataflow).items():
            print(f"  {'accelsim ' + label:<28} {seconds * 1e6:>12.2f} us   "
                  f"{scalesim_wall_s / seconds:>14,.0f}x faster")
    return 1 if mismatches + conv_mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
