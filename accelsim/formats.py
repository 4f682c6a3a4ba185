"""The chip's number formats, in one table: what every other layer reads instead of its own copy.

In the manner of torchao's ``quant_primitives`` bounds table: the integer code range of every
operand grid per bit width, the 2:4 constants, the dataflow names, the packed integer-model file
layout, the accumulator overflow policies and the vector unit's number formats with their element
widths. ``compress`` (quantizers, export), ``ref`` (kernels, reference executor), ``sim`` (storage
and datapath widths) and ``hw`` (validation of the design point) all import from here, so that a
code range or a field width cannot mean one thing in the trained model and another in the
simulator. docs/integer_semantics.md is the spec these constants implement. Pure Python: no
numpy, torch or numba, so the simulator and the CLI stay light.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelsim.errors import AccelsimError

# --- integer operand grids --------------------------------------------------------------------

WEIGHT_GRIDS: tuple[str, ...] = ("zero_preserving", "twos_complement", "no_zero")
"""Symmetric weight grids (zero point 0); docs/compression.md §2."""
ACT_MODES: tuple[str, ...] = ("pact2", "symmetric")
"""Activation quantizers: ``pact2`` unsigned codes with an integer zero point, ``symmetric``
signed codes with zero point 0."""


def weight_code_range(bits: int, grid: str) -> tuple[int, int]:
    """Integer code bounds of a weight grid: ``zero_preserving`` ``-q..q`` with ``q =
    2^(bits-1) - 1`` (4-bit: -7..7), ``twos_complement`` ``-q-1..q`` (4-bit: -8..7), ``no_zero``
    the bounds of its half-step index ``i`` (same as two's complement; the stored code is the odd
    ``2i + 1``)."""
    if grid not in WEIGHT_GRIDS:
        raise AccelsimError(f"weight grid {grid!r} is not one of {', '.join(WEIGHT_GRIDS)}")
    q = 2 ** (bits - 1) - 1
    return (-q, q) if grid == "zero_preserving" else (-q - 1, q)


def weight_top_level(bits: int, grid: str) -> float:
    """The grid's largest level in steps: the clip ``alpha`` maps onto it (``s = alpha / top``)."""
    q = 2 ** (bits - 1) - 1
    return q + 0.5 if grid == "no_zero" else float(q)


def act_code_range(bits: int, mode: str) -> tuple[int, int]:
    """Activation code bounds: ``pact2`` ``0..2^bits - 1``, ``symmetric`` ``-q..q``."""
    if mode not in ACT_MODES:
        raise AccelsimError(f"activation mode {mode!r} is not one of {', '.join(ACT_MODES)}")
    if mode == "pact2":
        return 0, 2**bits - 1
    q = 2 ** (bits - 1) - 1
    return -q, q


def act_shifted_max(bits: int, mode: str) -> int:
    """Largest ``|code - zero_point|`` an activation can reach whatever its zero point:
    ``2^bits - 1`` with an in-range zero point (``pact2``), ``q`` for ``symmetric``."""
    low, high = act_code_range(bits, mode)
    return high - low if mode == "pact2" else high


def twos_complement_range(bits: int) -> tuple[int, int]:
    """``-2^(bits-1) .. 2^(bits-1) - 1``: a signed ``bits``-wide field or register."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


# --- accumulators -----------------------------------------------------------------------------

INT32_MAX = 2**31 - 1
"""The reference's accumulator register: int32, checked never to overflow before clipping to
``precision.accumulator_bits``."""
OVERFLOW_POLICIES: tuple[str, ...] = ("saturate", "wrap")
"""What an accumulator narrower than int32 does with a sum outside its range: clamp to the signed
N-bit range, or keep the low N bits as two's complement (docs/integer_semantics.md §2)."""


def product_bits(weight_bits: int, act_bits: int) -> int:
    """Signed bits one product ``(a - zp) * w`` needs: ``|a - zp| <= 2^act_bits - 1`` (with a
    zero point) times ``|w| <= 2^(weight_bits-1)`` fits ``act_bits + weight_bits`` signed bits."""
    return act_bits + weight_bits


# --- 2:4 structured sparsity ------------------------------------------------------------------

