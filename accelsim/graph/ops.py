"""The ATen ops the tracer (:mod:`accelsim.graph.trace`) knows, and how to read each one's work.

An op is known by its name with the overload dropped (``aten.linear.default`` -> ``linear``) and
falls in exactly one kind: a GEMM (linear, matmul, conv, fused attention), a vector op (mapped to
the vector unit's op kind), or skipped (data movement and bookkeeping, no arithmetic). For the
GEMMs and vector ops the functions below read the node's operand shapes into GEMM dimensions or
a vector extent.

A change here changes what the tracer emits: bump ``TRACER_VERSION`` in
:mod:`accelsim.graph.trace` so old disk-cache entries stop matching.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    from torch import fx

LINEAR_OPS = frozenset({"linear", "addmm", "mm"})
MATMUL_OPS = frozenset({"matmul", "bmm", "baddbmm"})
CONV_OPS = frozenset({"convolution", "conv1d", "conv2d", "conv3d", "_convolution"})
# Fused attention (sdpa): a user's module may use it; it is QK^T, softmax and PV.
SDPA_OPS = frozenset(
    {
        "scaled_dot_product_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention",
    }
)

# ATen op name (overload dropped) -> vector op kind.
VECTOR_OPS: dict[str, str] = {
    **dict.fromkeys(("softmax", "_softmax", "_safe_softmax", "log_softmax"), "softmax"),
    **dict.fromkeys(
        ("layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "rms_norm"),
        "layernorm",
    ),
    "gelu": "gelu",
    "relu": "relu",
    "tanh": "tanh",
    **dict.fromkeys(("add", "sub", "rsub"), "add"),
    **dict.fromkeys(("mul", "div"), "mul"),
    **dict.fromkeys(
        (
            "round",
            "clamp",
            "clamp_min",
            "clamp_max",
            "fake_quantize_per_tensor_affine",
            "fake_quantize_per_channel_affine",
            "fake_quantize",  # accelsim.compress.quant.fake_quantize_op (frozen quantizers)
        ),
        "requantize",
    ),
    **dict.fromkeys(
        (
            "exp",
            "log",
            "sqrt",
            "rsqrt",
            "pow",
            "erf",
            "sigmoid",
            "silu",
            "neg",
            "abs",
            "reciprocal",
            "sign",
            "floor",
            "ceil",
            "trunc",
            "square",
            "mean",
            "sum",
            "var",
            "std",
            "amax",
            "amin",
            "max",
            "min",
            "where",
            "masked_fill",
            "hardtanh",
            "cumsum",
            "eq",
            "ne",
            "ge",
            "gt",
            "le",
            "lt",
            "logical_and",
            "logical_or",
            "logical_not",
            "__and__",
            "__or__",
            "bitwise_and",
            "bitwise_or",
            "bitwise_not",
            "upsample_bicubic2d",
            "upsample_bilinear2d",
            "interpolate",
            "avg_pool1d",
            "avg_pool2d",
            "adaptive_avg_pool1d",
            "adaptive_avg_pool2d",
            "maximum",
            "minimum",
        ),
        "other",
    ),
}

QUANTIZE_OPS = frozenset(
    {
        "round",
        "fake_quantize_per_tensor_affine",
        "fake_quantize_per_channel_affine",
        "fake_quantize",
    }
)

# Data movement, bookkeeping and lookups: no arithmetic for the accelerator.
SKIPPED_OPS = frozenset(
    {
        "view",
        "reshape",
        "_unsafe_view",
        "permute",
        "transpose",
        "t",
        "expand",
        "expand_as",
        "clone",
        "contiguous",
        "slice",
        "select",
        "cat",
        "stack",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "unsqueeze",
        "squeeze",
        "flatten",
        "unflatten",
        "narrow",
        "view_as",
        "repeat",
        "dropout",
        "feature_dropout",
        "alpha_dropout",
        "alias",
        "detach",
        "_assert_tensor_metadata",
        "_assert_scalar",
        "to",
        "_to_copy",
        "type_as",
        "copy",
        "copy_",
        "lift_fresh_copy",
        "embedding",
        "arange",
        "zeros",
        "ones",
        "full",
        "empty",
        "new_ones",
        "new_zeros",
        "new_full",
        "new_empty",
        "zeros_like",
        "ones_like",
        "full_like",
        "empty_like",
        "index",
        "gather",
        "index_select",
        "constant_pad_nd",
        "pad",
        "sym_size",
        "sym_numel",
        "sym_stride",
        "scalar_tensor",
        "item",
        "_local_scalar_dense",
        "sym_constrain_range_for_size",
        "_weight_norm",
        "_weight_norm_interface",
        "linspace",
        # A decoder's KV-cache write (static cache): accelsim.graph.decoder_trace records it.
        "index_copy",
        "index_copy_",
        "triu",
        "tril",
    }
)


def op_name(target: Any) -> str:
    """``aten.linear.default`` -> ``linear``; Python operators -> their function name."""
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return schema.name.split("::", 1)[-1]
    return getattr(target, "__name__", str(target))


def qualified(target: Any) -> str:
    return (
        str(target)
        if hasattr(target, "_schema")
        else f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}"
    )


def node_shape(node: Any) -> tuple[int, ...] | None:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    shape = getattr(val, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def flat_nodes(args: Iterable[Any]) -> list[Any]:
    from torch import fx

    out: list[Any] = []
    for arg in args:
        if isinstance(arg, fx.Node):
            out.append(arg)
        elif isinstance(arg, (list, tuple)):
            out.extend(flat_nodes(arg))
        elif isinstance(arg, dict):
            out.extend(flat_nodes(arg.values()))
    return out


def gemm_dims(op: str, node: fx.Node, weight_side: int | None) -> tuple[int, int, int, int]:
    """(m, k, n, count) of a linear/matmul node. ``weight_side`` is the weight operand's index."""
    out = node_shape(node)
    if op == "linear":
        x, w = node_shape(node.args[0]), node_shape(node.args[1])
        return math.prod(x[:-1]), x[-1], w[0], 1
    if op == "addmm":
        x, w = node_shape(node.args[1]), node_shape(node.args[2])
        return x[0], x[1], w[1], 1
    if op == "baddbmm":
        a, b = node_shape(node.args[1]), node_shape(node.args[2])
        return a[1], a[2], b[2], a[0]
    a, b = node_shape(node.args[0]), node_shape(node.args[1])
    if len(a) == 1 or len(b) == 1:
        # matrix-vector: one side is a vector; fold it into m = 1 or n = 1.
        k = a[-1]
        return (1 if len(a) == 1 else math.prod(a[:-1])), k, (1 if len(b) == 1 else b[-1]), 1
    k = a[-1]
    if weight_side == 1 and len(b) == 2:
        # activation [..., K] x weight [K, N]: every leading dim is a row of one GEMM.
        return math.prod(a[:-1]), k, b[-1], 1
    return out[-2], k, out[-1], math.prod(out[:-2])


