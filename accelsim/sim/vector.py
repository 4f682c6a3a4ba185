"""Vector-unit timing: element-wise and row-wise ops (softmax, LayerNorm, GELU, add, ...).

``cycles = ceil(elements x count x cycles_per_element[op] / lanes)``. The vector unit does not
overlap with the systolic array: in a transformer at small batch each of these ops consumes the
whole output of the GEMM before it (softmax and LayerNorm need complete rows, the next GEMM needs
their result), so they sit on the critical path between GEMMs. Whether their operands are on chip
or re-load from DRAM is the graph plan's decision (``sim.plan``).
"""

from __future__ import annotations

import math

from accelsim.graph.ir import VectorNode
from accelsim.hw import HwConfig


def lane_cycles(node: VectorNode, hw: HwConfig) -> float:
    """Lane-cycles of work (elements x cycles per element); energy is charged per lane-cycle."""
    per_element: float = getattr(hw.vector_unit.cycles_per_element, node.vector_op)
    return node.total_elements * per_element


def vector_cycles(node: VectorNode, hw: HwConfig) -> int:
    return math.ceil(lane_cycles(node, hw) / hw.vector_unit.lanes)


def operand_count(node: VectorNode) -> int:
    """Input tensors read per output element (binary element-wise ops read two)."""
    return 2 if node.vector_op in ("add", "mul") else 1
