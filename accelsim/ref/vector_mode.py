"""The executor's float ops between GEMMs, computed in the vector unit's float format.

While an :class:`VectorFormatMode` is active (a ``TorchFunctionMode``, so it sees every torch
call of the Hugging Face forward), the chip part of a model runs in ``fp32``, ``fp16`` or
``bf16`` as :mod:`accelsim.ref.vector_ops` specifies it:

* ``layer_norm``, ``softmax`` (any of its spellings) and exact-erf ``gelu`` are computed by
  ``vector_ops.layer_norm`` / ``softmax`` / ``gelu``: their rounding points and reduction order
  are the spec's, not PyTorch's;
* every other op with a floating-point result (residual adds, the attention scaling and mask,
  embedding sums, layout ops) is computed in float32 and its result rounded to the format once:
  for ``+ - * /`` and ``sqrt`` of format values this is the correctly rounded result in the
  format (vector_ops' module docstring); ops without a spec'd kernel (``tanh``, ``group_norm``,
  ``gelu`` with the tanh approximation) are rounded once from their float32 result, which the
  format's own unit may differ from in the last place;
* the modules named in ``host_modules`` (the integer model's ``float_layers``: a classifier
  head, a float patch or convolutional front end) run in float32 on the host, untouched.

``fp32`` rounds nothing (float32 is the format) but still runs the three kernels of the spec.
The integer GEMMs' dequantized outputs (float32, from numpy) are rounded by the first op that
consumes them: the conversion of a GEMM output into the vector format.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from accelsim.ref import vector_ops
from accelsim.ref.datapath import DatapathCounts

_SOFTMAX = (F.softmax, torch.softmax, Tensor.softmax)
# Element-wise ops the spec names (vector_ops.add / mul) and the graph's vector op they are.
_ADDS = (torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__, Tensor.add_)
_MULS = (torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__, Tensor.__imul__, Tensor.mul_)


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().to(torch.float32).contiguous().numpy()


def _is_float(x: object) -> bool:
    return isinstance(x, Tensor) and x.is_floating_point()


class HostAwareMode(TorchFunctionMode):
    """A datapath mode: torch calls on the chip go to :meth:`on_chip`; inside a host module
    (``enter_host``/``leave_host``, attached by :func:`host_hooks`) it steps aside and torch
    computes in float32 as the host does."""

    def __init__(self) -> None:
        super().__init__()
        self.host_depth = 0

    def enter_host(self, *_: object) -> Any:
        self.host_depth += 1

    def leave_host(self, *_: object) -> None:
        self.host_depth -= 1

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.host_depth:
            return func(*args, **kwargs)
        return self.on_chip(func, args, kwargs)

    def on_chip(self, func: Any, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define on_chip")


class VectorFormatMode(HostAwareMode):
    """Runs the chip part of a forward in ``fmt`` (module docstring). ``counts`` receives every
    vector op's elements, its error against float32 and, when recording, the op for the oracle."""

    def __init__(self, fmt: str, counts: DatapathCounts) -> None:
        super().__init__()
        vector_ops.check_format(fmt)
        self.fmt = fmt
        self.counts = counts

    def on_chip(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if func is F.layer_norm:
            return self._layer_norm(*args, **kwargs)
        if func in _SOFTMAX:
            return self._softmax(*args, **kwargs)
        if func is F.gelu and kwargs.get("approximate", "none") == "none" and len(args) == 1:
            x = _numpy(args[0])
            y = vector_ops.gelu(x, self.fmt)
            self._vector("gelu", y, _numpy(F.gelu(args[0])), {"x": x, "fmt": self.fmt})
            return self._tensor(y, args[0])
        # An in-place op's name ends in "_"; a dunder (e.g. the __get__ of a tensor's .dtype,
        # which a ViT reads from its patch conv weight) is not one and must not round its target.
        name = getattr(func, "__name__", "")
        in_place = (name.endswith("_") and not name.startswith("__")) or func in (
            Tensor.__iadd__, Tensor.__imul__)
        if self.fmt != "fp32":
            # Operands enter an op in the format: a GEMM's float32 output or a float32 parameter
            # is converted here (the identity on values already in the format). An in-place op's
            # target is an operand too, rounded where it is (the op overwrites it anyway).
            if in_place and _is_float(args[0]):
                with torch.no_grad():
                    args[0].copy_(self._round(args[0]))
            args = (*args[:1], *(self._round(a) for a in args[1:])) if in_place else tuple(
                self._round(a) for a in args)
        elementwise = func in _ADDS or func in _MULS
        # Copies: an in-place op overwrites its first operand, which the oracle must see as read.
        operands = [np.array(self._operand(v)) for v in args[:2]] if elementwise else []
        out = func(*args, **kwargs)
        if not _is_float(out):
            return out
        result = _numpy(out)
        rounded = vector_ops.round_to_format(result, self.fmt)
        if elementwise:
            kind = "add" if func in _ADDS else "mul"
            self._vector(kind, rounded, result, {"a": operands[0], "b": operands[1],
                                                 "fmt": self.fmt})
        if self.fmt == "fp32":
            return out
        if in_place:  # the caller keeps `out`
            with torch.no_grad():
                out.copy_(torch.from_numpy(rounded))
            return out
        return self._tensor(rounded, out)

    def _round(self, x: object) -> object:
        if isinstance(x, float):  # a constant (the attention scaling) is a format value too
            return float(vector_ops.round_to_format(np.float32(x), self.fmt))
        if not _is_float(x):
            return x
        return self._tensor(vector_ops.round_to_format(_numpy(x), self.fmt), x)

    @staticmethod
    def _operand(x: object) -> object:
        return _numpy(x) if isinstance(x, Tensor) else np.float32(x)

    @staticmethod
    def _tensor(values: np.ndarray, like: Tensor) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(values)).to(like.dtype)

    def _vector(self, kind: str, ours: np.ndarray, float32: np.ndarray,
                inputs: dict[str, Any]) -> None:
        graph_op = {"layer_norm": "layernorm"}.get(kind, kind)
        self.counts.add_vector(graph_op, ours, float32)
        self.counts.record(kind, ours, inputs)

    def _layer_norm(self, x: Tensor, normalized_shape: Iterable[int], weight: Tensor | None = None,
                    bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
        shape = tuple(normalized_shape)
        rows = _numpy(x).reshape(-1, int(np.prod(shape)))
        gamma = np.ones(rows.shape[1], np.float32) if weight is None else _numpy(weight).ravel()
        beta = np.zeros(rows.shape[1], np.float32) if bias is None else _numpy(bias).ravel()
        y = vector_ops.layer_norm(rows, gamma, beta, eps, self.fmt)
        reference = _numpy(F.layer_norm(x, shape, weight, bias, eps)).reshape(rows.shape)
        self._vector("layer_norm", y, reference,
                     {"x": rows, "gamma": gamma, "beta": beta, "eps": eps, "fmt": self.fmt})
        return self._tensor(y.reshape(x.shape), x)

    def _softmax(self, x: Tensor, dim: int = -1, *_: object, **__: object) -> Tensor:
        moved = _numpy(x.movedim(dim, -1))
        y = vector_ops.softmax(moved, self.fmt)
        reference = _numpy(torch.softmax(torch.from_numpy(moved), dim=-1))
        self._vector("softmax", y, reference, {"x": moved, "fmt": self.fmt})
        return torch.from_numpy(y).movedim(-1, dim).contiguous()


def host_hooks(executor: nn.Module, host_modules: Iterable[str],
               mode: HostAwareMode) -> list[Any]:
    """Forward hooks that make ``mode`` step aside inside each host module; returns the handles
    (remove them to detach)."""
    handles = []
    for name in host_modules:
        module = executor.get_submodule(name)
        handles.append(module.register_forward_pre_hook(mode.enter_host))
        handles.append(module.register_forward_hook(mode.leave_host))
    return handles
