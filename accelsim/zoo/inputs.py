"""Input shapes of zoo models (checked against each model's config), the config fields a shape
decides, and seeded example inputs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError
from accelsim.zoo.decoders import is_decoder, max_positions, positive_int
from accelsim.zoo.registry import INPUT_OPTION, ModelSpec, get_spec

if TYPE_CHECKING:
    import torch

SAMPLE_RATE_HZ = 16_000
WHISPER_HOP_SAMPLES = 160  # 10 ms mel hop at 16 kHz: 100 frames per second


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
    positive_int(name, "batch", batch)
    given = {"seq_len": seq_len, "image_size": image_size, "audio_seconds": audio_seconds}
    option = INPUT_OPTION[spec.family]
    for key, value in given.items():
        if value is not None and key != option:
            raise AccelsimError(
                f"{name}: {key}={value!r} does not apply to family {spec.family!r} "
                f"(its shape option is {option})"
            )
    value = given[option] if given[option] is not None else spec.default_input_shape[option]
    if spec.family == "bert" or is_decoder(spec):
        limit = max_positions(spec) if is_decoder(spec) else cfg.get("max_position_embeddings", 512)
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
        if spec.family == "vit" and spec.weights is not None and value != cfg["image_size"]:
            # A random-init ViT is built for any grid (structure_config); learned position
            # embeddings fit one grid, and silently interpolating them would change the model.
            raise AccelsimError(
                f"{name}: image_size={value!r} does not fit the model's pre-trained position "
                f"embeddings (allowed: {cfg['image_size']})"
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


def structure_config(spec: ModelSpec, shape: dict[str, int]) -> dict[str, Any]:
    """HF config fields a resolved input shape decides, over the YAML's.

    A ViT's position embeddings have one row per patch of its grid (plus CLS), so ViT at 384 px
    is the model built with ``image_size=384``, as HF's ``google/vit-base-patch16-384`` config.
    Every other family's parameters do not depend on the input shape (DINOv2 interpolates its
    position embeddings at run time).
    """
    if spec.family == "vit":
        return {"image_size": shape["image_size"]}
    return {}


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
    if is_decoder(spec):  # causal: no padding mask needed
        return {"input_ids": torch.randint(0, cfg["vocab_size"], (batch, shape["seq_len"]),
                                           generator=gen)}
    if spec.family in ("vit", "dinov2"):
        side = shape["image_size"]
        channels = cfg.get("num_channels", 3)
        return {"pixel_values": torch.randn(batch, channels, side, side, generator=gen)}
    if spec.family == "wav2vec2":
        return {"input_values": torch.randn(batch, shape["audio_samples"], generator=gen)}
    frames = shape["audio_samples"] // WHISPER_HOP_SAMPLES
    return {"input_features": torch.randn(batch, cfg["num_mel_bins"], frames, generator=gen)}
