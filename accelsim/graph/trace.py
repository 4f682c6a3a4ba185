"""Trace a PyTorch module into the operator graph (:mod:`accelsim.graph.ir`) with torch.export.

``torch.export.export(model.eval(), (), kwargs=inputs, strict=False)`` gives an ATen graph whose
nodes carry shapes (``meta["val"]``) and the module path they came from (``nn_module_stack``).
The walk below turns it into GEMMs and vector ops:

* ``linear``/``addmm``/``mm`` and ``matmul``/``bmm`` with a weight operand -> ``GemmNode(kind=
  "linear")``; ``matmul``/``bmm`` between two activations (attention's QK^T and PV) ->
  ``GemmNode(kind="matmul", weight_is_activation=True)`` with ``count`` = batch x heads and
  ``m, k, n`` per head; ``convolution`` -> ``GemmNode(kind="conv")`` lowered as
  M = output positions, K = in_channels/groups x kernel elements, N = out_channels/groups,
  count = groups x batch.
* element-wise and row-wise ops -> ``VectorNode`` with the element count of their largest
  operand (softmax and norms record the normalized row length).
* pure data movement (views, transposes, slices, concatenation, dropout in eval, casts) and
  embedding lookups (a gather, no arithmetic) are known and skipped.
* nodes that depend only on parameters and constants (weight-norm of wav2vec2's positional conv,
  DINOv2's position-embedding interpolation, a quantizer's weight fake-quant) are skipped: they
  fold into the weights before inference. Ops on integer or boolean tensors (attention-mask
  bookkeeping) and 0-d scalars are skipped too.

Anything else raises one line naming the ATen op and the node.

Precision comes from :mod:`accelsim.compress.precision`: for each GEMM the tracer walks the
node's module stack from the innermost module outward to the first one carrying
``accelsim_precision`` (linear/conv) or ``accelsim_attention_precision`` (attention matmuls).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import operator
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelsim import zoo
from accelsim.compress.precision import ATTENTION_ATTR, LINEAR_ATTR, GemmPrecision
from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic
from accelsim.graph.ir import GemmNode, Graph, Node, VectorNode

if TYPE_CHECKING:
    import torch
    from torch import fx, nn

# Bump when the walk below changes what it emits: old disk-cache entries then stop matching.
TRACER_VERSION = 2

_LINEAR_OPS = frozenset({"linear", "addmm", "mm"})
_MATMUL_OPS = frozenset({"matmul", "bmm", "baddbmm"})
_CONV_OPS = frozenset({"convolution", "conv1d", "conv2d", "conv3d", "_convolution"})
# Fused attention (sdpa): a user's module may use it; it is QK^T, softmax and PV.
_SDPA_OPS = frozenset(
    {
        "scaled_dot_product_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention",
    }
)

# ATen op name (overload dropped) -> vector op kind.
_VECTOR_OPS: dict[str, str] = {
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

_QUANTIZE_OPS = frozenset(
    {
        "round",
        "fake_quantize_per_tensor_affine",
        "fake_quantize_per_channel_affine",
        "fake_quantize",
    }
)

# Data movement, bookkeeping and lookups: no arithmetic for the accelerator.
_SKIPPED_OPS = frozenset(
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
        "triu",
        "tril",
    }
)


def _op_name(target: Any) -> str:
    """``aten.linear.default`` -> ``linear``; Python operators -> their function name."""
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return schema.name.split("::", 1)[-1]
    return getattr(target, "__name__", str(target))


def _qualified(target: Any) -> str:
    return (
        str(target)
        if hasattr(target, "_schema")
        else f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}"
    )


def _shape(node: Any) -> tuple[int, ...] | None:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    shape = getattr(val, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def _flat_nodes(args: Iterable[Any]) -> list[Any]:
    from torch import fx

    out: list[Any] = []
    for arg in args:
        if isinstance(arg, fx.Node):
            out.append(arg)
        elif isinstance(arg, (list, tuple)):
            out.extend(_flat_nodes(arg))
        elif isinstance(arg, dict):
            out.extend(_flat_nodes(arg.values()))
    return out


def _module_stack(node: fx.Node) -> list[str]:
    """Module paths from outermost to innermost ('' = the root module)."""
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path, _type in stack.values()]


def _innermost_key(node: fx.Node) -> str:
    """Id of the innermost module *call* (a module called twice gets two keys)."""
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack), "")


def _innermost_path(node: fx.Node) -> str:
    stack = _module_stack(node)
    return stack[-1] if stack else ""


# (module path, LINEAR_ATTR or ATTENTION_ATTR) -> that module's annotation.
Precisions = dict[tuple[str, str], GemmPrecision]


def module_precisions(module: nn.Module) -> Precisions:
    """Every precision annotation in ``module``, read once: a QuantLinear derives its own from
    its weight codes on each access (tens of ms for a ViT-B/16 layer), and a trace needs each
    one twice (fingerprint and walk)."""
    found: Precisions = {}
    for path, sub in module.named_modules():
        for attr in (LINEAR_ATTR, ATTENTION_ATTR):
            value = getattr(sub, attr, None)
            if value is not None:
                found[(path, attr)] = value
    return found


def _find_precision(node: fx.Node, precisions: Precisions, attr: str) -> GemmPrecision | None:
    # Nodes created outside any submodule have an empty stack: they belong to the root.
    for path in reversed(_module_stack(node) or [""]):
        precision = precisions.get((path, attr))
        if precision is not None:
            return precision
    return None


def _gemm_dims(op: str, node: fx.Node, weight_side: int | None) -> tuple[int, int, int, int]:
    """(m, k, n, count) of a linear/matmul node. ``weight_side`` is the weight operand's index."""
    out = _shape(node)
    if op == "linear":
        x, w = _shape(node.args[0]), _shape(node.args[1])
        return math.prod(x[:-1]), x[-1], w[0], 1
    if op == "addmm":
        x, w = _shape(node.args[1]), _shape(node.args[2])
        return x[0], x[1], w[1], 1
    if op == "baddbmm":
        a, b = _shape(node.args[1]), _shape(node.args[2])
        return a[1], a[2], b[2], a[0]
    a, b = _shape(node.args[0]), _shape(node.args[1])
    if len(a) == 1 or len(b) == 1:
        # matrix-vector: one side is a vector; fold it into m = 1 or n = 1.
        k = a[-1]
        return (1 if len(a) == 1 else math.prod(a[:-1])), k, (1 if len(b) == 1 else b[-1]), 1
    k = a[-1]
    if weight_side == 1 and len(b) == 2:
        # activation [..., K] x weight [K, N]: every leading dim is a row of one GEMM.
        return math.prod(a[:-1]), k, b[-1], 1
    return out[-2], k, out[-1], math.prod(out[:-2])


