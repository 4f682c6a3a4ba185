"""How a compressed module tells the tracer its operand precision.

Compression attaches a :class:`GemmPrecision` to modules; the tracer (``accelsim.graph.trace``)
reads it from the innermost module on a GEMM node's module stack:

* ``module.accelsim_precision``: a linear or conv layer. ``sparsity`` comes from the layer's
  real mask ("2:4" only when every group of 4 along the reduction holds >= 2 zeros).
* ``module.accelsim_attention_precision``: an attention module whose two matmuls (QK^T, PV)
  quantize both operands to ``act_bits`` (``weight_bits`` equals ``act_bits``; always dense).

Modules without either attribute are uncompressed: the tracer leaves bit widths as ``None``
(the hardware default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LINEAR_ATTR = "accelsim_precision"
ATTENTION_ATTR = "accelsim_attention_precision"


@dataclass(frozen=True)
class GemmPrecision:
    weight_bits: int
    act_bits: int
    sparsity: Literal["dense", "2:4"] = "dense"
    weight_density: float = 1.0
