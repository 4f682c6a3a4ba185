"""Map one GEMM onto a rows x cols systolic array: folds and stall-free compute cycles.

Convention: ``out[M, N] = A[M, K] @ B[K, N]``; ``A`` is the activation (ifmap) operand and ``B``
the weight (filter) operand. Each dataflow keeps one matrix resident in the PEs and streams the
other through the array; it picks which GEMM dimensions are laid out on the array rows (``Sr``),
on the array columns (``Sc``) and over time (``T``), following SCALE-Sim's operand matrices:

========  =====  =====  =====  ====================================================
dataflow  Sr     Sc     T      resident in the PEs
========  =====  =====  =====  ====================================================
``os``    M      N      K      the outputs (accumulators); A and B both stream
``ws``    K      N      M      a K x N tile of B (weights); A streams from the left
``is``    K      M      N      a K x M tile of A^T (inputs); B streams from the left
========  =====  =====  =====  ====================================================

The operand tile is cut into ``row_folds = ceil(Sr / rows)`` x ``col_folds = ceil(Sc / cols)``
folds, visited column group by column group (the column fold is the outer loop, as in
SCALE-Sim). Two timing models:

* ``scalesim_compat=True`` reproduces SCALE-Sim 3.0.0's stall-free ("CALC" mode) "Total Cycles"
  exactly: folds run back to back without overlap, each costing ``T + rows + cols - 2`` (OS) or
  ``T + 2*rows + cols - 2`` (WS, IS), and the reported number is one less than the sum (it is the
  0-based index of the last cycle).
* ``pipelined=False`` is the array without shadow registers: each fold loads, streams and drains
  before the next starts, ``T + rows + cols - 2`` (OS) or ``T + 2*rows + cols - 2`` (WS, IS)
  cycles per fold, as SCALE-Sim counts them (without its final ``- 1``), ``count`` x one
  instance.
* the default model pipelines folds: the next fold's operands enter as soon as the current fold's
  have, WS/IS write the next stationary tile into double-buffered PE registers (one row per cycle
  per column) while the current fold computes, and OS reads finished sums out over per-column
  result buses while the next fold accumulates. Fill and drain are paid once, by whichever fold
  finishes last.

``count`` instances of the same GEMM (attention heads, conv groups, bit-serial passes) run back to
back: the array sees one instance's fold sequence repeated ``count`` times, and the default model
pipelines it like any other fold sequence, so fill and drain are paid once for all of them. In
compat mode each instance is a separate SCALE-Sim layer: ``count`` x the single-instance cycles.

docs/dataflows.md derives both with worked examples; tests/sim/test_mapping.py clocks the default
model's microarchitecture register by register and checks that every wait in it is needed. Pure
integer arithmetic on purpose: a design sweep calls this thousands of times per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from accelsim.errors import AccelsimError
from accelsim.formats import DATAFLOWS

Dataflow = Literal["os", "ws", "is"]


@dataclass(frozen=True)
class GemmMapping:
    """How ``count`` back-to-back instances of one GEMM run on the array.

    Attributes
    ----------
    dataflow: ``os``, ``ws`` or ``is``.
    row_folds, col_folds: how many array-sized tiles one instance's operand is cut into along the
        array rows and columns (see the module docstring for which GEMM dimension lies on which
        axis).
    count: how many instances of the GEMM run back to back.
    compute_cycles: stall-free cycles for all ``count`` instances, fill and drain included.
    mapped_utilization: useful MACs of all instances / (rows * cols * compute_cycles).
    """

    dataflow: str
    row_folds: int
    col_folds: int
    count: int
    compute_cycles: int
    mapped_utilization: float


def map_gemm(
    m: int,
    k: int,
    n: int,
    rows: int,
    cols: int,
    dataflow: str,
    *,
    count: int = 1,
    scalesim_compat: bool = False,
    pipelined: bool = True,
) -> GemmMapping:
    """Fold ``count`` independent ``M x K`` by ``K x N`` GEMMs onto a ``rows x cols`` array.

    The instances run one after another under ``dataflow``, each cut into the same folds.
    ``scalesim_compat=True`` returns SCALE-Sim 3.0.0's stall-free compute cycles (``count`` x one
    instance's); the default is accelsim's pipelined model (never more than one cycle per instance
    slower, see docs/dataflows.md); ``pipelined=False`` serializes the folds (the array without
    shadow registers; ``scalesim_compat`` takes precedence). Raises :class:`AccelsimError` for
    an unknown dataflow or a size or count that is not an integer >= 1.
    """
    for name, value in (("m", m), ("k", k), ("n", n), ("rows", rows), ("cols", cols),
                        ("count", count)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise AccelsimError(f"map_gemm: {name}={value!r} must be an integer >= 1")
    if dataflow not in DATAFLOWS:
        raise AccelsimError(
            f"map_gemm: dataflow={dataflow!r} is not one of {', '.join(DATAFLOWS)}"
        )
    return _map_cached(m, k, n, rows, cols, dataflow, count, bool(scalesim_compat),
                       bool(pipelined))


@lru_cache(maxsize=1 << 16)
def _map_cached(
    m: int, k: int, n: int, rows: int, cols: int, dataflow: str, count: int,
    scalesim_compat: bool, pipelined: bool,
) -> GemmMapping:
    # Sweeps revisit the same (shape, array) pairs across layers and design points; the result
    # is an immutable value, so sharing it is safe.
    if dataflow == "os":
        spatial_rows, spatial_cols, temporal = m, n, k
    elif dataflow == "ws":
        spatial_rows, spatial_cols, temporal = k, n, m
    else:
        spatial_rows, spatial_cols, temporal = k, m, n
    row_folds = -(-spatial_rows // rows)
    col_folds = -(-spatial_cols // cols)
    if scalesim_compat:
        cycles = count * _scalesim_cycles(row_folds * col_folds, temporal, rows, cols, dataflow)
    elif not pipelined:
        cycles = count * (_scalesim_cycles(row_folds * col_folds, temporal, rows, cols,
                                           dataflow) + 1)
    elif dataflow == "os":
        cycles = _pipelined_os_cycles(spatial_rows, spatial_cols, temporal, rows, cols, count)
    else:
        cycles = _pipelined_stationary_cycles(
            spatial_rows, spatial_cols, temporal, rows, cols, count)
    macs = count * m * k * n
    # SCALE-Sim's count is one short of the cycles it simulates, so on a 1x1 array its compat
    # number can fall below the MAC count (even to 0); utilization is a fraction, so cap it.
    utilization = 1.0 if cycles * rows * cols <= macs else macs / (rows * cols * cycles)
    return GemmMapping(dataflow, row_folds, col_folds, count, cycles, utilization)


def _scalesim_cycles(folds: int, temporal: int, rows: int, cols: int, dataflow: str) -> int:
    """SCALE-Sim 3.0.0 CALC-mode "Total Cycles" (compute/systolic_compute_{os,ws,is}.py).

    Per fold its demand matrices hold: OS ``T`` operand lines + ``cols - 1`` drain lines, skewed
    over ``rows`` (+ ``rows - 1``); WS ``rows`` weight-load lines + ``T`` + ``cols - 1``, skewed
    (+ ``rows - 1``); IS ``rows`` load lines + a ``rows + cols + T - 2`` suffix. The memory model
    reports the serviced cycle of the last ofmap line, a 0-based index, hence the ``- 1``.
    """
    weight_load_cycles = 0 if dataflow == "os" else rows
    return folds * (weight_load_cycles + temporal + rows + cols - 2) - 1


def _pipelined_os_cycles(
    spatial_rows: int, spatial_cols: int, temporal: int, rows: int, cols: int, count: int
) -> int:
    """Output stationary with folds pipelined, over ``count`` instances' folds in a row.

    A fold on ``r x c`` PEs streams ``T`` operand pairs; the next fold's operands follow
    immediately, each PE starting a fresh sum as the finished one is read onto its column's
    result bus. A column emits its ``r`` finished sums on consecutive cycles, so a fold occupies
    ``max(T, r)`` cycles of the pipeline. Fold ``f`` started at ``s_f`` finishes its last MAC in
    PE ``(r-1, c-1)`` at cycle ``s_f + T + r + c - 2`` (count); the run ends when the latest fold
    ends. The next instance's first fold follows the previous instance's last like any other.
    """
    row_folds = -(-spatial_rows // rows)
    col_folds = -(-spatial_cols // cols)
    last_rows = spatial_rows - (row_folds - 1) * rows
    last_cols = spatial_cols - (col_folds - 1) * cols
    full_interval = max(temporal, rows)
    group_cycles = (row_folds - 1) * full_interval + max(temporal, last_rows)
    return max(
        _os_group_end(g * group_cycles, c, row_folds, full_interval, temporal, rows, last_rows)
        for g, c in _last_column_groups(col_folds, count, cols, last_cols)
    )


def _os_group_end(
    start: int,
    group_cols: int,
    row_folds: int,
    full_interval: int,
    temporal: int,
    rows: int,
    last_rows: int,
) -> int:
    """Latest finish among one column group's folds (its last full-height fold or its last)."""
    last_end = start + (row_folds - 1) * full_interval + temporal + last_rows + group_cols - 2
    if row_folds == 1:
        return last_end
    full_end = start + (row_folds - 2) * full_interval + temporal + rows + group_cols - 2
    return max(full_end, last_end)