SPARSE_24 = "2:4"
SPARSE_GROUP = 4
"""Weights per group along K."""
SPARSE_KEPT = 2
"""Kept (possibly zero) values per group."""
INDEX_BITS = 2
"""Metadata bits per kept value: its position 0..3 in the group, the 4:1 mux select."""
MUX_INPUTS = SPARSE_GROUP
"""Activations a 2:4 PE selects from."""

# --- dataflows --------------------------------------------------------------------------------

DATAFLOWS: tuple[str, ...] = ("os", "ws", "is")
"""Output, weight and input stationary (docs/dataflows.md)."""

# --- packed integer-model file (docs/compression.md §6) ---------------------------------------

INT_MODEL_FORMAT = "accelsim-int-model"
INT_MODEL_VERSION = 1
PACKED_FIELD_BITS: tuple[int, ...] = (2, 4, 8)
"""Field widths of the packed arrays: two's complement, first element in the least significant
bits of its byte, each row padded to whole bytes with zero bits."""

# --- the vector unit --------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorFormat:
    """A vector-unit number format: ``element_bits`` per value in SRAM and in a lane;
    ``significand_bits`` (hidden bit included) and ``exponent_bits`` for the float formats."""

    name: str
    element_bits: int
    is_float: bool
    significand_bits: int = 0
    exponent_bits: int = 0


VECTOR_FORMATS: dict[str, VectorFormat] = {
    "fp32": VectorFormat("fp32", 32, True, significand_bits=24, exponent_bits=8),
    "fp16": VectorFormat("fp16", 16, True, significand_bits=11, exponent_bits=5),
    "bf16": VectorFormat("bf16", 16, True, significand_bits=8, exponent_bits=8),
    # I-BERT (Kim et al., ICML 2021) keeps its integer non-linearities' values in int32.
    "int": VectorFormat("int", 32, False),
}


# The ``int`` format's approximate kernels (I-BERT's polynomials, integer square root, saturated
# adds; accelsim.ref.int_mode). A study may compute any of them exactly (``Datapath.
# exact_kernels``) to measure what its approximation costs; the chip always runs them all.
INT_VECTOR_KERNELS: tuple[str, ...] = ("add", "gelu", "layer_norm", "softmax")


# The ``int`` format's table GELU (``vector_unit.gelu_table_segments``, docs/integer_semantics.md
# §5): ``GELU(x) = x Phi(x)`` with the normal CDF ``Phi`` interpolated linearly between
# ``segments + 1`` stored values on ``|x|`` in ``[0, GELU_TABLE_RANGE)`` (``Phi(-x) = 1 - Phi(x)``,
# ``Phi = 1`` beyond); 0 segments is I-BERT's polynomial instead. A lane holds its own table of
# ``GELU_TABLE_WORD_BITS``-bit words, ``Phi`` in Q(``GELU_TABLE_PHI_BITS``), and reads two adjacent
# words per element.
GELU_TABLE_SEGMENTS: tuple[int, ...] = (0, 4, 8, 16, 32, 64, 128, 256)
GELU_TABLE_RANGE = 4  # Phi(4) = 1 - 3.2e-5: beyond it Phi = 1 errs less than one Q15 step does
GELU_TABLE_PHI_BITS = 15
GELU_TABLE_WORD_BITS = 16
GELU_TABLE_X_FRAC_BITS = 16
"""Fractional bits of the fixed-point ``x`` that indexes and interpolates the table."""
GELU_TABLE_READ_WORDS = 2
"""Table words a lane reads per element: the two ends of its segment."""
GELU_TABLE_EXTRA_LANE_CYCLES = 1
"""Lane cycles the table GELU takes beyond ``cycles_per_element.gelu`` (I-BERT's polynomial):
three multiplies (to fixed point, interpolation, ``x Phi``) against the polynomial's two."""


def gelu_table_problem(segments: object, vector_format: object) -> str | None:
    """Why ``segments`` is not a table GELU of ``vector_format`` (``"field ...; allowed ..."``),
    or None: the table is an ``int``-format kernel (the float formats evaluate ``erf``)."""
    if isinstance(segments, bool) or segments not in GELU_TABLE_SEGMENTS:
        allowed = ", ".join(map(str, GELU_TABLE_SEGMENTS))
        return f"gelu_table_segments {segments!r} is not one of {allowed} (0: I-BERT's polynomial)"
    if segments and vector_format != "int":
        return (f"gelu_table_segments {segments} needs vector format int (the float formats "
                f"evaluate erf), not {vector_format}; allowed with {vector_format}: 0")
    return None


