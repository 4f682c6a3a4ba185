"""Whisper encoder wrappers: HF's ``WhisperEncoder.forward`` insists on 30 s of mel frames, so
these run its layers on any even frame count (short clips cost proportionally less)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


def _arg_names(module: nn.Module) -> tuple[str, ...]:
    return module.forward.__code__.co_varnames


def encode(encoder: nn.Module, input_features: torch.Tensor) -> torch.Tensor:
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


@functools.cache
def wrapper_classes() -> tuple[type, type]:
    """``(WhisperEncoderModel, WhisperEncoderClassifier)``, defined on first use so that
    importing the zoo does not import torch."""
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
            return encode(self.encoder, input_features)

    class _WhisperEncoderClassifier(_WhisperWrapper):
        """Whisper encoder + mean pool over time + linear head; ``.logits`` like HF models."""

        def __init__(self, encoder: nn.Module, num_labels: int) -> None:
            super().__init__(encoder)
            self.classifier = nn.Linear(encoder.config.d_model, num_labels)

        def forward(self, input_features: torch.Tensor) -> SequenceClassifierOutput:
            # HF's output class: same .logits as the other families, and torch.export knows it.
            hidden = encode(self.encoder, input_features)
            return SequenceClassifierOutput(logits=self.classifier(hidden.mean(dim=1)))

    _WhisperEncoderModel.__name__ = _WhisperEncoderModel.__qualname__ = "WhisperEncoderModel"
    _WhisperEncoderClassifier.__name__ = "WhisperEncoderClassifier"
    _WhisperEncoderClassifier.__qualname__ = "WhisperEncoderClassifier"
    return _WhisperEncoderModel, _WhisperEncoderClassifier
