"""Speed of the integer reference: one command, ratios side by side.

    python benchmarks/bench_ref.py [--models vit_b16,minilm_l6] [--repeats 7]

1. GEMM 197x768x3072 (ViT-B/16 FFN-in): the numba int8 x int4 -> int32 kernel against numpy
   float64 BLAS matmul (goal: at least as fast) and numpy integer matmul (goal: >= 30x faster),
   plus the 2:4 index-mux kernel on the same shape, and the accumulator clip the chip datapath
   adds after each GEMM.
2. Whole-model integer inference (W4A4 + 2:4, attention operands 8-bit, calibrated on generated
   inputs, random weights: timing only): seconds per input and inputs/s. Goal for ViT-B/16: one
   224x224 image in under 5 s on 2 cores.

Times are the best of ``--repeats`` runs after a warm-up (so numba's compile, cached on disk
with ``cache=True``, is excluded), with the machine's default threads (2 cores here).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from accelsim.errors import AccelsimError

GEMM_SHAPE = (197, 768, 3072)  # M tokens, K in_features, N out_features
DEFAULT_MODELS = "vit_b16,minilm_l6,dinov2_s,whisper_tiny_en,wav2vec2_base"


def best_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best, median) wall seconds of ``fn`` after one warm-up call (JIT load, thread pools)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def cpu_seconds(fn: Callable[[], object]) -> float:
    """CPU seconds of one call summed over this process's threads: on a machine shared with other
    jobs wall time inflates, CPU time much less (on 2 idle cores wall is about CPU / 2 for the
    parallel kernels)."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench_gemm(repeats: int) -> None:
    from accelsim.ref import kernels
    from accelsim.ref.codes import compress_2to4

    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(0)
    a = rng.integers(0, 16, (m, k)).astype(np.uint8)  # 4-bit pact2 codes with a zero point
    w = rng.integers(-7, 8, (n, k)).astype(np.int8)  # int4 zero-preserving codes
    w_sparse = w.reshape(n, k // 4, 4).copy()
    np.put_along_axis(w_sparse, np.argsort(rng.random((n, k // 4, 4)), axis=2)[:, :, :2], 0, 2)
    w_sparse = w_sparse.reshape(n, k)
    values, indices = compress_2to4(w_sparse)
    wt = np.ascontiguousarray(w.T)
    a64, wt64 = a.astype(np.float64) - 5, wt.astype(np.float64)
    a32, wt32 = a.astype(np.int32) - 5, wt.astype(np.int32)
    expected = a64 @ wt64
    assert np.array_equal(kernels.int_gemm(a, w, 5, w_transposed=wt), expected)
    assert np.array_equal(kernels.sparse_gemm(a, values, indices, 5), a64 @ w_sparse.T)

    rows = [
        ("numba int GEMM (int8 in, int32 out)", lambda: kernels.int_gemm(a, w, 5, w_transposed=wt)),
        ("numba 2:4 index-mux GEMM", lambda: kernels.sparse_gemm(a, values, indices, 5)),
        ("numpy float64 matmul (BLAS)", lambda: a64 @ wt64),
        ("numpy int32 matmul", lambda: a32 @ wt32),
    ]
    results = {name: best_seconds(fn, repeats if "int32" not in name else 3) for name, fn in rows}
    ours = results[rows[0][0]][0]
    print(f"GEMM {m}x{k}x{n} (M x K x N), best of {repeats}")
    print(f"  {'kernel':<38} {'best ms':>9} {'median ms':>10} {'numba int / this':>17}")
    for name, (best, median) in results.items():
        print(f"  {name:<38} {best * 1e3:>9.2f} {median * 1e3:>10.2f} {best / ours:>16.2f}x")
    f64 = results[rows[2][0]][0] / ours
    i32 = results[rows[3][0]][0] / ours
    print(f"  numba vs float64 BLAS: {f64:.2f}x (goal >= 1.0: {'met' if f64 >= 1 else 'MISSED'})")
    print(f"  numba vs numpy int32:  {i32:.1f}x (goal >= 30: {'met' if i32 >= 30 else 'MISSED'})")
    acc = kernels.int_gemm(a, w, 5, w_transposed=wt)
    clip, _ = best_seconds(lambda: kernels.clip_accumulators(acc, 12, "saturate"), repeats)
    print(f"  clip of its {m}x{n} accumulators to 12 bits (the chip datapath's extra step): "
          f"{clip * 1e3:.2f} ms, {clip / ours:.1%} of the int GEMM")


def bench_model(name: str, repeats: int, batch: int) -> None:
    import torch

    from accelsim import zoo
    from accelsim.compress.apply import apply_recipe, calibrate
    from accelsim.compress.export import export_int_model
    from accelsim.compress.recipe import load_recipe
    from accelsim.ref.execute import build_int_executor
    from accelsim.tasks.base import Batch

    recipe = load_recipe("w4a4_sp24")
    model = zoo.build_model(name, seed=0)
    apply_recipe(model, recipe)
    calib = zoo.example_inputs(name, batch=1, seed=1)
    calibrate(model, [Batch(inputs=calib, labels=torch.zeros(1))], recipe)
    executor = build_int_executor(model.eval(), export_int_model(model))
    inputs = zoo.example_inputs(name, batch=batch, seed=2)
    shape = {k: tuple(v.shape) for k, v in inputs.items()}
    with torch.no_grad():
        best, median = best_seconds(lambda: executor(**inputs), repeats)
        cpu = cpu_seconds(lambda: executor(**inputs))
        fq_best, _ = best_seconds(lambda: model(**inputs), repeats)
    print(f"  {name:<16} {str(shape):<36} {best:>8.3f} s {median:>8.3f} s {cpu:>8.3f} s "
          f"{batch / best:>9.2f}/s   fake-quant torch {fq_best:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated zoo models")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1, help="inputs per forward")
    args = parser.parse_args()
    bench_gemm(args.repeats)
    models = [m for m in args.models.split(",") if m]
    if models:
        print(f"\nInteger inference (W4A4 + 2:4, batch {args.batch}), best of "
              f"{max(1, args.repeats // 2)}")
        print(f"  {'model':<16} {'input':<36} {'best':>10} {'median':>10} {'CPU':>10} "
              f"{'inputs/s':>11}")
    for name in models:
        try:
            bench_model(name, max(1, args.repeats // 2), args.batch)
        except AccelsimError as exc:  # e.g. a family the compression recipe cannot apply to yet
            print(f"  {name:<16} skipped: {exc}")
    if "vit_b16" in models:
        print("  goal: vit_b16, one 224x224 image in < 5 s on 2 cores")


if __name__ == "__main__":
    main()
