"""The datapath the integer reference executes: accumulator width and overflow, requantization and
the vector unit's number format, read from a hardware config (docs/integer_semantics.md).

:data:`FAKE_QUANT_DATAPATH` is the arithmetic of the fake-quant model's inference forward (int32
accumulators, float32 dequantize-and-requantize, float32 vector ops): ``accelsim verify`` checks
the kernels against that model bit for bit on it. :meth:`Datapath.of_hw` is the chip's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelsim.errors import AccelsimError
from accelsim.formats import OVERFLOW_POLICIES, VECTOR_FORMATS
from accelsim.hw import HwConfig


@dataclass(frozen=True)
class Datapath:
    """``accumulator_bits``/``overflow``: every GEMM's exact sum is clipped to this signed width
    after the whole K reduction (§2). ``integer_requant``: a GEMM whose output feeds a quantizer
    directly (the attention operands q, k, v and the attention output) is requantized by an
    integer multiplier and shift with the bias in int32 (§6) instead of through float32.
    ``vector_format``: the format of everything else between GEMMs (§5)."""

    accumulator_bits: int = 32
    overflow: str = "saturate"
    integer_requant: bool = False
    vector_format: str = "fp32"

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_POLICIES:
            raise AccelsimError(f"datapath: overflow {self.overflow!r} is not one of "
                                f"{', '.join(OVERFLOW_POLICIES)}")
        if self.vector_format not in VECTOR_FORMATS:
            raise AccelsimError(f"datapath: vector format {self.vector_format!r} is not one of "
                                f"{', '.join(VECTOR_FORMATS)}")
        if not 2 <= self.accumulator_bits <= 64:
            raise AccelsimError(f"datapath: accumulator_bits {self.accumulator_bits}; allowed: "
                                "2..64")

    @classmethod
    def of_hw(cls, hw: HwConfig) -> Datapath:
        """The chip's datapath. An ``fp`` MAC array has no integer accumulator to model: one
        error line."""
        if hw.precision.kind != "int":
            raise AccelsimError(f"{hw.name}: precision.kind: {hw.precision.kind!r}; the integer "
                                "reference runs integer MAC arrays only; allowed: int")
        return cls(accumulator_bits=hw.precision.accumulator_bits,
                   overflow=hw.precision.overflow, integer_requant=True,
                   vector_format=hw.vector_unit.format)


FAKE_QUANT_DATAPATH = Datapath()


@dataclass
class DatapathCounts:
    """What one execution did, summed over its GEMMs: int32 ``accumulators`` produced and how
    many of them ``saturations`` fell outside the accumulator's range (saturated or wrapped)."""

    accumulators: int = 0
    saturations: int = 0
