"""Building zoo models: Hugging Face config classes with the YAML's fields, no download.

Models are built with seeded random init, eager attention (so QK^T and PV are explicit matmuls
for the tracer) and in eval mode; ``pretrained=True`` then loads the real offline weights.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError
from accelsim.zoo.decoders import build_decoder, is_decoder
from accelsim.zoo.inputs import resolve_input_shape, structure_config
from accelsim.zoo.registry import ModelSpec, get_spec
from accelsim.zoo.weights import load_pretrained, require_weights
from accelsim.zoo.whisper import wrapper_classes

if TYPE_CHECKING:
    from torch import nn


def _hf_config(spec: ModelSpec, shape: dict[str, int], num_labels: int | None = None) -> Any:
    import transformers

    config_class = getattr(transformers, spec.hf_config)
    fields = {**spec.config_dict, **structure_config(spec, shape)}
    if num_labels is not None:
        fields["num_labels"] = num_labels
    # Eager attention: QK^T and PV stay two explicit matmuls (sdpa fuses them into one op).
    return config_class(**fields, attn_implementation="eager")


def _build_backbone(spec: ModelSpec, shape: dict[str, int]) -> nn.Module:
    if is_decoder(spec):  # the decoder stack without its LM head (zoo.decoders builds both)
        return build_decoder(spec, causal_lm=False)
    config = _hf_config(spec, shape)
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

    return wrapper_classes()[0](WhisperEncoder(config))


def _build_classifier(spec: ModelSpec, shape: dict[str, int], num_labels: int) -> nn.Module:
    if is_decoder(spec):
        raise AccelsimError(f"build_model({spec.name!r}): num_labels: decoder family "
                            f"{spec.family!r} has no classification head (allowed: None)")
    config = _hf_config(spec, shape, num_labels=num_labels)
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

    return wrapper_classes()[1](WhisperEncoder(config), num_labels)


def _pretrained_target(model: nn.Module, family: str, classifier: bool) -> nn.Module:
    """The module whose state dict the pre-trained weights fill (the encoder, not the head)."""
    if family == "whisper":  # both wrappers hold the HF WhisperEncoder as .encoder
        return model.encoder
    # HF classifiers hold the encoder under the family's name (.bert, .vit, .dinov2, .wav2vec2).
    return getattr(model, family) if classifier else model


def build_model(
    name: str,
    *,
    pretrained: bool = False,
    seed: int = 0,
    num_labels: int | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """Build zoo model ``name`` in eval mode.

    ``pretrained=True`` loads the real offline weights (an error if the model has none or its
    package is missing); ``num_labels`` adds a classification head whose ``forward(**inputs)``
    returns an object with ``.logits``. Everything not loaded is seeded random init.
    ``image_size`` (image families; default the YAML's) is the input side the model is built for:
    a random-init ViT gets position embeddings for that grid (see ``structure_config``).
    """
    import torch

    spec = get_spec(name)
    if num_labels is not None and (not isinstance(num_labels, int) or num_labels < 1):
        raise AccelsimError(f"build_model({name!r}): num_labels={num_labels!r} must be >= 1")
    if pretrained:
        require_weights(spec)
    shape = resolve_input_shape(name, image_size=image_size)
    torch.manual_seed(seed)
    if num_labels is None:
        model = _build_backbone(spec, shape)
    else:
        model = _build_classifier(spec, shape, num_labels)
    if pretrained:
        load_pretrained(spec, _pretrained_target(model, spec.family, num_labels is not None))
    return model.eval()


def build_structure(name: str, *, image_size: int | None = None) -> nn.Module:
    """The backbone on the meta device: shapes without memory or init cost (for tracing, counts).

    Built for ``image_size`` as :func:`build_model`. Its forward runs only under fake tensors
    (``torch.export``), not on real data.
    """
    import torch

    spec = get_spec(name)
    shape = resolve_input_shape(name, image_size=image_size)
    with torch.device("meta"):
        return _build_backbone(spec, shape).eval()


@functools.cache
def param_count(name: str) -> int:
    """Backbone parameter count of zoo model ``name`` (no task head) at its default input shape,
    from a meta-device build."""
    return sum(p.numel() for p in build_structure(name).parameters())