def conv_dims(node: fx.Node, *, where: str) -> tuple[int, int, int, int]:
    """(m, k, n, count) of a convolution node; ``where`` names its module in the error."""
    x, w, out = node_shape(node.args[0]), node_shape(node.args[1]), node_shape(node)
    op = op_name(node.target)
    if op in ("convolution", "_convolution"):
        transposed, groups = node.args[6], node.args[8]
        if transposed:
            raise AccelsimError(
                f"trace: node {node.name!r} ({where}): transposed convolution is not supported"
            )
    else:
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    if len(x) == len(w) - 1:  # unbatched conv input
        x, out = (1, *x), (1, *out)
    batch, out_channels = out[0], out[1]
    m = math.prod(out[2:])
    k = w[1] * math.prod(w[2:])
    return m, k, out_channels // groups, groups * batch


def vector_extent(node: fx.Node, vector_op: str) -> tuple[int, int] | None:
    """(elements, row length) of a vector-op node: the element count of its largest operand or
    result, and the normalized row length of softmax and norms (1 otherwise). ``None`` for
    scalars and integer/boolean tensors (attention-mask bookkeeping), which cost nothing."""
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):  # native_layer_norm returns (out, mean, rstd)
        val = val[0]
    shape = getattr(val, "shape", None)
    if shape is None or len(shape) == 0 or not val.dtype.is_floating_point:
        return None
    sizes = [math.prod(shape)] + [
        math.prod(s) for s in (node_shape(arg) for arg in flat_nodes(node.args)) if s
    ]
    row_length = 1
    op = op_name(node.target)
    if vector_op == "softmax":
        dim = node.args[1] if len(node.args) > 1 else -1
        row_length = int(shape[dim])
    elif op in ("layer_norm", "native_layer_norm", "rms_norm"):
        row_length = math.prod(node.args[1])
    elif op in ("group_norm", "native_group_norm"):
        groups = node.args[1] if op == "group_norm" else node.args[6]
        row_length = math.prod(shape) // (int(shape[0]) * int(groups))
    return int(max(sizes)), int(row_length)
