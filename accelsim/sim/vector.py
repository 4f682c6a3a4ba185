"""Vector-unit timing: element-wise and row-wise ops (softmax, LayerNorm, GELU, add, ...).

``cycles = ceil(elements x count x cycles_per_element[op] / lanes)``. The vector unit does not
overlap with the systolic array: in a transformer at small batch each of these ops consumes the
whole output of the GEMM before it (softmax and LayerNorm need complete rows, the next GEMM needs
their result), so they sit on the critical path between GEMMs. Whether their operands are on chip
or re-load from DRAM is the graph plan's decision (``sim.plan``).
"""

from __future__ import annotations

import math

from accelsim.formats import (
    GELU_TABLE_EXTRA_LANE_CYCLES,
    GELU_TABLE_READ_WORDS,
    GELU_TABLE_WORD_BITS,
)
from accelsim.graph.ir import VectorNode
from accelsim.hw import HwConfig


def lane_cycles(node: VectorNode, hw: HwConfig) -> float:
    """Lane-cycles of work (elements x cycles per element); energy is charged per lane-cycle.
    A GELU on the ``int`` format's table takes ``GELU_TABLE_EXTRA_LANE_CYCLES`` more."""
    per_element: float = getattr(hw.vector_unit.cycles_per_element, node.vector_op)
    if uses_gelu_table(node, hw):
        per_element += GELU_TABLE_EXTRA_LANE_CYCLES
    return node.total_elements * per_element


def uses_gelu_table(node: VectorNode, hw: HwConfig) -> bool:
    return node.vector_op == "gelu" and hw.vector_unit.gelu_table_segments > 0


def table_read_bytes(node: VectorNode, hw: HwConfig) -> float:
    """Bytes read from the lanes' GELU tables: two words per element on the table GELU."""
    if not uses_gelu_table(node, hw):
        return 0.0
    return node.total_elements * GELU_TABLE_READ_WORDS * GELU_TABLE_WORD_BITS / 8


def vector_cycles(node: VectorNode, hw: HwConfig) -> int:
    return math.ceil(lane_cycles(node, hw) / hw.vector_unit.lanes)


def operand_count(node: VectorNode) -> int:
    """Input tensors read per output element (binary element-wise ops read two)."""
    return 2 if node.vector_op in ("add", "mul") else 1