def _conv_dims(node: fx.Node) -> tuple[int, int, int, int]:
    x, w, out = _shape(node.args[0]), _shape(node.args[1]), _shape(node)
    op = _op_name(node.target)
    if op in ("convolution", "_convolution"):
        transposed, groups = node.args[6], node.args[8]
        if transposed:
            raise AccelsimError(
                f"trace: node {node.name!r} ({_innermost_path(node) or 'root'}): transposed "
                "convolution is not supported"
            )
    else:
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    if len(x) == len(w) - 1:  # unbatched conv input
        x, out = (1, *x), (1, *out)
    batch, out_channels = out[0], out[1]
    m = math.prod(out[2:])
    k = w[1] * math.prod(w[2:])
    return m, k, out_channels // groups, groups * batch


class _Walker:
    def __init__(self, exported: Any, precisions: Precisions, name: str) -> None:
        from torch.export.graph_signature import InputKind

        self.graph_name = name
        self.precisions = precisions
        self.user_inputs = {
            spec.arg.name
            for spec in exported.graph_signature.input_specs
            if spec.kind == InputKind.USER_INPUT
        }
        self.exported = exported
        self.depends: dict[str, bool] = {}
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.quantizer_calls: set[str] = set()
        self.quantizer_nodes: dict[str, int] = {}  # call key -> index of its requantize node

    def _unique(self, base: str) -> str:
        name, index = base, 1
        while name in self.names:
            index += 1
            name = f"{base}#{index}"
        self.names.add(name)
        return name

    def walk(self) -> list[Node]:
        call_nodes = []
        for node in self.exported.graph.nodes:
            if node.op == "placeholder":
                self.depends[node.name] = node.name in self.user_inputs
            elif node.op == "call_function":
                args = _flat_nodes([node.args, node.kwargs])
                self.depends[node.name] = any(self.depends.get(a.name, False) for a in args)
                if self.depends[node.name]:
                    call_nodes.append(node)
            elif node.op not in ("output", "get_attr"):
                raise AccelsimError(
                    f"trace {self.graph_name}: node {node.name!r} has unsupported kind {node.op!r}"
                )
        # A module call that rounds activations is a fake quantizer (x/s, round, +zp, clamp,
        # -zp, *s): on the hardware it is one requantize, so its element-wise ops become one node.
        self.quantizer_calls = {
            _innermost_key(node)
            for node in call_nodes
            if hasattr(node.target, "_schema") and _op_name(node.target) in _QUANTIZE_OPS
        }
        self.quantizer_calls.discard("")
        for node in call_nodes:
            self._visit(node)
        return self.nodes

    def _depends(self, arg: Any) -> bool:
        return bool(getattr(arg, "name", None) and self.depends.get(arg.name, False))

    def _visit(self, node: fx.Node) -> None:
        target = node.target
        if target is operator.getitem or not hasattr(target, "_schema"):
            if target is operator.getitem or getattr(target, "__module__", "") in (
                "_operator",
                "operator",
                "math",
                "torch.sym",
            ):
                return  # tuple unpacking and symbolic-int arithmetic
            self._unknown(node)
        op = _op_name(target)
        if op in _LINEAR_OPS or op in _MATMUL_OPS:
            self._gemm(node, op)
        elif op in _CONV_OPS:
            self._conv(node)
        elif op in _SDPA_OPS:
            self._sdpa(node)
        elif op in _VECTOR_OPS:
            self._vector(node, _VECTOR_OPS[op])
        elif op not in _SKIPPED_OPS:
            self._unknown(node)

    def _unknown(self, node: fx.Node) -> None:
        where = _innermost_path(node) or "root"
        raise AccelsimError(
            f"trace {self.graph_name}: unknown op {_qualified(node.target)} at node "
            f"{node.name!r} (module {where}); known ops: GEMMs, "
            f"{len(_VECTOR_OPS)} vector ops, {len(_SKIPPED_OPS)} data-movement ops"
        )

    def _gemm(self, node: fx.Node, op: str) -> None:
        if op in ("linear", "mm"):
            operands = (node.args[0], node.args[1])
        elif op in ("addmm", "baddbmm"):
            operands = (node.args[1], node.args[2])
        else:
            operands = (node.args[0], node.args[1])
        live = [self._depends(arg) for arg in operands]
        weight_side = None if all(live) else live.index(False)
        m, k, n, count = _gemm_dims(op, node, weight_side)
        path = _innermost_path(node)
        if weight_side is None:
            precision = _find_precision(node, self.precisions, ATTENTION_ATTR)
            name = f"{path}/{node.name}" if path else node.name
            self.nodes.append(self._gemm_node(name, m, k, n, count, "matmul", precision))
            return
        precision = _find_precision(node, self.precisions, LINEAR_ATTR)
        self.nodes.append(self._gemm_node(path or node.name, m, k, n, count, "linear", precision))

    def _sdpa(self, node: fx.Node) -> None:
        """Fused attention q[..., L, d], k[..., S, d], v[..., S, dv]: two GEMMs and a softmax."""
        q, k, v = (_shape(arg) for arg in node.args[:3])
        count, length, depth = math.prod(q[:-2]), q[-2], q[-1]
        source = k[-2]
        precision = _find_precision(node, self.precisions, ATTENTION_ATTR)
        path = _innermost_path(node)
        base = f"{path}/{node.name}" if path else node.name
        for suffix, (m, k_dim, n) in (
            ("qk", (length, depth, source)),
            ("pv", (length, source, v[-1])),
        ):
            self.nodes.append(
                self._gemm_node(f"{base}.{suffix}", m, k_dim, n, count, "matmul", precision)
            )
            if suffix == "qk":
                self.nodes.append(
                    VectorNode(
                        name=self._unique(f"{base}.softmax"),
                        vector_op="softmax",
                        elements=count * length * source,
                        row_length=source,
                    )
                )

    def _conv(self, node: fx.Node) -> None:
        if not self._depends(node.args[0]):
            self._unknown(node)  # a convolution over a weight-like operand has no lowering here
        m, k, n, count = _conv_dims(node)
        precision = _find_precision(node, self.precisions, LINEAR_ATTR)
        path = _innermost_path(node) or node.name
        self.nodes.append(self._gemm_node(path, m, k, n, count, "conv", precision))

    def _gemm_node(
        self,
        path: str,
        m: int,
        k: int,
        n: int,
        count: int,
        kind: str,
        precision: GemmPrecision | None,
    ) -> GemmNode:
        # Attention matmuls (kind "matmul") multiply two activations; their precision comes
        # from the attention attribute, which is always dense.
        return GemmNode(
            name=self._unique(path),
            m=m,
            k=k,
            n=n,
            count=count,
            weight_bits=precision.weight_bits if precision else None,
            act_bits=precision.act_bits if precision else None,
            sparsity=precision.sparsity if precision else "dense",
            weight_density=precision.weight_density if precision else 1.0,
            kind=kind,  # type: ignore[arg-type]
            weight_is_activation=kind == "matmul",
        )

    def _vector(self, node: fx.Node, vector_op: str) -> None:
        val = node.meta.get("val")
        if isinstance(val, (list, tuple)):  # native_layer_norm returns (out, mean, rstd)
            val = val[0]
        shape = getattr(val, "shape", None)
        if shape is None or len(shape) == 0 or not val.dtype.is_floating_point:
            return  # scalars and integer/boolean mask bookkeeping
        sizes = [math.prod(shape)] + [
            math.prod(s) for s in (_shape(arg) for arg in _flat_nodes(node.args)) if s
        ]
        elements = max(sizes)
        row_length = 1
        op = _op_name(node.target)
        if vector_op == "softmax":
            dim = node.args[1] if len(node.args) > 1 else -1
            row_length = int(shape[dim])
        elif op in ("layer_norm", "native_layer_norm", "rms_norm"):
            row_length = math.prod(node.args[1])
        elif op in ("group_norm", "native_group_norm"):
            groups = node.args[1] if op == "group_norm" else node.args[6]
            row_length = math.prod(shape) // (int(shape[0]) * int(groups))
        key = _innermost_key(node)
        if key in self.quantizer_calls:
            self._requantize(node, key, int(elements))
            return
        path = _innermost_path(node)
        self.nodes.append(
            VectorNode(
                name=self._unique(f"{path}/{node.name}" if path else node.name),
                vector_op=vector_op,  # type: ignore[arg-type]
                elements=int(elements),
                row_length=int(row_length),
            )
        )

    def _requantize(self, node: fx.Node, key: str, elements: int) -> None:
        index = self.quantizer_nodes.get(key)
        if index is None:
            self.quantizer_nodes[key] = len(self.nodes)
            name = self._unique(f"{_innermost_path(node) or node.name}/requantize")
            self.nodes.append(VectorNode(name=name, vector_op="requantize", elements=elements))
            return
        previous = self.nodes[index]
        if elements > previous.elements:
            self.nodes[index] = VectorNode(
                name=previous.name, vector_op="requantize", elements=elements
            )


