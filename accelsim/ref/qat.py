"""QAT on a chip datapath: the fake-quant model's forward, valued as the integer reference computes
it on that datapath, with straight-through gradients (recipe field ``datapath``).

Inside :func:`emulate_datapath` every forward of the compressed model runs twice in lockstep:

* the **training path** is the fake-quant model as it is (float32 PyTorch ops, ``F.linear`` of
  fake-quantized operands, the float attention), and carries the gradients;
* the **reference path** is :mod:`accelsim.ref.execute` on ``Datapath``: each quantized linear
  an :class:`~accelsim.ref.execute.IntLinearModule` of the layer as it stands at this step
  (:func:`~accelsim.compress.export.export_gemms`), each attention
  :func:`~accelsim.ref.execute.int_attention_forward`, every other op on the chip the vector
  unit's (:class:`~accelsim.ref.vector_mode.VectorFormatMode` in ``fp32 | fp16 | bf16``,
  :class:`~accelsim.ref.int_mode.IntFormatMode` in ``int``: I-BERT's integer kernels), the
  integer model's host modules (head, patch convolution) in float32 on both paths.

Each op's result takes the reference path's value with the training path's gradient:
``y = ref + (train - train.detach())``, so the loss sees the chip's logits and every op
downstream is evaluated, and differentiated, at the chip's values. The reference path keeps its
own tensors (``int`` carries the exact integers and their scales) and never reads the rounded
float32 values of the training path. So a forward inside the emulation returns the integer
reference's logits on that datapath (``run_int_model`` of the exported model, bit for bit in
eval mode; tests/compress/test_compress_datapath.py), not an approximation of them.

Two training-only ops have no chip counterpart: dropout draws one mask and applies it on both
paths (a product with the mask, a vector-unit multiply), and the attention probabilities' dropout
is left out of the reference path (the chip has none).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from accelsim.compress.apply import (
    ATTN_IMPLEMENTATION,
    PLAN_ATTR,
    CompressionPlan,
    quant_linears,
    quantized_attention_forward,
)
from accelsim.compress.export import IntModel, export_gemms
from accelsim.errors import AccelsimError
from accelsim.ref import execute, int_mode, vector_mode
from accelsim.ref.datapath import Datapath, DatapathCounts

QAT_ATTN_IMPLEMENTATION = "accelsim_qat"
EMULATION_ATTR = "accelsim_qat_emulation"  # the DatapathEmulation of a quantized attention module
_DROPOUTS = (F.dropout, torch.dropout, torch.nn.functional.dropout1d,
             torch.nn.functional.dropout2d)
_IN_PLACE = (Tensor.__iadd__, Tensor.__imul__, Tensor.__isub__, Tensor.__itruediv__)


def _has_float(out: object) -> bool:
    if isinstance(out, tuple | list):
        return any(_has_float(o) for o in out)
    return isinstance(out, Tensor) and out.is_floating_point()


def _map(function: Callable[[object], object], value: object) -> object:
    """``function`` on every leaf of nested tuples and lists (a ``torch.cat`` operand list)."""
    if isinstance(value, tuple | list):
        return type(value)(_map(function, v) for v in value)
    return function(value)


def _writes_first(func: Any) -> bool:
    """An in-place op: its result is its first operand."""
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.startswith("__")) or func in _IN_PLACE


def _may_write_first(func: Any) -> bool:
    """An op whose first operand the vector mode may round in place (vector_mode's test)."""
    return getattr(func, "__name__", "").endswith("_") or func in _IN_PLACE


def _dropout_args(args: tuple, kwargs: dict) -> tuple[float, bool]:
    """``(p, training)`` of a ``F.dropout``-style call (``input, p=0.5, training=True``)."""
    p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
    training = args[2] if len(args) > 2 else kwargs.get("training", kwargs.get("train", True))
    return float(p), bool(training)


class DatapathEmulation(vector_mode.HostAwareMode):
    """The two paths of the module docstring for one compressed ``model`` on ``datapath``.
    ``counts`` accumulates over its forwards (accumulator saturations included)."""

    def __init__(self, model: nn.Module, datapath: Datapath) -> None:
        super().__init__()
        plan: CompressionPlan | None = getattr(model, PLAN_ATTR, None)
        if plan is None or not plan.quantized_linears:
            raise AccelsimError("datapath: QAT on a chip datapath needs a model compressed with "
                                "a quantized recipe (apply_recipe and calibrate first)")
        if datapath.residual_scale == "calibrated":
            raise AccelsimError("datapath: QAT on residual_scale calibrated: the scales are "
                                "calibrated on the trained model, after QAT; allowed in "
                                "training: coarser, fitted")
        self.model = model
        self.plan = plan
        self.datapath = datapath
        self.counts = DatapathCounts()
        self.ints = int_mode.IntTensors() if datapath.vector_format == "int" else None
        self.inner: vector_mode.HostAwareMode | None = None
        if self.ints is not None:
            self.inner = int_mode.IntFormatMode(self.counts, self.ints, datapath.exact_kernels,
                                                datapath.gelu_table_segments,
                                                datapath.residual_scale)
        elif datapath.vector_format is not None:
            self.inner = vector_mode.VectorFormatMode(datapath.vector_format, self.counts)
        self._shadows: dict[int, Tensor] = {}
        self._linears: dict[str, execute.IntLinearModule] = {}
        self._attentions: dict[str, Any] = {}

    # --- the reference path's tensors, by identity of the training path's -----------------------

    def _shadow(self, train: Tensor, ref: Tensor) -> None:
        self._shadows[id(train)] = ref
        weakref.finalize(train, self._shadows.pop, id(train), None)

    def reference(self, x: object, copy: bool = False) -> object:
        """The reference path's tensor behind ``x`` (``x`` itself, detached, where both paths
        hold the same values: inputs, parameters, host outputs); a copy where an in-place op
        would otherwise write into the training path's storage."""
        if not isinstance(x, Tensor):
            return x
        ref = self._shadows.get(id(x))
        if ref is not None:
            return ref
        return x.detach().clone() if copy else x.detach()

    def combine(self, train: Any, ref: Any) -> Any:
        """``ref``'s values with ``train``'s gradient, elementwise over tuples and lists."""
        if isinstance(train, tuple | list) and isinstance(ref, tuple | list) and len(
                train) == len(ref):
            return type(train)(self.combine(t, r) for t, r in zip(train, ref, strict=True))
        if not (isinstance(train, Tensor) and train.is_floating_point() and isinstance(ref, Tensor)
                and ref.shape == train.shape):
            return train
        value = ref.detach().to(train.dtype)
        if train.requires_grad:
            # train - train.detach() is exactly 0 (NaN only where train is infinite: zeroed).
            value = value + torch.nan_to_num(train - train.detach(), nan=0.0)
        elif value is ref:
            value = value.clone()
        self._shadow(value, ref)
        return value

    # --- every torch call on the chip -------------------------------------------------------------

    def on_chip(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if func in _DROPOUTS:
            p, training = _dropout_args(args, kwargs)
            if training and p > 0:
                keep = torch.empty_like(args[0]).bernoulli_(1.0 - p) / (1.0 - p)
                return self.on_chip(torch.mul, (args[0], keep), {})
        in_place = _writes_first(func)
        copy_first = _may_write_first(func)
        ref_args = tuple(self.reference(a, copy=copy_first and i == 0) if isinstance(a, Tensor)
                         else _map(self.reference, a) for i, a in enumerate(args))
        ref_kwargs = {k: _map(self.reference, v) for k, v in kwargs.items()}
        out = func(*args, **kwargs)
        if self.inner is None or not _has_float(out):
            return out
        ref = self.inner.on_chip(func, ref_args, ref_kwargs)
        if in_place and isinstance(ref, Tensor) and isinstance(args[0], Tensor):
            self._shadow(args[0], ref)
        return self.combine(out, ref)

    # --- GEMMs --------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """The integer layers of this step: weights, steps and clips as they stand now."""
        with torch.no_grad():
            for _, layer in quant_linears(self.model):
                if layer.training and layer.weight_quant.method == "sawb":
                    # What the training forward's SAWB step will be (current_step recomputes it).
                    layer.weight_quant.init_step(layer.masked_weight())
            linears, attentions = export_gemms(self.model)
        int_model = IntModel(family=self.plan.family, recipe=self.plan.recipe, hf_config={},
                             linears=linears, attentions=attentions, dense_layers={},
                             float_layers=self.plan.float_layers, float_tensors={})
        feeds = execute.operand_projections(int_model) if self.datapath.integer_requant else {}
        self._linears = {}
        for layer in linears:
            module = execute.IntLinearModule(layer, "float", self.datapath, self.counts,
                                             feeds.get(layer.name))
            module.int_tensors = self.ints
            self._linears[layer.name] = module
        self._attentions = {a.name: a for a in attentions}

    @contextlib.contextmanager
    def _reference_path(self) -> Iterator[None]:
        """The training path's mode steps aside and the reference's vector mode, if any, runs
        every torch call (as in the executor's forward)."""
        self.enter_host()
        try:
            with self.inner if self.inner is not None else contextlib.nullcontext():
                yield
        finally:
            self.leave_host()

    def linear_output(self, name: str, x: Tensor, train: Tensor) -> Tensor:
        with self._reference_path(), torch.no_grad():
            ref = self._linears[name](self.reference(x))
        return self.combine(train, ref)

    def attention(self, module: nn.Module, name: str, query: Tensor, key: Tensor, value: Tensor,
                  attention_mask: Tensor | None, **kwargs: Any) -> tuple[Tensor, Tensor]:
        self.enter_host()
        try:
            out, probs = quantized_attention_forward(module, query, key, value, attention_mask,
                                                     **kwargs)
        finally:
            self.leave_host()
        refs = [self.reference(t) for t in (query, key, value, attention_mask)]
        setattr(module, execute.INT_ATTN_ATTR, self._attentions[name])
        setattr(module, execute.DATAPATH_ATTR, (self.datapath, self.counts, self.ints))
        try:
            with self._reference_path(), torch.no_grad():
                ref, _ = execute.int_attention_forward(module, *refs, **{**kwargs, "dropout": 0.0})
        finally:
            delattr(module, execute.INT_ATTN_ATTR)
            delattr(module, execute.DATAPATH_ATTR)
        return self.combine(out, ref), probs


def qat_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                          attention_mask: Tensor | None, **kwargs: Any) -> tuple[Tensor, Tensor]:
    """The attention function inside :func:`emulate_datapath`; outside it (a module without an
    emulation) the fake-quant one."""
    emulation = getattr(module, EMULATION_ATTR, None)
    if emulation is None:
        return quantized_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return emulation[0].attention(module, emulation[1], query, key, value, attention_mask,
                                  **kwargs)


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(QAT_ATTN_IMPLEMENTATION, qat_attention_forward)
    # The fake-quant model's mask: where the executor adds an all-zero padding mask this leaves
    # none, the same values (x + 0 = x; an all-true keep mask).
    AttentionMaskInterface.register(QAT_ATTN_IMPLEMENTATION, eager_mask)


@contextlib.contextmanager
def datapath_emulation(model: nn.Module, datapath: Datapath) -> Iterator[DatapathEmulation]:
    """Inside the block, every call of ``model`` (compressed and calibrated) computes the
    integer reference's values on ``datapath`` with the fake-quant model's gradients (module
    docstring); the hooks, the attention function and the forward go on exit."""
    emulation = DatapathEmulation(model, datapath)
    handles = vector_mode.host_hooks(model, emulation.plan.float_layers, emulation)
    for name, layer in quant_linears(model):
        handles.append(layer.register_forward_pre_hook(emulation.enter_host))

        def finish(module: nn.Module, args: tuple, output: Tensor, name: str = name) -> Tensor:
            emulation.leave_host()
            return emulation.linear_output(name, args[0], output)

        handles.append(layer.register_forward_hook(finish))
    attention_modules = [model.get_submodule(n) for n in emulation.plan.attention_modules]
    for name, module in zip(emulation.plan.attention_modules, attention_modules, strict=True):
        setattr(module, EMULATION_ATTR, (emulation, name))
    if attention_modules:
        _register_attention()
        execute._set_attn_implementation(model, QAT_ATTN_IMPLEMENTATION)
    model_forward = model.forward
    own_forward = "forward" in vars(model)

    def forward_on_datapath(*args: Any, **kwargs: Any) -> Any:
        emulation._prepare()
        with emulation:
            return model_forward(*args, **kwargs)

    model.forward = forward_on_datapath
    try:
        yield emulation
    finally:
        if own_forward:
            model.forward = model_forward
        else:
            del model.forward
        for handle in handles:
            handle.remove()
        for module in attention_modules:
            delattr(module, EMULATION_ATTR)
        if attention_modules:
            execute._set_attn_implementation(model, ATTN_IMPLEMENTATION)


def emulate_datapath(model: nn.Module,
                     fields: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """:func:`datapath_emulation` on the :class:`Datapath` of a recipe's ``datapath`` fields:
    what ``accelsim.compress.train.finetune`` takes as ``emulate_datapath``."""
    return datapath_emulation(model, Datapath(**fields))