# How the ``int`` format's residual add picks its output scale (``vector_unit.residual_scale``,
# docs/integer_semantics.md §5; a compile-time constant per add, so the rescale multipliers and
# the priced work are the same either way):
# * ``coarser``: the coarser of the two operands' scales; the finer operand loses its low bits;
# * ``fitted``: the finest scale at which the operands' full ranges (``2^(bits - 1)`` codes each,
#   at the widths they are stored in) sum without saturating the residual width, never finer
#   than the finer operand's scale and never coarser than ``coarser``'s;
# * ``calibrated``: each add's own scale, stored in the integer model file: the largest sum seen
#   on calibration inputs over the residual width's largest code (TFLite's ADD has an output
#   scale so calibrated), never finer than the finer operand's scale; a larger sum saturates.
RESIDUAL_SCALES: tuple[str, ...] = ("coarser", "fitted", "calibrated")


def residual_scale_problem(rule: object, vector_format: object) -> str | None:
    """Why ``rule`` is not a residual-add scale rule of ``vector_format``, or None: the rule is
    the ``int`` format's (a float format adds in floating point)."""
    if rule not in RESIDUAL_SCALES:
        return f"residual_scale {rule!r} is not one of {', '.join(RESIDUAL_SCALES)}"
    if rule != "coarser" and vector_format != "int":
        return (f"residual_scale {rule} needs vector format int (the float formats add in "
                f"floating point), not {vector_format}; allowed with {vector_format}: coarser")
    return None


def vector_format(name: str) -> VectorFormat:
    """The :class:`VectorFormat` called ``name``; one error line naming the allowed ones."""
    if name not in VECTOR_FORMATS:
        raise AccelsimError(f"vector format {name!r} is not one of {', '.join(VECTOR_FORMATS)}")
    return VECTOR_FORMATS[name]


# --- a datapath -------------------------------------------------------------------------------

ACCUMULATOR_BITS_RANGE: tuple[int, int] = (2, 64)
"""Accumulator widths a datapath may name: a sign bit and one more, up to the int64 register."""
DATAPATH_FIELDS: tuple[str, ...] = ("accumulator_bits", "overflow", "integer_requant",
                                    "vector_format", "gelu_table_segments", "residual_scale")
"""What selects a datapath (``accelsim.ref.datapath.Datapath``; the recipe field ``datapath``)."""
DATAPATH_DEFAULTS: dict[str, object] = {"accumulator_bits": 32, "overflow": "saturate",
                                        "integer_requant": False, "vector_format": None,
                                        "gelu_table_segments": 0, "residual_scale": "coarser"}
"""A field left out: int32 accumulators (nothing clipped), float32 requantization, the model's
own float32 vector ops; the arithmetic of the fake-quant model's inference forward."""


def datapath_problem(accumulator_bits: object, overflow: object, integer_requant: object,
                     vector_format: object, gelu_table_segments: object = 0,
                     residual_scale: object = "coarser") -> str | None:
    """The first invalid datapath field as ``"field value ...; allowed ..."``, or None.
    ``vector_format`` None is the fake-quant model's own float32 ops."""
    if overflow not in OVERFLOW_POLICIES:
        return f"overflow {overflow!r} is not one of {', '.join(OVERFLOW_POLICIES)}"
    if vector_format is not None and vector_format not in VECTOR_FORMATS:
        return f"vector format {vector_format!r} is not one of {', '.join(VECTOR_FORMATS)}"
    low, high = ACCUMULATOR_BITS_RANGE
    if (isinstance(accumulator_bits, bool) or not isinstance(accumulator_bits, int)
            or not low <= accumulator_bits <= high):
        return f"accumulator_bits {accumulator_bits!r}; allowed: {low}..{high}"
    if not isinstance(integer_requant, bool):
        return f"integer_requant {integer_requant!r}; allowed: true, false"
    return (gelu_table_problem(gelu_table_segments, vector_format)
            or residual_scale_problem(residual_scale, vector_format))