def _pipelined_stationary_cycles(
    spatial_rows: int, spatial_cols: int, temporal: int, rows: int, cols: int, count: int
) -> int:
    """Weight or input stationary with double-buffered PE operand registers, over ``count``
    instances' folds in a row (each instance has its own stationary tiles).

    Each array column has a write port into its PEs' shadow registers, one row per cycle. Tile
    ``f + 1`` is written while fold ``f`` streams, row ``i`` in the cycle PE ``(i, j)`` switches
    to tile ``f`` (the write wave trails the data wave), so fold ``f + 1`` may start ``T`` cycles
    after fold ``f``, and tile ``f + 2``'s write wave (starting with fold ``f + 1``) must find
    the port free: ``s_{f+1} - s_f >= r_{f+1}`` whenever a fold ``f + 2`` exists. Tile 1 is
    written before fold 1 streams, taking ``r_1`` cycles if a second wave must follow it and 1
    otherwise. Partial sums cross all ``rows`` physical rows to the bottom edge, so fold ``f``
    delivers its last output at ``s_f + T + rows + c - 2``; within a column group every fold
    drains alike, so only each group's last fold can end the run.
    """
    row_folds = -(-spatial_rows // rows)
    col_folds = -(-spatial_cols // cols)
    last_rows = spatial_rows - (row_folds - 1) * rows
    last_cols = spatial_cols - (col_folds - 1) * cols
    groups = count * col_folds
    if groups * row_folds == 1:
        return 1 + temporal + rows + last_cols - 2
    first_rows = rows if row_folds > 1 else last_rows
    # Folds cycle through tile heights rows, ..., rows, last_rows in every column group; a fold
    # waits max(T, next tile's rows), except the step into the very last fold, which waits T.
    group_cycles = (row_folds - 1) * max(temporal, rows) + max(temporal, last_rows)
    # Group g's last fold starts after tile 1's write and the waits into folds 2 .. its own:
    # g + 1 groups' worth less fold 1's, less the shorter step into the run's very last fold.
    last_step_saving = max(temporal, last_rows) - temporal
    return max(
        first_rows + (g + 1) * group_cycles - max(temporal, first_rows)
        - (last_step_saving if g == groups - 1 else 0) + temporal + rows + c - 2
        for g, c in _last_column_groups(col_folds, count, cols, last_cols)
    )


def _last_column_groups(
    col_folds: int, count: int, cols: int, last_cols: int
) -> tuple[tuple[int, int], ...]:
    """(group index, used columns) of the column groups that can finish last.

    The run visits ``count`` instances' ``col_folds`` column groups in a row; every instance
    ends with its narrowest group. Full-width groups differ only by start time, so the last of
    them dominates the others; the final (possibly narrower) group starts later but may drain
    sooner. With one group per instance all groups are alike and the final one ends last.
    """
    groups = count * col_folds
    if col_folds == 1:
        return ((groups - 1, last_cols),)
    return ((groups - 2, cols), (groups - 1, last_cols))
