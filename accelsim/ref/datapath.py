"""The datapath the integer reference executes: accumulator width and overflow, requantization and
the vector unit's number format, read from a hardware config (docs/integer_semantics.md).

:data:`FAKE_QUANT_DATAPATH` is the arithmetic of the fake-quant model's inference forward (int32
accumulators, float32 dequantize-and-requantize, float32 vector ops): ``accelsim verify`` checks
the kernels against that model bit for bit on it. :meth:`Datapath.of_hw` is the chip's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelsim.errors import AccelsimError
from accelsim.formats import DATAPATH_DEFAULTS, INT_VECTOR_KERNELS, datapath_problem
from accelsim.hw import HwConfig


@dataclass(frozen=True)
class Datapath:
    """``accumulator_bits``/``overflow``: every GEMM's exact sum is clipped to this signed width
    after the whole K reduction (§2). ``integer_requant``: a GEMM whose output feeds a quantizer
    directly (the attention operands q, k, v and the attention output) is requantized by an
    integer multiplier and shift with the bias in int32 (§6) instead of through float32.
    ``vector_format``: the format of everything else between GEMMs (§5); ``None`` keeps the
    model's own float32 PyTorch ops, the fake-quant model's arithmetic. ``gelu_table_segments``
    (``int`` format): GELU by a table of that many linear segments instead of I-BERT's polynomial
    (0; :data:`~accelsim.formats.GELU_TABLE_SEGMENTS`). ``residual_scale`` (``int`` format): the
    residual add's output-scale rule (:data:`~accelsim.formats.RESIDUAL_SCALES`). ``exact_kernels``
    (``int`` format only; a study's knob, not a chip's): the integer kernels (of
    :data:`~accelsim.formats.INT_VECTOR_KERNELS`) computed exactly in float64 and converted to
    integers as a host tensor is, to measure what each kernel's approximation costs."""

    accumulator_bits: int = DATAPATH_DEFAULTS["accumulator_bits"]  # type: ignore[assignment]
    overflow: str = DATAPATH_DEFAULTS["overflow"]  # type: ignore[assignment]
    integer_requant: bool = DATAPATH_DEFAULTS["integer_requant"]  # type: ignore[assignment]
    vector_format: str | None = DATAPATH_DEFAULTS["vector_format"]  # type: ignore[assignment]
    gelu_table_segments: int = DATAPATH_DEFAULTS["gelu_table_segments"]  # type: ignore[assignment]
    residual_scale: str = DATAPATH_DEFAULTS["residual_scale"]  # type: ignore[assignment]
    exact_kernels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = datapath_problem(self.accumulator_bits, self.overflow, self.integer_requant,
                                   self.vector_format, self.gelu_table_segments,
                                   self.residual_scale)
        if problem is not None:
            raise AccelsimError(f"datapath: {problem}")
        unknown = [k for k in self.exact_kernels if k not in INT_VECTOR_KERNELS]
        if unknown:
            raise AccelsimError(f"datapath: exact kernel {unknown[0]!r} is not one of "
                                f"{', '.join(INT_VECTOR_KERNELS)}")
        if self.exact_kernels and self.vector_format != "int":
            raise AccelsimError(f"datapath: exact kernels {', '.join(self.exact_kernels)} need "
                                f"vector format int (the one with approximate kernels), not "
                                f"{self.vector_format}")

    @classmethod
    def of_hw(cls, hw: HwConfig) -> Datapath:
        """The chip's datapath. An ``fp`` MAC array has no integer accumulator to model: one
        error line."""
        if hw.precision.kind != "int":
            raise AccelsimError(f"{hw.name}: precision.kind: {hw.precision.kind!r}; the integer "
                                "reference runs integer MAC arrays only; allowed: int")
        return cls(accumulator_bits=hw.precision.accumulator_bits,
                   overflow=hw.precision.overflow, integer_requant=True,
                   vector_format=hw.vector_unit.format,
                   gelu_table_segments=hw.vector_unit.gelu_table_segments,
                   residual_scale=hw.vector_unit.residual_scale)


FAKE_QUANT_DATAPATH = Datapath()


@dataclass
class DatapathCounts:
    """What one execution did: int32 ``accumulators`` produced and how many of them
    ``saturations`` fell outside the accumulator's range (saturated or wrapped); the dense
    ``gemm_macs`` it executed by GEMM kind (``linear``, ``matmul``) and the ``vector_elements``
    by vector op (graph.ir.VECTOR_OPS names), for the comparison with the simulator's graph;
    ``float_error`` per vector op kind ``[sum (ours - float32)^2, sum float32^2, max |ours -
    float32|, elements]``; ``records`` (when a list) every op as ``(oracle kind, output,
    inputs)`` for :func:`accelsim.ref.oracle.check_op`; ``float_fallbacks`` the elements of ops
    the ``int`` format computed in float64 for want of an integer kernel, by op name."""

    accumulators: int = 0
    saturations: int = 0
    gemm_macs: dict[str, int] = field(default_factory=dict)
    vector_elements: dict[str, int] = field(default_factory=dict)
    float_error: dict[str, list[float]] = field(default_factory=dict)
    records: list[tuple[str, Any, dict[str, Any]]] | None = None
    float_fallbacks: dict[str, int] = field(default_factory=dict)

    def add_macs(self, kind: str, macs: int) -> None:
        self.gemm_macs[kind] = self.gemm_macs.get(kind, 0) + int(macs)

    def add_vector(self, op: str, ours: np.ndarray, reference: np.ndarray) -> None:
        """One vector op of ``op`` kind: its elements and its error against float32."""
        self.vector_elements[op] = self.vector_elements.get(op, 0) + int(ours.size)
        # Masked scores are -inf in both: inf - inf is not an error, only skipped below.
        with np.errstate(invalid="ignore"):
            diff = ours.astype(np.float64) - reference.astype(np.float64)
        finite = np.isfinite(diff)
        stats = self.float_error.setdefault(op, [0.0, 0.0, 0.0, 0])
        stats[0] += float(np.square(diff[finite]).sum())
        stats[1] += float(np.square(reference.astype(np.float64)[finite]).sum())
        stats[2] = max(stats[2], float(np.abs(diff[finite]).max(initial=0.0)))
        stats[3] += int(ours.size)

    def record(self, kind: str, output: Any, inputs: dict[str, Any]) -> None:
        if self.records is not None:
            self.records.append((kind, output, inputs))
