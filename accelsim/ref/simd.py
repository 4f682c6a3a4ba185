"""Register-blocked integer dot products, written as LLVM vector IR for numba.

numba's loop vectorizer turns one dot product (``s += int32(a[k]) * int32(b[k])`` over int16
operands) into multiply-add-pairs instructions, but refuses several reductions in one loop, which
is what register blocking needs: each operand row loaded once per step and used against
several rows of the other operand. :func:`dot_block` emits that loop directly: ``rows x cols``
accumulators of ``LANES`` int32 lanes, one vector load per operand row per step.

The IR is target-independent (plain ``sext``/``mul``/``add`` and constant shuffles; no
x86 intrinsics). With int16 activations (and int8 weights, which sign-extend to int16) the
products of a 32-element step are summed pairwise into 16 int32 lanes (even + odd elements), the
pattern LLVM's x86 backend selects as ``vpdpwssd`` (AVX-512 VNNI) or ``vpmaddwd`` + ``vpaddd``
(AVX2/AVX-512BW); other targets get the plain operations. Weights stay int8 in memory: a GEMV
(one row of activations) is bound by the bytes of weights it streams. Integer addition is
associative, so any lane order gives the exact sum, provided no partial sum overflows int32: the
callers check ``accumulator_bound`` (which bounds every partial sum) before they run, and a pair
of int16 x int8 products is at most 2 * 32767 * 128 < 2^31.

numba's on-disk cache (``cache=True``) keys a kernel on the file that defines it, not on this
one: after changing the IR emitted here, delete ``accelsim/ref/__pycache__/*.nb[ic]``.
"""

from __future__ import annotations

import functools

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16  # int32 accumulator lanes per vector (512 bits)
# Block shapes (rows of x, rows of w). 4 x 4: 16 accumulators and 8 operand vectors fit 32
# vector registers, each load feeds 4 products. 1 x 8 for one or a few rows of x (GEMV), where
# 4 x 4 would spend 3/4 of its products on padding rows.
BLOCK = (4, 4)
NARROW_BLOCK = (1, 8)
# Reduction elements per vector step with int16 activations (pairs per int32 lane); int32
# activations step LANES at a time, so a K padded to a multiple of K_STEP serves both.
K_STEP = 2 * LANES


def _pairwise(builder: ir.IRBuilder, product: ir.Value) -> ir.Value:
    """``[p0 + p1, p2 + p3, ...]``: 2 * LANES int32 products summed in adjacent pairs."""
    i32 = ir.IntType(32)
    even = ir.Constant(ir.VectorType(i32, LANES), [2 * lane for lane in range(LANES)])
    odd = ir.Constant(ir.VectorType(i32, LANES), [2 * lane + 1 for lane in range(LANES)])
    return builder.add(builder.shuffle_vector(product, product, even),
                       builder.shuffle_vector(product, product, odd))


def _accumulate(builder: ir.IRBuilder, start: ir.Value, stop: ir.Value, step: int,
                initial: list[ir.Value], body) -> list[ir.Value]:
    """Emit ``for i in range(start, stop, step): accs = body(i, accs)`` (the loop runs while
    ``i < stop``, none if ``start >= stop``) and return the accumulators after it."""
    i64 = ir.IntType(64)
    entry = builder.block
    loop = builder.append_basic_block("acc.loop")
    done = builder.append_basic_block("acc.done")
    builder.cbranch(builder.icmp_signed("<", start, stop), loop, done)

    builder.position_at_end(loop)
    counter = builder.phi(i64)
    counter.add_incoming(start, entry)
    accs = [builder.phi(value.type) for value in initial]
    for acc, value in zip(accs, initial, strict=True):
        acc.add_incoming(value, entry)
    updated = body(counter, accs)
    following = builder.add(counter, ir.Constant(i64, step))
    latch = builder.block
    counter.add_incoming(following, latch)
    for acc, value in zip(accs, updated, strict=True):
        acc.add_incoming(value, latch)
    builder.cbranch(builder.icmp_signed("<", following, stop), loop, done)

    builder.position_at_end(done)
    finals = [builder.phi(value.type) for value in initial]
    for final, value, new in zip(finals, initial, updated, strict=True):
        final.add_incoming(value, entry)
        final.add_incoming(new, latch)
    return finals


