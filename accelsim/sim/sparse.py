"""2:4 structured sparsity on the weight operand: when it skips, what it stores, what it moves.

On hardware with ``sparsity.support: "2:4"`` a GEMM whose weight (B) operand is 2:4 sparse along
K runs half the reduction steps: each PE holds a kept weight plus its 2-bit index, and a 4:1 mux
driven by the index picks the matching activation out of its group of four. The compressed weight
is stored and moved as the kept values plus one 2-bit index per kept value, so for 4-bit weights
a group of four costs 2 x 4 + 2 x 2 = 12 bits (0.75x of dense), not 8.

On dense hardware the same weights run dense (stored uncompressed; zero gating may save MAC
energy, never time). Attention's activation x activation GEMMs are always dense.
"""

from __future__ import annotations

from accelsim.formats import INDEX_BITS, SPARSE_24, SPARSE_GROUP, SPARSE_KEPT
from accelsim.graph.ir import GemmNode
from accelsim.hw import HwConfig


def skips(node: GemmNode, hw: HwConfig) -> bool:
    """True when the GEMM runs on the 2:4 skipping datapath (halved reduction)."""
    return (
        hw.sparsity.support == SPARSE_24
        and node.sparsity == SPARSE_24
        and not node.weight_is_activation
    )


def reduction_steps(k: int, skipping: bool) -> int:
    """Reduction length the array iterates over: k/2 kept values per output when skipping."""
    return k * SPARSE_KEPT // SPARSE_GROUP if skipping else k


def weight_bits_per_element(weight_bits: int, skipping: bool) -> float:
    """Stored bits per dense weight position (values plus index when compressed)."""
    if not skipping:
        return float(weight_bits)
    return (weight_bits + INDEX_BITS) * SPARSE_KEPT / SPARSE_GROUP


def executed_fraction(node: GemmNode, skipping: bool, zero_gating: bool) -> tuple[float, float]:
    """(fraction of dense MACs issued to a PE, fraction of dense MACs that are gated).

    Skipping issues half the MACs. Zero gating then gates the issued MACs whose weight is zero:
    the measured ``weight_density`` says how many non-zeros remain (2:4 keeps at most half).
    """
    issued = SPARSE_KEPT / SPARSE_GROUP if skipping else 1.0
    if not zero_gating:
        return issued, 0.0
    nonzero = min(issued, node.weight_density)
    return issued, issued - nonzero
