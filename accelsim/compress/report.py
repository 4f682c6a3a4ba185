"""Compression report: weight bytes per layer and in total at FP32, FP16, INT8, INT4, INT4 + 2:4.

For a ``K x N`` weight: FP32 ``4KN`` bytes, FP16 ``2KN``, INT8 ``KN``, INT4 ``KN/2``; INT4 + 2:4
keeps half the values (``KN/4`` bytes) and, with metadata, a 2-bit index per kept value
(``+ KN/8``). Against FP32 that is 8x, 16x and 32/3 = 10.67x. A layer whose ``K`` is not a
multiple of 4 cannot be 2:4 and is counted dense in the 2:4 columns (``dense_reason`` says so).
``exported_bytes`` is what the integer model's packed arrays really occupy. Layers kept in float32
(convolutional front end, including wav2vec2's 1-channel first conv, pooler, head) are listed in
``float_layers`` and not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from accelsim.compress.export import IntLinear, IntModel
from accelsim.compress.sparsity import supports_2_4


def _bytes(bits: int) -> int:
    return -(-bits // 8)


@dataclass(frozen=True)
class LayerBytes:
    name: str
    k: int
    n: int
    sparsity: str  # of the exported layer: "2:4" or "dense"
    fp32_bytes: int
    fp16_bytes: int
    int8_bytes: int
    int4_bytes: int
    int4_sp24_bytes: int  # kept 4-bit values only
    int4_sp24_index_bytes: int  # kept values + 2-bit index per kept value
    exported_bytes: int  # packed codes (dense) or packed values + packed indices (2:4)
    dense_reason: str  # why the layer cannot be 2:4 ("" when it can)


@dataclass(frozen=True)
class CompressionReport:
    layers: tuple[LayerBytes, ...]
    total: LayerBytes  # byte columns summed; k = n = 0 (not meaningful for a sum)
    float_layers: tuple[str, ...]  # GEMM layers not quantized at all (front end, pooler, head)

    def ratio_to_fp32(self, column: str) -> float:
        """``fp32_bytes / column`` over the whole model (e.g. ``"int4_sp24_bytes"`` -> 16.0)."""
        return self.total.fp32_bytes / getattr(self.total, column)


def layer_bytes(layer: IntLinear, dense_reason: str = "") -> LayerBytes:
    weights = layer.k * layer.n
    can_sparse = supports_2_4(layer.k)
    reason = dense_reason or ("" if can_sparse else f"K={layer.k} is not a multiple of 4")
    kept = weights // 2 if can_sparse else weights
    index_bits = kept * 2 if can_sparse else 0
    if layer.sparsity == "2:4":
        exported = layer.packed_values.nbytes + layer.packed_indices.nbytes
    else:
        exported = layer.packed_codes.nbytes
    return LayerBytes(
        name=layer.name, k=layer.k, n=layer.n, sparsity=layer.sparsity,
        fp32_bytes=_bytes(32 * weights), fp16_bytes=_bytes(16 * weights),
        int8_bytes=_bytes(8 * weights), int4_bytes=_bytes(4 * weights),
        int4_sp24_bytes=_bytes(4 * kept), int4_sp24_index_bytes=_bytes(4 * kept + index_bits),
        exported_bytes=exported, dense_reason=reason)


_SUMMED = ("fp32_bytes", "fp16_bytes", "int8_bytes", "int4_bytes", "int4_sp24_bytes",
           "int4_sp24_index_bytes", "exported_bytes")


def compression_report(model: IntModel) -> CompressionReport:
    """Per-layer and total weight bytes of every quantized linear layer of ``model``."""
    layers = tuple(layer_bytes(x, model.dense_layers.get(x.name, "")) for x in model.linears)
    sums = {key: sum(getattr(x, key) for x in layers) for key in _SUMMED}
    sparse_count = sum(x.sparsity == "2:4" for x in layers)
    total = LayerBytes(name="TOTAL", k=0, n=0, sparsity=f"{sparse_count}/{len(layers)} layers 2:4",
                       dense_reason=f"{sum(bool(x.dense_reason) for x in layers)} layers cannot "
                                    f"be 2:4", **sums)
    return CompressionReport(layers=layers, total=total, float_layers=model.float_layers)


def report_rows(report: CompressionReport) -> list[dict[str, Any]]:
    """Tidy rows (one per layer, then TOTAL) for CSV/DataFrame output."""
    return [asdict(x) for x in (*report.layers, report.total)]