@intrinsic
def dot_block(typingctx, x, w, m0, n0, sums, rows, cols):  # pragma: no cover - compiled
    """``sums[i * cols + j] = sum_k x[m0 + i, k] * w[n0 + j, k]`` (int32) for the ``rows x
    cols`` block at ``(m0, n0)``; ``rows`` and ``cols`` are compile-time constants.

    ``x``: int16 or int32, ``w``: int8; both C-contiguous 2-D with the same number of columns, a
    multiple of ``K_STEP``; rows ``m0..m0+rows-1`` of ``x`` and
    ``n0..n0+cols-1`` of ``w`` must exist. ``sums``: int32, at least ``rows * cols`` elements.
    """
    if not (isinstance(x, types.Array) and isinstance(w, types.Array)
            and x.ndim == w.ndim == 2 and x.layout == w.layout == "C"
            and x.dtype in (types.int16, types.int32) and w.dtype == types.int8
            and isinstance(sums, types.Array) and sums.dtype == types.int32
            and isinstance(rows, types.IntegerLiteral) and isinstance(cols, types.IntegerLiteral)):
        return None
    pairs = x.dtype == types.int16
    step = K_STEP if pairs else LANES
    n_rows, n_cols = rows.literal_value, cols.literal_value
    blocks = n_rows * n_cols

    def codegen(context, builder, signature, args):
        x_arr = context.make_array(signature.args[0])(context, builder, args[0])
        w_arr = context.make_array(signature.args[1])(context, builder, args[1])
        sums_arr = context.make_array(signature.args[4])(context, builder, args[4])
        i64, i32 = ir.IntType(64), ir.IntType(32)
        m0v = context.cast(builder, args[2], signature.args[2], types.int64)
        n0v = context.cast(builder, args[3], signature.args[3], types.int64)
        k_size = builder.extract_value(x_arr.shape, 1)
        wide = ir.VectorType(i32, step)
        acc_type = ir.VectorType(i32, LANES)

        def row_start(array, first, offset):
            row = builder.add(first, ir.Constant(i64, offset))
            return builder.gep(array.data, [builder.mul(row, k_size)])

        x_rows = [row_start(x_arr, m0v, i) for i in range(n_rows)]
        w_rows = [row_start(w_arr, n0v, j) for j in range(n_cols)]

        def step_body(k, accs):
            def load(row, bits):
                vector = ir.VectorType(ir.IntType(bits), step)
                pointer = builder.bitcast(builder.gep(row, [k]), vector.as_pointer())
                value = builder.load(pointer, align=bits // 8)
                return value if bits == 32 else builder.sext(value, wide)

            xs = [load(row, 16 if pairs else 32) for row in x_rows]
            ws = [load(row, 8) for row in w_rows]
            updated = []
            for i in range(n_rows):
                for j in range(n_cols):
                    product = builder.mul(xs[i], ws[j])
                    updated.append(builder.add(accs[i * n_cols + j],
                                               _pairwise(builder, product) if pairs else product))
            return updated

        finals = _accumulate(builder, ir.Constant(i64, 0), k_size, step,
                             [ir.Constant(acc_type, None)] * blocks, step_body)
        reduce_add = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32, [acc_type]), f"llvm.vector.reduce.add.v{LANES}i32")
        for index, final in enumerate(finals):
            builder.store(builder.call(reduce_add, [final]),
                          builder.gep(sums_arr.data, [ir.Constant(i64, index)]))
        return context.get_dummy_value()

    return types.none(x, w, m0, n0, sums, rows, cols), codegen


# ---------------------------------------------------------------------------------------------
# The 2:4 mux as a byte shuffle
# ---------------------------------------------------------------------------------------------
#
# A 2:4 output n keeps 2 of the 4 activations of each group g: the pair (x[4g + i0], x[4g + i1])
# picked by its two 2-bit indices. Vectorized along N (LANES outputs per vector), the 4
# activations of group g of one row of x are the same for every output: broadcast as one 64-bit
# word to every 128-bit lane, a byte shuffle (``vpshufb``: an in-lane table lookup) driven by the
# outputs' indices (decoded once per layer into shuffle controls) picks each output's pair, and
# one multiply-add-pairs against the outputs' kept (v0, v1) gives x[i0] * v0 + x[i1] * v1 per
# output. The shuffle is the 4:1 mux; the weights are never expanded. Loads of the controls and
# values serve MUX_BLOCK[0] rows of x, the broadcast of one row's group serves MUX_BLOCK[1]
# vectors of outputs.
#
# A variable byte shuffle has no target-independent IR, so this needs AVX-512BW
# (``llvm.x86.avx512.pshuf.b.512``); :func:`mux_supported` says whether numba targets it, and
# elsewhere the kernels take their portable 2:4 path.

MUX_BLOCK = (4, 4)  # (rows of x, vectors of LANES outputs): 16 accumulators
MUX_NARROW_BLOCK = (1, 4)  # one or a few rows (GEMV)


@functools.cache
def mux_supported() -> bool:
    """Whether the CPU numba compiles for has AVX-512BW (numba's ``NUMBA_CPU_FEATURES`` when
    set, else the host's). Asked once per process: every 2:4 layer's preparation asks."""
    from numba.core import config

    features = config.CPU_FEATURES
    if features is None:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    return "+avx512bw" in features.split(",")