_NOISY_LOGGERS = ("torch._subclasses.fake_tensor", "torch.fx.experimental.symbolic_shapes")


def export_module(module: nn.Module, example_inputs: dict[str, torch.Tensor], *, name: str) -> Any:
    """``torch.export`` in eval mode; any failure becomes one line."""
    import torch

    from accelsim.compress.quant import frozen_quantizers

    module.eval()
    # On failure torch logs tracebacks and graph dumps before raising; the one line below says
    # what failed, so those loggers are muted while exporting.
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    try:
        # torch.export also prints the partial graph to stderr on failure.
        # Frozen quantizers: the parameter-only fake-quant ops (skipped by the walk anyway) are
        # not recorded and an activation quantizer is one op, so a compressed model exports
        # several times faster into the same graph.
        with (
            torch.no_grad(),
            frozen_quantizers(module),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            return torch.export.export(module, (), kwargs=dict(example_inputs), strict=False)
    except AccelsimError:
        raise
    except Exception as exc:  # torch.export raises many types; the user needs one line
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise AccelsimError(
            f"trace {name}: torch.export failed with {type(exc).__name__}: {first}"
        ) from exc
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def graph_from_exported(
    exported: Any,
    module: nn.Module,
    *,
    name: str,
    input_shape: dict[str, int],
    precisions: Precisions | None = None,
) -> Graph:
    """Walk an ``ExportedProgram`` of ``module`` into a :class:`Graph` (``precisions``: the
    module's :func:`module_precisions`, when the caller already has them)."""
    if precisions is None:
        precisions = module_precisions(module)
    nodes = _Walker(exported, precisions, name).walk()
    return Graph(name=name, nodes=tuple(nodes), input_shape=dict(input_shape))


def trace_module(
    module: nn.Module, example_inputs: dict[str, torch.Tensor], *, name: str = "custom"
) -> Graph:
    """Trace any module called as ``module(**example_inputs)`` into a :class:`Graph`.

    ``input_shape`` records each input's sizes as ``{"<input>_<dim>": size}``.
    """
    if not example_inputs:
        raise AccelsimError(f"trace {name}: example_inputs is empty (need keyword tensors)")
    shape = {
        f"{key}_{dim}": int(size)
        for key, tensor in example_inputs.items()
        for dim, size in enumerate(getattr(tensor, "shape", ()))
    }
    exported = export_module(module, example_inputs, name=name)
    return graph_from_exported(exported, module, name=name, input_shape=shape)


# --------------------------------------------------------------------------------------------
# Zoo models, with an in-process and an on-disk cache

_MEMORY_CACHE: dict[str, Graph] = {}


def module_fingerprint(module: nn.Module, precisions: Precisions | None = None) -> str:
    """Hash of what changes a trace: module structure, parameter shapes, precision annotations
    (``precisions``: the module's :func:`module_precisions`, when the caller already has them)."""
    if precisions is None:
        precisions = module_precisions(module)
    digest = hashlib.sha256()
    for path, sub in module.named_modules():
        parts = [path, type(sub).__qualname__]
        for attr in (LINEAR_ATTR, ATTENTION_ATTR):
            value = precisions.get((path, attr))
            if value is not None:
                parts.append(f"{attr}={value!r}")
        digest.update("|".join(parts).encode())
    for path, param in module.named_parameters():
        digest.update(f"{path}:{tuple(param.shape)}".encode())
    return digest.hexdigest()[:16]


def _versions() -> str:
    import torch
    import transformers

    return f"tracer{TRACER_VERSION}-torch{torch.__version__}-tf{transformers.__version__}"


def trace_cache_key(name: str, shape: dict[str, int], fingerprint: str) -> str:
    shape_part = "-".join(f"{k}{v}" for k, v in sorted(shape.items()))
    version_hash = hashlib.sha256(_versions().encode()).hexdigest()[:8]
    return f"{name}-{shape_part}-{fingerprint}-{version_hash}"


def _disk_path(key: str) -> Path:
    return zoo.cache_dir() / "traces" / f"{key}.json"


def trace_named_model(
    name: str,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    image_size: int | None = None,
    audio_seconds: float | None = None,
    model: nn.Module | None = None,
) -> Graph:
    """Trace zoo model ``name`` at an input shape (defaults from its YAML).

    ``model`` is an already built (e.g. compressed) model of that zoo name. Results are cached
    in-process and as JSON under ``<cache>/traces``, keyed by model name, input shape and a
    fingerprint of the module (structure + precision annotations), so a sweep traces once.
    """
    spec = zoo.get_spec(name)
    shape = zoo.resolve_input_shape(
        name, batch=batch, seq_len=seq_len, image_size=image_size, audio_seconds=audio_seconds
    )
    # An unmodified zoo model needs no build to be identified: its YAML config pins the structure.
    precisions = None if model is None else module_precisions(model)
    if model is None:
        config = repr((spec.family, spec.config)).encode()
        fingerprint = "zoo" + hashlib.sha256(config).hexdigest()[:12]
    else:
        fingerprint = module_fingerprint(model, precisions)
    key = trace_cache_key(name, shape, fingerprint)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    path = _disk_path(key)
    if path.is_file():
        try:
            graph = Graph.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AccelsimError):
            graph = None  # a stale or damaged entry is re-traced and overwritten
        if graph is not None:
            _MEMORY_CACHE[key] = graph
            return graph
    # Tracing needs shapes, not values: a meta-device build skips the random init (seconds for
    # the large models).
    module = model if model is not None else zoo.build_structure(name)
    inputs = zoo.inputs_for_shape(spec, shape)
    if model is None:  # meta parameters need meta inputs (export sees only shapes anyway)
        inputs = {key: value.to("meta") for key, value in inputs.items()}
    exported = export_module(module, inputs, name=name)
    graph = graph_from_exported(
        exported, module, name=name, input_shape=shape, precisions=precisions
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, graph.to_json())
    _MEMORY_CACHE[key] = graph
    return graph


def clear_memory_cache() -> None:
    """Forget in-process traces (the disk cache stays)."""
    _MEMORY_CACHE.clear()
