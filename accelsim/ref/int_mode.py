"""The executor's chip part in the ``int`` vector format: I-BERT integer kernels between GEMMs.

Every on-chip tensor is integers ``q`` with one real scale ``S`` per tensor (its value is
``q * S``). The Hugging Face forward passes torch tensors around, so an on-chip tensor is a
float64 tensor holding ``q * S`` (one rounding; ``rint(x / S)`` gives ``q`` back exactly for
``|q| < 2^50``) and :class:`IntTensors` keeps ``S`` by tensor identity. The rules
(docs/integer_semantics.md §7):

* a GEMM's accumulators (int32 bias inside) become one per-tensor integer tensor on the coarsest
  channel's scale ``S = max_n s_a s_w[n]``, each column rescaled by its fixed-point multiplier
  ``s_a s_w[n] / S <= 1`` (``vector_ops.multiply_by_real``, one multiplier per column);
* a quantizer reading an integer tensor requantizes it in integers (``kernels.requantize``,
  multiplier ``S / s_a``, per channel with input smoothing);
* LayerNorm, GELU, the residual add and the attention softmax are ``vector_ops``' I-BERT kernels
  (:class:`IntFormatMode`): LayerNorm (and GroupNorm, the same kernel per group) to
  ``LN_OUT_BITS`` signed bits, GELU brought back to its
  input's resolution by a rounding shift (:func:`gelu_at_input_resolution`), adds saturated to
  ``RESIDUAL_BITS`` on the scale ``Datapath.residual_scale`` picks (:func:`residual_out_scale`;
  the operands' stored widths, which :class:`IntTensors` keeps beside their scales, bound the
  ``fitted`` rule's sum; the ``calibrated`` rule reads each add's scale by its site, the module
  executing it and its order there, :meth:`IntFormatMode.add_site`), softmax to
  ``SOFTMAX_OUT_BITS`` unsigned
  bits with the attention scaling folded into its input scale; with ``Datapath.
  gelu_table_segments`` GELU is ``vector_ops.int_gelu_table`` instead, on its input's scale;
* layout ops (views, transposes, slicing, dropout in eval) keep ``q`` and ``S``; a product with a
  Python number is a fixed-point multiply on the same scale, a product with a per-channel
  constant (a layer scale) one multiplier per channel onto the scale ``S max |constant|``;
* a float tensor entering a chip op (a host module's output, a parameter, an embedding sum) is
  converted on the host to ``HOST_BITS``-bit integers on its own scale ``max |x| / (2^(HOST_BITS-1)
  - 1)``; the ops before the first chip op stay float32 on the host;
* any other op touching an integer tensor is computed in float64 on its values and converted back
  like a host tensor; it is counted in ``DatapathCounts.float_fallbacks`` (by op name) so that a
  report shows what the integer datapath does not cover.

A study can make kernels exact (``Datapath.exact_kernels``): LayerNorm, GELU and the add are
then computed in float64 on their integer inputs' values and converted like a host tensor, and
the softmax's probabilities are exact before their quantizer; not the chip's arithmetic, but
what tells how much each kernel's approximation costs.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from accelsim.errors import AccelsimError
from accelsim.ref import kernels, vector_ops
from accelsim.ref.codes import quantize
from accelsim.ref.datapath import DatapathCounts
from accelsim.ref.vector_mode import HostAwareMode

HOST_BITS = 24
LN_OUT_BITS = 16
RESIDUAL_BITS = 24
SOFTMAX_OUT_BITS = 16
_LAYOUT = frozenset((
    "view", "reshape", "transpose", "permute", "contiguous", "flatten", "unflatten", "expand",
    "__getitem__", "select", "narrow", "squeeze", "unsqueeze", "clone", "dropout", "split",
    "chunk", "movedim", "t", "view_as", "reshape_as", "expand_as", "detach", "cat", "stack"))
_CASTS = frozenset(("to", "float", "type", "type_as", "cpu"))
_ADDS = (torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__)
_MULS = (torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__)


def gelu_at_input_resolution(out: tuple[np.ndarray, float],
                             scale: float) -> tuple[np.ndarray, float]:
    """``int_gelu``'s output ``(q_out, scale_out)`` rounded back to its input's resolution:
    shifted right (round half up) by the largest ``shift`` with ``scale_out * 2^shift <= scale``.
    Its output scale is finer than the input's by ``2 / |s_erf|``, about twice its erf integer's
    ``one``: ``2^17`` when that integer keeps its 16 bits, far less at a coarse input scale (0.3:
    ``|c_int| = 78``, 7 bits). A fixed shift for 16 bits rounded those outputs to zero."""
    q_out, scale_out = out
    shift = max(0, math.floor(math.log2(scale / scale_out)))
    return (q_out + (1 << shift >> 1)) >> shift, scale_out * 2**shift


def residual_out_scale(rule: str, scale_a: float, bits_a: int, scale_b: float,
                       bits_b: int) -> float:
    """The residual add's output scale under ``rule`` (accelsim.formats.RESIDUAL_SCALES) for
    operands stored in ``bits_a`` / ``bits_b`` signed bits: ``coarser`` is the larger scale;
    ``fitted`` the finest at which ``2^(bits_a - 1) scale_a + 2^(bits_b - 1) scale_b`` fits
    ``RESIDUAL_BITS``, clamped to ``[min, max]`` of the two scales (finer than both adds no
    information; coarser than both is ``coarser``'s rule, which may saturate)."""
    coarse, fine = max(scale_a, scale_b), min(scale_a, scale_b)
    if rule == "coarser":
        return coarse
    bound = math.ldexp(scale_a, bits_a - 1) + math.ldexp(scale_b, bits_b - 1)
    return min(coarse, max(fine, bound / (2 ** (RESIDUAL_BITS - 1) - 1)))


def calibrated_add_scale(peak: float) -> float:
    """The ``calibrated`` rule's output scale of an add whose sums reached ``peak`` in magnitude
    on calibration inputs: ``peak`` on the residual width's largest code (0 when the sums were
    all 0; the add then takes its finer operand's scale)."""
    return peak / (2 ** (RESIDUAL_BITS - 1) - 1)


def _per_channel(parameter: Tensor | None, n: int, default: float) -> np.ndarray:
    """A norm's affine ``parameter`` as ``n`` float64 values, ``default`` when it has none."""
    if parameter is None:
        return np.full(n, default)
    return parameter.detach().double().numpy().ravel()


class IntTensors:
    """The scales and stored widths (signed bits) of the on-chip integer tensors, by tensor
    identity (see the module docstring)."""

    def __init__(self) -> None:
        self._formats: dict[int, tuple[float, int]] = {}

    def tensor(self, q: np.ndarray, scale: float, bits: int) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(q, dtype=np.int64).astype(np.float64) * scale)
        self._formats[id(t)] = (float(scale), int(bits))
        weakref.finalize(t, self._formats.pop, id(t), None)
        return t

    def _stored(self, x: object) -> tuple[float, int] | None:
        return self._formats.get(id(x)) if isinstance(x, Tensor) else None

    def scale(self, x: object) -> float | None:
        stored = self._stored(x)
        return None if stored is None else stored[0]

    def bits(self, x: object) -> int:
        """The signed width ``x`` is stored in; ``HOST_BITS`` for a host tensor (converted so)."""
        stored = self._stored(x)
        return HOST_BITS if stored is None else stored[1]

    def host_tensor(self, x: Tensor) -> Tensor:
        """A float tensor converted on the host (``HOST_BITS`` on its own scale)."""
        return self.tensor(*self.ints(x), HOST_BITS)

    def ints(self, x: Tensor) -> tuple[np.ndarray, float]:
        """``(q, S)`` of an on-chip tensor, or of a float tensor converted on the host."""
        scale = self.scale(x)
        values = x.detach().to(torch.float64).contiguous().numpy()
        if scale is None:
            top = float(np.abs(values).max(initial=0.0))
            scale = (top if top > 0 else 1.0) / (2 ** (HOST_BITS - 1) - 1)
        return np.rint(values / scale).astype(np.int64), scale

    def float32(self, x: object) -> object:
        """A host module's view of an on-chip tensor: its value in float32."""
        return x.to(torch.float32) if self.scale(x) is not None else x