@intrinsic
def mux_block(typingctx, table, controls, values, m0, n0, out, g0, g1, rows, vectors
              ):  # pragma: no cover - compiled
    """``out[m0 + i, n0 + LANES * c + t] += sum_{g0 <= g < g1} x[i, 4g + i0] * v0 + x[i, 4g + i1]
    * v1`` (output ``n = n0 + LANES * c + t``'s pair) for ``i < rows``, ``c < vectors``
    (compile-time constants).

    ``table``: int64 ``[M padded, K/4]``, the 4 int16 activations of each group (the int16
    ``[M, K]`` activations viewed as int64); ``controls``: uint8 ``[K/4, N padded * 4]``, per
    group and output the shuffle bytes of its pair (``2 i0, 2 i0 + 1, 2 i1, 2 i1 + 1``);
    ``values``: int16 ``[K/4, N padded * 2]``, per group and output its (v0, v1); ``out``: int32
    ``[M padded, N padded]``. The rows and outputs of the block must exist.
    """
    if not (isinstance(table, types.Array) and table.dtype == types.int64
            and isinstance(controls, types.Array) and controls.dtype == types.uint8
            and isinstance(values, types.Array) and values.dtype == types.int16
            and isinstance(out, types.Array) and out.dtype == types.int32
            and all(a.ndim == 2 and a.layout == "C" for a in (table, controls, values, out))
            and isinstance(rows, types.IntegerLiteral)
            and isinstance(vectors, types.IntegerLiteral)):
        return None
    n_rows, n_vectors = rows.literal_value, vectors.literal_value

    def codegen(context, builder, signature, args):
        arrays = [context.make_array(signature.args[i])(context, builder, args[i])
                  for i in (0, 1, 2, 5)]
        table_arr, controls_arr, values_arr, out_arr = arrays
        i64, i32, i16, i8 = (ir.IntType(bits) for bits in (64, 32, 16, 8))
        m0v, n0v, g0v, g1v = (context.cast(builder, args[i], signature.args[i], types.int64)
                              for i in (3, 4, 6, 7))
        groups = builder.extract_value(table_arr.shape, 1)
        controls_row = builder.extract_value(controls_arr.shape, 1)
        values_row = builder.extract_value(values_arr.shape, 1)
        out_row = builder.extract_value(out_arr.shape, 1)
        bytes_type = ir.VectorType(i8, 4 * LANES)
        words_type = ir.VectorType(i16, 2 * LANES)
        wide = ir.VectorType(i32, 2 * LANES)
        acc_type = ir.VectorType(i32, LANES)
        qwords = ir.VectorType(i64, LANES // 2)
        splat_first = ir.Constant(ir.VectorType(i32, LANES // 2), [0] * (LANES // 2))
        shuffle = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(bytes_type, [bytes_type, bytes_type]),
            "llvm.x86.avx512.pshuf.b.512")

        def const(value):
            return ir.Constant(i64, value)

        def vector_at(array, vector_type, offset):
            return builder.bitcast(builder.gep(array.data, [offset]), vector_type.as_pointer())

        def out_pointer(i, c):
            row = builder.add(m0v, const(i))
            column = builder.add(n0v, const(LANES * c))
            return vector_at(out_arr, acc_type, builder.add(builder.mul(row, out_row), column))

        starts = [builder.load(out_pointer(i, c), align=4)
                  for i in range(n_rows) for c in range(n_vectors)]
        table_rows = [builder.gep(table_arr.data, [builder.mul(builder.add(m0v, const(i)), groups)])
                      for i in range(n_rows)]

        def group_body(g, accs):
            picks, kept = [], []
            for c in range(n_vectors):
                first = builder.add(n0v, const(LANES * c))
                picks.append(builder.load(vector_at(controls_arr, bytes_type, builder.add(
                    builder.mul(g, controls_row), builder.mul(first, const(4)))), align=1))
                kept.append(builder.sext(builder.load(vector_at(
                    values_arr, words_type,
                    builder.add(builder.mul(g, values_row), builder.mul(first, const(2)))),
                    align=2), wide))
            updated = []
            for i in range(n_rows):
                group = builder.load(builder.gep(table_rows[i], [g]), align=8)
                broadcast = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(qwords, None), group, ir.Constant(i32, 0)),
                    ir.Constant(qwords, None), splat_first)
                group_bytes = builder.bitcast(broadcast, bytes_type)
                for c in range(n_vectors):
                    pairs = builder.bitcast(builder.call(shuffle, [group_bytes, picks[c]]),
                                            words_type)
                    product = builder.mul(builder.sext(pairs, wide), kept[c])
                    updated.append(builder.add(accs[i * n_vectors + c],
                                               _pairwise(builder, product)))
            return updated

        finals = _accumulate(builder, g0v, g1v, 1, starts, group_body)
        for i in range(n_rows):
            for c in range(n_vectors):
                builder.store(finals[i * n_vectors + c], out_pointer(i, c), align=4)
        return context.get_dummy_value()

    return types.none(table, controls, values, m0, n0, out, g0, g1, rows, vectors), codegen
