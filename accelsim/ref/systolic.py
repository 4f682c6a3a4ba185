"""Functional view of the simulator's datapath: a GEMM run fold by fold on an R x C PE array.

The simulator (``accelsim.sim``) only counts cycles; this module computes the integers the same
schedule produces, so a test can show that the mapping, the 2:4 compressed layout and the index
muxes give exactly the int32 outputs of the reference kernels. Data skew (the diagonal wavefront)
changes when a MAC happens, never which operands it sees, so each reduction step is applied to the
whole PE grid (or a whole streamed operand) at once.

Mappings follow ``accelsim.sim.mapping`` (SCALE-Sim's operand matrices) for
``acc[M, N] = A[M, K] x W[K, N]``, where the reduction ``S`` is K (dense) or the K/2 kept slots
of a 2:4 weight (``accelsim.sim.sparse.reduction_steps``):

========  ==============  =================  ========  ==================================
dataflow  array rows      array columns      time      resident in the PEs
========  ==============  =================  ========  ==================================
``os``    M               N                  S         int32 accumulators
``ws``    S               N                  M         weights (kept value + 2-bit index)
``is``    S               M                  N         activations (the group of 4 for 2:4)
========  ==============  =================  ========  ==================================

Folds are visited column fold outer, row fold inner, as in the simulator. With 2:4 weights every
PE that multiplies kept slot ``s`` sees the 4 activations of group ``s // 2`` and its 4:1 mux,
driven by the slot's index, picks one; WS and IS accumulate partial sums across row folds in the
int32 output buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from accelsim.errors import AccelsimError
from accelsim.formats import DATAFLOWS, SPARSE_GROUP, SPARSE_KEPT
from accelsim.ref.codes import check_accumulator_bound, max_abs_shifted

Dataflow = Literal["os", "ws", "is"]


@dataclass(frozen=True)
class SystolicRun:
    """Outputs of a fold-by-fold run and the schedule that produced them.

    ``folds``: ((row start, rows used), (column start, columns used)) of each fold in execution
    order, in the dataflow's array coordinates (see the module table). ``row_folds`` and
    ``col_folds`` are what ``accelsim.sim.mapping.map_gemm`` reports for the same GEMM.
    ``mac_steps``: streamed time steps summed over folds; ``mux_selections``: index-mux uses
    (2:4 only, one per issued MAC).
    """

    out: np.ndarray
    dataflow: str
    row_folds: int
    col_folds: int
    folds: tuple[tuple[tuple[int, int], tuple[int, int]], ...]
    mac_steps: int
    mux_selections: int


def _mux4(group: np.ndarray, index: np.ndarray) -> np.ndarray:
    """4:1 mux per PE: ``group[..., 4]`` activations, ``index`` selects one (broadcast shapes)."""
    return np.take_along_axis(group, index[..., None].astype(np.intp), axis=-1)[..., 0]


def run_systolic(
    a_codes: np.ndarray,
    a_zero_point: int,
    rows: int,
    cols: int,
    dataflow: str,
    *,
    w_codes: np.ndarray | None = None,
    sparse_values: np.ndarray | None = None,
    sparse_indices: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> SystolicRun:
    """Run ``acc = (A - zp) @ W^T + bias`` tile by tile on a ``rows x cols`` array.

    Give either dense ``w_codes`` int8 ``[N, K]`` or the 2:4 form ``sparse_values`` int8 +
    ``sparse_indices`` uint8 ``[N, K/2]`` (kept slots, positions 0..3 in their group of 4).
    """
    if dataflow not in DATAFLOWS:
        raise AccelsimError(
            f"systolic.dataflow={dataflow!r} is not one of {', '.join(DATAFLOWS)}"
        )
    for name, value in (("rows", rows), ("cols", cols)):
        if not isinstance(value, int) or value < 1:
            raise AccelsimError(f"systolic.{name}={value!r} must be an integer >= 1")
    sparse = sparse_values is not None
    if sparse == (w_codes is not None) or sparse != (sparse_indices is not None):
        raise AccelsimError(
            "run_systolic: give either w_codes or both sparse_values and sparse_indices"
        )
    m, k = a_codes.shape
    x = a_codes.astype(np.int32) - np.int32(a_zero_point)
    if sparse:
        values, indices = sparse_values, sparse_indices
        if values.shape != indices.shape or 2 * values.shape[1] != k:
            raise AccelsimError(
                f"run_systolic: sparse operands {values.shape} do not encode K={k} as [N, K/2]"
            )
        # Stream of kept slots along the reduction: value, index and group (which 4 activations).
        w_stream = values.T.astype(np.int32)  # [K/2, N]
        idx_stream = indices.T  # [K/2, N]
        steps = k // SPARSE_GROUP * SPARSE_KEPT
        groups = x.reshape(m, k // SPARSE_GROUP, SPARSE_GROUP)  # [M, G, 4]
        slot_group = np.arange(steps) // SPARSE_KEPT
    else:
        if w_codes.shape[1] != k:
            raise AccelsimError(
                f"run_systolic: a {a_codes.shape} and w {w_codes.shape} differ in K"
            )
        w_stream = w_codes.T.astype(np.int32)  # [K, N]
        steps = k
    n = w_stream.shape[1]
    bias32 = np.zeros(n, np.int32) if bias is None else bias.astype(np.int32)
    max_w = max_abs_shifted(values if sparse else w_codes)
    check_accumulator_bound(
        "run_systolic", max_abs_shifted(a_codes, a_zero_point), max_w, steps,
        max_abs_shifted(bias32),
    )

    def operand(i0: int, i1: int, s: int, n0: int, n1: int) -> np.ndarray:
        """Activations seen by PEs for output rows i0..i1, reduction step s, columns n0..n1."""
        if not sparse:
            return np.broadcast_to(x[i0:i1, s][:, None], (i1 - i0, n1 - n0))
        group = groups[i0:i1, slot_group[s], :][:, None, :]  # [rows, 1, 4] broadcast to columns
        index = np.broadcast_to(idx_stream[s, n0:n1][None, :], (i1 - i0, n1 - n0))
        return _mux4(np.broadcast_to(group, (i1 - i0, n1 - n0, 4)), index)

    # (array rows, array columns, time) extents of the dataflow; the row axis of ws/is is S.
    spatial_rows, spatial_cols, temporal = {
        "os": (m, n, steps), "ws": (steps, n, m), "is": (steps, m, n)
    }[dataflow]
    out = np.zeros((m, n), dtype=np.int32)
    folds: list[tuple[tuple[int, int], tuple[int, int]]] = []
    for c0 in range(0, spatial_cols, cols):
        c1 = min(spatial_cols, c0 + cols)
        for r0 in range(0, spatial_rows, rows):
            r1 = min(spatial_rows, r0 + rows)
            folds.append(((r0, r1 - r0), (c0, c1 - c0)))
            if dataflow == "os":  # PE (r, c) accumulates output (r0 + r, c0 + c) over all S
                pe_acc = np.zeros((r1 - r0, c1 - c0), dtype=np.int32)
                for s in range(steps):
                    pe_acc += operand(r0, r1, s, c0, c1) * w_stream[s, c0:c1][None, :]
                out[r0:r1, c0:c1] += pe_acc
            elif dataflow == "ws":  # PE (r, c) holds slot r0 + r of column c0 + c; M streams
                partial = np.zeros((m, c1 - c0), dtype=np.int32)
                for r in range(r1 - r0):  # the partial sum moves down the PE rows
                    partial += operand(0, m, r0 + r, c0, c1) * w_stream[r0 + r, c0:c1][None, :]
                out[:, c0:c1] += partial
            else:  # is: PE (r, c) holds activation row c0 + c at slot r0 + r; N streams
                partial = np.zeros((c1 - c0, n), dtype=np.int32)
                for r in range(r1 - r0):
                    partial += operand(c0, c1, r0 + r, 0, n) * w_stream[r0 + r, :][None, :]
                out[c0:c1, :] += partial
    out += bias32[None, :]
    mux = m * n * steps if sparse else 0
    return SystolicRun(
        out=out,
        dataflow=dataflow,
        row_folds=-(-spatial_rows // rows),
        col_folds=-(-spatial_cols // cols),
        folds=tuple(folds),
        mac_steps=len(folds) * temporal,
        mux_selections=mux,
    )
