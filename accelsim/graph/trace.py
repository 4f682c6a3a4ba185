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
* an ``add`` (or the subtrahend of a ``sub``) whose other operand is computed from literals alone
  and is all zeros is the identity and is folded away: the additive attention mask a ViT builds
  from ``arange`` when it has no padding (the integer reference adds no mask there either).

Edges: every ATen node carries the accelsim nodes whose outputs it holds (``""`` for a model
input); data movement passes them through, so each emitted node lists the producers it reads in
``inputs`` (a GEMM: A's, then B's when both are activations).

Anything else raises one line naming the ATen op and the node. The op names by kind and how each
one's GEMM dimensions or vector extent are read live in :mod:`accelsim.graph.ops`; zoo models are
traced by name, with an in-process and an on-disk cache, by :mod:`accelsim.graph.trace_cache`.

Precision comes from :mod:`accelsim.compress.precision`: for each GEMM the tracer walks the
node's module stack from the innermost module outward to the first one carrying
``accelsim_precision`` (linear/conv) or ``accelsim_attention_precision`` (attention matmuls).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import operator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from accelsim.compress.precision import ATTENTION_ATTR, LINEAR_ATTR, GemmPrecision
from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph, Node, VectorNode
from accelsim.graph.ops import (
    CONV_OPS,
    LINEAR_OPS,
    MATMUL_OPS,
    QUANTIZE_OPS,
    SDPA_OPS,
    SKIPPED_OPS,
    VECTOR_OPS,
    conv_dims,
    flat_nodes,
    gemm_dims,
    node_shape,
    op_name,
    qualified,
    vector_extent,
)

if TYPE_CHECKING:
    import torch
    from torch import fx, nn