class IntFormatMode(HostAwareMode):
    """The ``int`` format's vector ops on the executor's torch calls (module docstring)."""

    def __init__(self, counts: DatapathCounts, tensors: IntTensors,
                 exact_kernels: tuple[str, ...] = (), gelu_table_segments: int = 0,
                 residual_scale: str = "coarser",
                 residual_add_scales: dict[str, float] | None = None) -> None:
        super().__init__()
        self.counts = counts
        self.tensors = tensors
        self.exact_kernels = frozenset(exact_kernels)
        self.gelu_table_segments = gelu_table_segments
        self.residual_scale = residual_scale
        self.residual_add_scales = dict(residual_add_scales or {})
        # Set to {} to calibrate: each add site's largest |sum| over the forwards.
        self.add_peaks: dict[str, float] | None = None
        self._modules: list[list] = []  # [name, adds so far] of each module running, innermost last

    def enter_module(self, name: str) -> None:
        self._modules.append([name, 0])

    def leave_module(self) -> None:
        self._modules.pop()

    def add_site(self) -> str:
        """The next residual add's site: ``module:order``, the innermost module running and the
        number of adds it has done so far in this call. A site names one add of the model
        whatever else a forward runs (a Whisper decode step does not run the encoder that the
        first step ran). The executor tracks modules (``ref.execute``); without that tracking
        (QAT's emulation, which refuses the ``calibrated`` rule) every site is ``:0``."""
        if not self._modules:
            return ":0"
        frame = self._modules[-1]
        frame[1] += 1
        return f"{frame[0]}:{frame[1] - 1}"

    def enter_host(self, module: object, args: tuple) -> tuple:
        """A host module reads float32: integer tensors entering it are dequantized."""
        super().enter_host()
        return tuple(self.tensors.float32(a) for a in args)

    def on_chip(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if func is F.layer_norm:
            return self._layer_norm(*args, **kwargs)
        if func is F.group_norm:
            return self._group_norm(*args, **kwargs)
        if func is F.gelu and len(args) == 1 and kwargs.get("approximate", "none") == "none":
            return self._gelu(args[0])
        tensors = [a for a in args if isinstance(a, Tensor)]
        # torch.cat / torch.stack take their operands as one sequence (DINOv2's head input is
        # the CLS token concatenated with the mean patch token).
        listed = [t for a in args if isinstance(a, list | tuple) for t in a
                  if isinstance(t, Tensor)]
        on_chip = [a for a in (*tensors, *listed) if self.tensors.scale(a) is not None]
        if not on_chip:
            return func(*args, **kwargs)  # before the chip: host float32
        name = getattr(func, "__name__", str(func))
        if func in _ADDS and len(tensors) == 2 and not kwargs:
            return self._add(*tensors)
        if func in _MULS and len(args) == 2 and isinstance(args[1], int | float):
            q, scale = self.tensors.ints(args[0])
            product = vector_ops.multiply_by_real(q, float(args[1]))
            self.counts.add_vector("mul", product * scale, q * scale * float(args[1]))
            self.counts.record("multiply_by_real", product, {"q": q, "real": float(args[1])})
            growth = max(0, math.ceil(math.log2(abs(float(args[1]))))) if args[1] else 0
            return self.tensors.tensor(product, scale, self.tensors.bits(args[0]) + growth)
        if func in _MULS and len(tensors) == 2 and len(on_chip) == 1 and not kwargs:
            constant = tensors[1] if tensors[0] is on_chip[0] else tensors[0]
            if constant.ndim == 1 and constant.shape[0] == on_chip[0].shape[-1]:
                return self._channel_mul(on_chip[0], constant)
        if name in _CASTS and len(on_chip) == 1 and not kwargs.get("device"):
            return on_chip[0]  # the float64 carrier stays exact; host hooks convert to float32
        out = func(*args, **kwargs)
        scales = {self.tensors.scale(a) for a in on_chip}
        if name in _LAYOUT and len(scales) == 1:
            return self._keep_scale(out, scales.pop(),
                                    max(self.tensors.bits(a) for a in on_chip))
        return self._fallback(name, out)

    def _keep_scale(self, out: Any, scale: float, bits: int) -> Any:
        if isinstance(out, tuple | list):
            return type(out)(self._keep_scale(o, scale, bits) for o in out)
        if not isinstance(out, Tensor) or not out.is_floating_point():
            return out
        q = np.rint(out.detach().to(torch.float64).numpy() / scale)
        return self.tensors.tensor(q, scale, bits)

    def _fallback(self, name: str, out: Any) -> Any:
        if not isinstance(out, Tensor) or not out.is_floating_point():
            return out
        self.counts.float_fallbacks[name] = self.counts.float_fallbacks.get(name, 0) + out.numel()
        return self.tensors.host_tensor(out)

    def _vector(self, kind: str, output: tuple, inputs: dict[str, Any], graph_op: str,
                reference: np.ndarray) -> None:
        q_out, scale_out = output
        self.counts.add_vector(graph_op, q_out * scale_out, reference)
        self.counts.record(kind, output, inputs)

    def _exact(self, graph_op: str, reference: np.ndarray) -> Tensor:
        """An exact kernel's output: its float64 value converted to integers like a host
        tensor (no chip kernel ran, so nothing for the oracle)."""
        self.counts.add_vector(graph_op, reference, reference)
        return self.tensors.host_tensor(torch.from_numpy(reference))

    def _layer_norm(self, x: Tensor, normalized_shape: tuple, weight: Tensor | None = None,
                    bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
        q, scale = self.tensors.ints(x)
        n = int(np.prod(tuple(normalized_shape)))
        rows = q.reshape(-1, n)
        gamma, beta = _per_channel(weight, n, 1.0), _per_channel(bias, n, 0.0)
        reference = F.layer_norm(torch.from_numpy(rows * scale), (n,),
                                 None if weight is None else weight.double(),
                                 None if bias is None else bias.double(), eps).detach().numpy()
        if "layer_norm" in self.exact_kernels:
            return self._exact("layernorm", reference.reshape(q.shape))
        out = vector_ops.int_layer_norm(rows, scale, gamma, beta, LN_OUT_BITS, eps)
        self._vector("int_layer_norm", out, {"q": rows, "scale": scale, "gamma": gamma,
                                             "beta": beta, "out_bits": LN_OUT_BITS, "eps": eps},
                     "layernorm", reference)
        return self.tensors.tensor(out[0].reshape(q.shape), out[1], LN_OUT_BITS)

    def _group_norm(self, x: Tensor, num_groups: int, weight: Tensor | None = None,
                    bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
        """wav2vec2's feature-encoder GroupNorm: ``vector_ops.int_group_norm``, the LayerNorm
        kernel over each group (the graph prices it as a LayerNorm of the same elements)."""
        q, scale = self.tensors.ints(x)
        channels = q.shape[1]
        gamma, beta = _per_channel(weight, channels, 1.0), _per_channel(bias, channels, 0.0)
        reference = F.group_norm(torch.from_numpy(q * scale), num_groups,
                                 None if weight is None else weight.double(),
                                 None if bias is None else bias.double(), eps).numpy()
        if "layer_norm" in self.exact_kernels:
            return self._exact("layernorm", reference)
        out = vector_ops.int_group_norm(q, scale, num_groups, gamma, beta, LN_OUT_BITS, eps)
        self._vector("int_group_norm", out, {"q": q, "scale": scale, "groups": num_groups,
                                             "gamma": gamma, "beta": beta,
                                             "out_bits": LN_OUT_BITS, "eps": eps},
                     "layernorm", reference)
        return self.tensors.tensor(*out, LN_OUT_BITS)

    def _gelu(self, x: Tensor) -> Tensor:
        q, scale = self.tensors.ints(x)
        reference = F.gelu(torch.from_numpy(q * scale)).numpy()
        if "gelu" in self.exact_kernels:
            return self._exact("gelu", reference)
        if self.gelu_table_segments:
            out = vector_ops.int_gelu_table(q, scale, self.gelu_table_segments)
            self._vector("int_gelu_table", out, {"q": q, "scale": scale,
                                                 "segments": self.gelu_table_segments},
                         "gelu", reference)
            return self.tensors.tensor(*out, self.tensors.bits(x))  # |GELU(x)| <= |x|
        out = vector_ops.int_gelu(q, scale)
        self._vector("int_gelu", out, {"q": q, "scale": scale}, "gelu", reference)
        # Back at the input's resolution or up to twice finer: one bit more than the input.
        return self.tensors.tensor(*gelu_at_input_resolution(out, scale),
                                   self.tensors.bits(x) + 1)

    def _channel_mul(self, x: Tensor, constant: Tensor) -> Tensor:
        """An on-chip tensor times a per-channel constant (DINOv2's layer scale): one Q31
        multiplier per channel, ``constant / max |constant|``, onto the scale ``S max |constant|``
        so that the largest channel keeps every bit of ``q``."""
        q, scale = self.tensors.ints(x)
        reals = constant.detach().double().numpy()
        top = float(np.abs(reals).max(initial=0.0)) or 1.0
        product = vector_ops.multiply_by_real(q, reals / top)
        self.counts.add_vector("mul", product * (scale * top), q * scale * reals)
        self.counts.record("multiply_by_real", product, {"q": q, "real": reals / top})
        # |product| <= |q|: the input's width
        return self.tensors.tensor(product, scale * top, self.tensors.bits(x))

    def _add(self, a: Tensor, b: Tensor) -> Tensor:
        (qa, sa), (qb, sb) = self.tensors.ints(a), self.tensors.ints(b)
        exact_sum = qa * sa + qb * sb
        site = self.add_site()
        if self.add_peaks is not None:
            peak = float(np.abs(exact_sum).max(initial=0.0))
            self.add_peaks[site] = max(self.add_peaks.get(site, 0.0), peak)
        if "add" in self.exact_kernels:
            return self._exact("add", exact_sum)
        if self.residual_scale == "calibrated":
            s_out = max(self._calibrated_scale(site), min(sa, sb))
        else:
            s_out = residual_out_scale(self.residual_scale, sa, self.tensors.bits(a), sb,
                                       self.tensors.bits(b))
        out = vector_ops.int_add(qa, sa, qb, sb, RESIDUAL_BITS, s_out)
        self._vector("int_add", out, {"qa": qa, "scale_a": sa, "qb": qb, "scale_b": sb,
                                      "out_bits": RESIDUAL_BITS, "out_scale": s_out}, "add",
                     exact_sum)
        return self.tensors.tensor(out[0], out[1], RESIDUAL_BITS)

    def _calibrated_scale(self, site: str) -> float:
        scale = self.residual_add_scales.get(site)
        if scale is None:
            raise AccelsimError(f"datapath: residual_scale calibrated: the integer model has no "
                                f"scale for the add at {site}; allowed: a model whose residual "
                                "adds were calibrated (accelsim.ref.execute."
                                "calibrate_residual_adds), or residual_scale coarser, fitted")
        return scale


def int_softmax_codes(acc: np.ndarray, scale: float, keep: np.ndarray | None, probs: Any,
                      counts: DatapathCounts, exact: bool = False) -> np.ndarray:
    """The attention softmax in integers: ``int_softmax`` of the scores (``scale`` with the
    attention scaling folded in), requantized to the probabilities quantizer's codes; or
    (``exact``) the float64 softmax quantized to them."""
    q = acc.astype(np.int64)
    scores = q * scale
    masked = np.where(keep, scores, -np.inf) if keep is not None else scores
    reference = torch.softmax(torch.from_numpy(masked), dim=-1).numpy()
    if exact:
        exact_probs = np.nan_to_num(reference)
        counts.add_vector("softmax", exact_probs, exact_probs)
        return quantize(exact_probs, probs.scale, probs.zero_point, probs.qmin, probs.qmax)
    out = vector_ops.int_softmax(q, scale, SOFTMAX_OUT_BITS, keep)
    counts.add_vector("softmax", out[0] * out[1], np.nan_to_num(reference))
    counts.record("int_softmax", out, {"q": q, "scale": scale, "out_bits": SOFTMAX_OUT_BITS,
                                       "keep": keep})
    rows = out[0].reshape(-1, out[0].shape[-1])  # < 2^SOFTMAX_OUT_BITS: int32
    multiplier = math.ldexp(1.0, -SOFTMAX_OUT_BITS) / float(probs.scale)
    codes = kernels.requantize(rows.astype(np.int32), multiplier, probs.zero_point, probs.qmin,
                               probs.qmax)
    counts.record("requantize", codes, {"acc": rows.astype(np.int32), "multiplier": multiplier,
                                        "zero_point": probs.zero_point, "qmin": probs.qmin,
                                        "qmax": probs.qmax})
    return codes.reshape(out[0].shape)
