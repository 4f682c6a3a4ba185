"""Analytic MAC counts of zoo backbones from their hyperparameters alone: an independent check
on the tracer (tests compare the two)."""

from __future__ import annotations

from accelsim.zoo.decoders import dims, is_decoder
from accelsim.zoo.inputs import WHISPER_HOP_SAMPLES
from accelsim.zoo.registry import get_spec


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
    if is_decoder(spec):  # the backbone: no KV cache (all seq_len positions), no LM head
        d = dims(spec)
        tokens, hidden = shape["seq_len"], d["hidden"]
        kv_width = d["kv_heads"] * hidden // d["heads"]
        ffn_linears = 3 if spec.family == "llama" else 2
        layer = (tokens * hidden * (2 * hidden + 2 * kv_width) + 2 * tokens * tokens * hidden
                 + ffn_linears * tokens * hidden * d["ffn"])
        return batch * d["layers"] * layer
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