# Bump when the walk below or the op rules in accelsim.graph.ops change what the tracer emits:
# the trace cache (accelsim.graph.trace_cache) keys on it, so old disk entries stop matching.
TRACER_VERSION = 4
# Literal-only subgraphs deeper than this are not evaluated for the zero-operand fold.
_FOLD_DEPTH = 32


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
        # ATen node name -> the accelsim nodes whose outputs it holds ("" = a model input).
        self.sources: dict[str, tuple[str, ...]] = {}

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
                if self.depends[node.name]:
                    self.sources[node.name] = ("",)
            elif node.op == "call_function":
                args = flat_nodes([node.args, node.kwargs])
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
            if hasattr(node.target, "_schema") and op_name(node.target) in QUANTIZE_OPS
        }
        self.quantizer_calls.discard("")
        for node in call_nodes:
            self._visit(node)
        return self.nodes

    def _depends(self, arg: Any) -> bool:
        return bool(getattr(arg, "name", None) and self.depends.get(arg.name, False))

    def _sources(self, *args: Any) -> tuple[str, ...]:
        """The producers of ``args``' values, in order, each once."""
        found: dict[str, None] = {}
        for arg in flat_nodes(args):
            found.update(dict.fromkeys(self.sources.get(arg.name, ())))
        return tuple(found)

    def _operand_sources(self, *operands: Any) -> tuple[str, ...]:
        """One producer per operand of an activation x activation GEMM (A's, then B's), even
        when both come from the same node (a fused QKV projection): the first producer an
        operand holds, or a model input (``""``) for one that holds none (a cache buffer)."""
        return tuple(next(iter(self._sources(operand)), "") for operand in operands)

    def _visit(self, node: fx.Node) -> None:
        emitted = len(self.nodes)
        self._emit(node)
        if len(self.nodes) > emitted:
            self.sources[node.name] = (self.nodes[-1].name,)
        elif node.name not in self.sources:  # data movement: holds what its operands held
            self.sources[node.name] = self._sources(node.args, node.kwargs)

    def _emit(self, node: fx.Node) -> None:
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
        op = op_name(target)
        if op in LINEAR_OPS or op in MATMUL_OPS:
            self._gemm(node, op)
        elif op in CONV_OPS:
            self._conv(node)
        elif op in SDPA_OPS:
            self._sdpa(node)
        elif op in VECTOR_OPS:
            self._vector(node, VECTOR_OPS[op])
        elif op not in SKIPPED_OPS:
            self._unknown(node)

    def _unknown(self, node: fx.Node) -> None:
        where = _innermost_path(node) or "root"
        raise AccelsimError(
            f"trace {self.graph_name}: unknown op {qualified(node.target)} at node "
            f"{node.name!r} (module {where}); known ops: GEMMs, "
            f"{len(VECTOR_OPS)} vector ops, {len(SKIPPED_OPS)} data-movement ops"
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
        m, k, n, count = gemm_dims(op, node, weight_side)
        path = _innermost_path(node)
        if weight_side is None:
            precision = _find_precision(node, self.precisions, ATTENTION_ATTR)
            name = f"{path}/{node.name}" if path else node.name
            self.nodes.append(self._gemm_node(name, m, k, n, count, "matmul", precision,
                                              self._operand_sources(*operands)))
            return
        precision = _find_precision(node, self.precisions, LINEAR_ATTR)
        self.nodes.append(self._gemm_node(path or node.name, m, k, n, count, "linear", precision,
                                          self._sources(operands[1 - weight_side])))

    def _sdpa(self, node: fx.Node) -> None:
        """Fused attention q[..., L, d], k[..., S, d], v[..., S, dv]: two GEMMs and a softmax."""
        q, k, v = (node_shape(arg) for arg in node.args[:3])
        count, length, depth = math.prod(q[:-2]), q[-2], q[-1]
        source = k[-2]
        precision = _find_precision(node, self.precisions, ATTENTION_ATTR)
        path = _innermost_path(node)
        base = f"{path}/{node.name}" if path else node.name
        self.nodes.append(self._gemm_node(f"{base}.qk", length, depth, source, count, "matmul",
                                          precision, self._operand_sources(*node.args[:2])))
        self.nodes.append(VectorNode(
            name=self._unique(f"{base}.softmax"), vector_op="softmax",
            elements=count * length * source, row_length=source, inputs=(self.nodes[-1].name,),
        ))
        self.nodes.append(self._gemm_node(
            f"{base}.pv", length, source, v[-1], count, "matmul", precision,
            (self.nodes[-1].name, *self._operand_sources(node.args[2])),
        ))

    def _conv(self, node: fx.Node) -> None:
        if not self._depends(node.args[0]):
            self._unknown(node)  # a convolution over a weight-like operand has no lowering here
        m, k, n, count = conv_dims(node, where=_innermost_path(node) or "root")
        precision = _find_precision(node, self.precisions, LINEAR_ATTR)
        path = _innermost_path(node) or node.name
        self.nodes.append(self._gemm_node(path, m, k, n, count, "conv", precision,
                                          self._sources(node.args[0])))

    def _gemm_node(
        self,
        path: str,
        m: int,
        k: int,
        n: int,
        count: int,
        kind: str,
        precision: GemmPrecision | None,
        inputs: tuple[str, ...],
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
            inputs=inputs,
        )

    def _adds_zero(self, node: fx.Node) -> bool:
        """``x + 0`` or ``x - 0`` with the zero a literal-only all-zero tensor (a no-op)."""
        op = op_name(node.target)
        if op not in ("add", "sub") or len(node.args) < 2:
            return False
        candidates = node.args[:2] if op == "add" else node.args[1:2]
        for arg in candidates:
            if hasattr(arg, "op") and not self._depends(arg):
                value = _literal_value(arg, {}, _FOLD_DEPTH)
                if value is not None and not bool(_any_nonzero(value)):
                    return True
        return False

    def _vector(self, node: fx.Node, vector_op: str) -> None:
        extent = vector_extent(node, vector_op)
        if extent is None:
            return  # scalars and integer/boolean mask bookkeeping
        if self._adds_zero(node):
            return
        elements, row_length = extent
        key = _innermost_key(node)
        if key in self.quantizer_calls:
            self._requantize(node, key, elements)
            return
        path = _innermost_path(node)
        self.nodes.append(
            VectorNode(
                name=self._unique(f"{path}/{node.name}" if path else node.name),
                vector_op=vector_op,  # type: ignore[arg-type]
                elements=elements,
                row_length=row_length,
                inputs=self._sources(node.args, node.kwargs),
            )
        )

    def _requantize(self, node: fx.Node, key: str, elements: int) -> None:
        """The quantizer's element-wise ops are one node: its inputs are what they read from
        outside the quantizer, and every one of them holds the node's output."""
        reads = self._sources(node.args, node.kwargs)
        index = self.quantizer_nodes.get(key)
        if index is None:
            self.quantizer_nodes[key] = len(self.nodes)
            name = self._unique(f"{_innermost_path(node) or node.name}/requantize")
            self.nodes.append(VectorNode(name=name, vector_op="requantize", elements=elements,
                                         inputs=reads))
            return
        previous = self.nodes[index]
        outside = tuple(s for s in reads if s != previous.name and s not in previous.inputs)
        self.nodes[index] = replace(previous, elements=max(elements, previous.elements),
                                    inputs=previous.inputs + outside)
        self.sources[node.name] = (previous.name,)


_NOISY_LOGGERS = ("torch._subclasses.fake_tensor", "torch.fx.experimental.symbolic_shapes")


def _any_nonzero(value: Any) -> bool:
    import torch

    return bool(torch.as_tensor(value).ne(0).any())


def _literal_value(node: Any, cache: dict[str, Any], depth: int) -> Any:
    """The value of an exported node computed from literals alone (``arange``, ``zeros``,
    ``where`` of them, shape ops), or None when it reads an input, parameter or buffer, or is
    deeper than ``depth``."""
    if not hasattr(node, "op"):
        return node  # a literal argument
    if node.name in cache:
        return cache[node.name]
    value = None
    if node.op == "call_function" and depth > 0 and hasattr(node.target, "_schema"):
        args = [_literal_value(a, cache, depth - 1) for a in node.args]
        kwargs = {k: _literal_value(v, cache, depth - 1) for k, v in node.kwargs.items()}
        nodes_given = [a for a in (*node.args, *node.kwargs.values()) if hasattr(a, "op")]
        values = [v for a, v in zip((*node.args, *node.kwargs.values()),
                                    (*args, *kwargs.values()), strict=True) if hasattr(a, "op")]
        if "device" in kwargs:  # a model traced on the meta device: compute literals on the CPU
            kwargs["device"] = "cpu"
        if all(v is not None for v in values) and len(values) == len(nodes_given):
            try:
                value = node.target(*args, **kwargs)
            except (RuntimeError, TypeError, ValueError):
                value = None
        if getattr(value, "is_meta", False):
            value = None
    cache[node.name] = value
    return value


def export_module(module: nn.Module, example_inputs: dict[str, torch.Tensor], *, name: str) -> Any:
    """``torch.export`` in eval mode; any failure becomes one line."""
    import torch
    import torch.fx.config

    from accelsim.compress.quant import frozen_quantizers

    module.eval()
    # On failure torch logs tracebacks and graph dumps before raising; the one line below says
    # what failed, so those loggers are muted while exporting.
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    # Nor does anything read a node's Python stack trace (the walk reads nn_module_stack):
    # capturing one per node was ~20 % of a compressed ViT-B/16 export's CPU.
    emitted_stack_traces = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
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
        torch.fx.config.do_not_emit_stack_traces = emitted_stack_traces
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
