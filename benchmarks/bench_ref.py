"""Speed of the integer reference: one command, ratios side by side.

    python benchmarks/bench_ref.py [--models vit_b16,minilm_l6] [--repeats 9] [--hw H]

1. GEMMs 768x768x3072 (M x K x N: the shape the speed goals were set on, 768 rows of
   activations by a BERT-base FFN-in's 768x3072 weights) and 197x768x3072 (ViT-B/16's FFN-in:
   197 tokens), every kernel timed in turn within each repeat (round robin, so load that comes
   and goes hits them alike), medians compared, in wall time with the default threads and in
   CPU time on one thread (numba and torch):
   the 2:4 compressed-format kernel (kept values + 2-bit indices, half the MACs) against the
   dense int kernel (goal >= 1.6x faster); the dense int kernel against float32 BLAS
   (``torch.matmul``, goal: at least as fast), float64 BLAS and numpy int32 matmul; the
   accumulator clip the chip datapath adds after each GEMM.
2. Whole-model integer inference (W4A4 + 2:4, random weights and generated calibration: timing
   only) on the chip datapath of ``--hw`` (``Datapath.of_hw``: accumulator width, integer
   requantization, vector unit format), the way ``run_int_model`` executes it without recording
   ops for the oracle: seconds per input, median and best wall, and the CPU seconds of one
   forward summed over threads (what load cannot inflate much). Goal for ViT-B/16: one 224x224
   image in under 1 s on 2 cores. Each forward runs twice per repeat, with the kernels' own
   thread choice (``kernels.thread_count``) and capped at 1 thread: the first must not be
   slower.

The machine may be shared: each line states the load average and the runnable threads when it
was measured. Compiles (numba ``cache=True``) and thread pools are warmed up before timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import numba
import numpy as np
import torch

from accelsim.errors import AccelsimError

# M rows of activations, K in_features, N out_features: the shape the goals were set on, then
# ViT-B/16's FFN-in (197 tokens). The goals are judged on each.
GEMM_SHAPES = ((768, 768, 3072), (197, 768, 3072))
DEFAULT_MODELS = "vit_b16,minilm_l6,dinov2_s,whisper_tiny_en,wav2vec2_base"
DEFAULT_HW = "hw_configs/int4_sparse.yaml"


def load_note() -> str:
    with open("/proc/loadavg") as file:
        one, five, _, running = file.read().split()[:4]
    return f"load {one}/{five} (1/5 min), runnable {running.split('/')[0]}, nice {os.nice(0)}"


def round_robin(fns: dict[str, Callable[[], object]], repeats: int,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of ``clock`` each function takes, ``repeats`` times, the functions taking turns
    (after one warm-up call each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def goal(ratio: float, target: float) -> str:
    return f"goal >= {target}: {'met' if ratio >= target else 'MISSED'}"


def bench_gemm(shape: tuple[int, int, int], repeats: int) -> None:
    from accelsim.ref import kernels
    from accelsim.ref.codes import compress_2to4

    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.integers(0, 16, (m, k)).astype(np.uint8)  # 4-bit pact2 codes with a zero point
    w = rng.integers(-7, 8, (n, k)).astype(np.int8)  # int4 zero-preserving codes
    w_sparse = w.reshape(n, k // 4, 4).copy()
    np.put_along_axis(w_sparse, np.argsort(rng.random((n, k // 4, 4)), axis=2)[:, :, :2], 0, 2)
    w_sparse = w_sparse.reshape(n, k)
    values, indices = compress_2to4(w_sparse)
    prepared = kernels.prepare_sparse(values, indices)  # once per layer, as the executor does
    dense_prepared = kernels.prepare_dense(w)
    wt = np.ascontiguousarray(w.T)
    a64, wt64 = a.astype(np.float64) - 5, wt.astype(np.float64)
    a32, wt32 = a.astype(np.int32) - 5, wt.astype(np.int32)
    af32 = torch.from_numpy(a.astype(np.float32) - 5)
    wtf32 = torch.from_numpy(wt.astype(np.float32))
    assert np.array_equal(kernels.int_gemm(a, w, 5, prepared=dense_prepared), a64 @ wt64)
    assert np.array_equal(kernels.sparse_gemm(a, values, indices, 5, prepared=prepared),
                          a64 @ w_sparse.T)

    dense, sparse, f32 = ("numba int GEMM (dense)", "numba 2:4 GEMM (values + indices)",
                          "torch.matmul float32 (BLAS)")
    fns: dict[str, Callable[[], object]] = {
        dense: lambda: kernels.int_gemm(a, w, 5, prepared=dense_prepared),
        sparse: lambda: kernels.sparse_gemm(a, values, indices, 5, prepared=prepared),
        f32: lambda: torch.matmul(af32, wtf32),
        "numpy float64 matmul (BLAS)": lambda: a64 @ wt64,
    }
    wall = round_robin(fns, repeats)
    # One thread each (numba and torch), timed by the CPU seconds of the calling thread, which
    # other jobs on the machine inflate far less than wall time: the kernels themselves. Not
    # numpy's BLAS: its own threads would go uncounted.
    threads = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    try:
        cpu = round_robin({name: fns[name] for name in (dense, sparse, f32)}, repeats,
                          time.thread_time)
    finally:
        numba.set_num_threads(threads[0])
        torch.set_num_threads(threads[1])
    wall["numpy int32 matmul"] = round_robin({"": lambda: a32 @ wt32}, 3)[""]
    acc = kernels.int_gemm(a, w, 5, prepared=dense_prepared)
    wall["clip of the int32 accumulators to 12 bits"] = round_robin(
        {"": lambda: kernels.clip_accumulators(acc, 12, "saturate")}, repeats)[""]
    print(f"GEMM {m}x{k}x{n} (M x K x N), median of {repeats}, round robin; {load_note()}")
    print(f"  wall: numba threads {threads[0]} (kernels.thread_count picks per call), torch "
          f"threads {threads[1]}; CPU: 1 thread each")
    print(f"  {'kernel':<44} {'wall ms':>9} {'best ms':>9} {'/ dense':>8} {'CPU ms':>8} "
          f"{'/ dense':>8}")
    for name, values in wall.items():
        ratio = median(values) / median(wall[dense])
        line = f"  {name:<44} {median(values) * 1e3:>9.2f} {min(values) * 1e3:>9.2f} {ratio:>7.2f}x"
        if name in cpu:
            cpu_ms = median(cpu[name]) * 1e3
            line += f" {cpu_ms:>8.2f} {median(cpu[name]) / median(cpu[dense]):>7.2f}x"
        print(line)
    for clock, times in (("wall", wall), ("CPU, 1 thread", cpu)):
        speedup = median(times[dense]) / median(times[sparse])
        blas = median(times[f32]) / median(times[dense])
        print(f"  {clock}: 2:4 {speedup:.2f}x faster than dense int ({goal(speedup, 1.6)}); "
              f"dense int {blas:.2f}x float32 BLAS speed ({goal(blas, 1.0)})")


def bench_model(name: str, repeats: int, batch: int, hw_path: str) -> None:
    from accelsim import zoo
    from accelsim.compress.apply import apply_recipe, calibrate
    from accelsim.compress.export import export_int_model
    from accelsim.compress.recipe import load_recipe
    from accelsim.hw import load_hw
    from accelsim.ref.datapath import Datapath
    from accelsim.ref.execute import build_int_executor
    from accelsim.tasks.base import Batch

    recipe = load_recipe("w4a4_sp24")
    model = zoo.build_model(name, seed=0)
    apply_recipe(model, recipe)
    calib = zoo.example_inputs(name, batch=1, seed=1)
    calibrate(model, [Batch(inputs=calib, labels=torch.zeros(1))], recipe)
    executor = build_int_executor(model.eval(), export_int_model(model),
                                  datapath=Datapath.of_hw(load_hw(hw_path)))
    inputs = zoo.example_inputs(name, batch=batch, seed=2)
    shape = {k: tuple(v.shape) for k, v in inputs.items()}
    threads = numba.get_num_threads()

    def capped(cap: int) -> Callable[[], object]:
        def forward() -> object:
            numba.set_num_threads(cap)
            try:
                return executor(**inputs)
            finally:
                numba.set_num_threads(threads)
        return forward

    with torch.no_grad():
        times = round_robin({"auto": capped(threads), "one": capped(1)}, repeats)
        start = time.process_time()
        executor(**inputs)
        cpu = time.process_time() - start
    auto, one = median(times["auto"]), median(times["one"])
    print(f"  {name:<16} {str(shape):<30} {auto:>8.3f} s {min(times['auto']):>8.3f} s "
          f"{cpu:>8.3f} s {one:>8.3f} s {one / auto:>12.2f}x   {load_note()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated zoo models")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=1, help="inputs per forward")
    parser.add_argument("--hw", default=DEFAULT_HW, help="hardware config of the datapath")
    args = parser.parse_args()
    for shape in GEMM_SHAPES:
        bench_gemm(shape, args.repeats)
    models = [m for m in args.models.split(",") if m]
    if models:
        print(f"\nInteger inference on the {args.hw} datapath (W4A4 + 2:4, batch {args.batch}), "
              f"median of {max(1, args.repeats // 2)}, round robin; numba threads "
              f"{numba.get_num_threads()}, CPUs {len(os.sched_getaffinity(0))}")
        print(f"  {'model':<16} {'input':<30} {'median':>10} {'best':>10} {'CPU':>10} "
              f"{'1 thread':>10} {'1 thread/auto':>13}")
    for name in models:
        try:
            bench_model(name, max(1, args.repeats // 2), args.batch, args.hw)
        except AccelsimError as exc:  # e.g. a family the compression recipe cannot apply to yet
            print(f"  {name:<16} skipped: {exc}")
    if "vit_b16" in models:
        print("  goal: vit_b16, one 224x224 image in < 1 s on 2 cores; auto threads never slower "
              "than 1 (1 thread/auto >= 1, up to noise)")
    # The fast path records no ops, so the oracle is never imported.
    print(f"  oracle imported: {'accelsim.ref.oracle' in sys.modules}")


if __name__ == "__main__":
    main()
