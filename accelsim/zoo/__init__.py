"""Model zoo: transformer encoders by name, built from Hugging Face config classes, no download.

One module per job: ``registry`` (the ``models/*.yaml`` specs), ``build`` (random-init or
pre-trained models), ``inputs`` (shapes and example inputs), ``macs`` (analytic MAC counts, an
independent check on the tracer), ``weights`` (offline pre-trained weights and their converters)
and ``whisper`` (the Whisper encoder wrappers). Importing the zoo does not import torch; building
a model does.
"""

from accelsim.zoo.build import build_model, build_structure, param_count
from accelsim.zoo.inputs import example_inputs, inputs_for_shape, resolve_input_shape
from accelsim.zoo.macs import analytic_macs
from accelsim.zoo.registry import (
    FAMILIES,
    ModelSpec,
    WeightsSource,
    cache_dir,
    get_spec,
    list_models,
)

__all__ = [
    "FAMILIES",
    "ModelSpec",
    "WeightsSource",
    "analytic_macs",
    "build_model",
    "build_structure",
    "cache_dir",
    "example_inputs",
    "get_spec",
    "inputs_for_shape",
    "list_models",
    "param_count",
    "resolve_input_shape",
]
