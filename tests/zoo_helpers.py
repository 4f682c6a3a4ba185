"""Tiny zoo models compressed for the datapath tests: generated inputs and a calibrated
W4A4 + 2:4 copy with non-zero biases (seconds, no files)."""

from __future__ import annotations

import torch

from accelsim import zoo
from accelsim.compress.apply import apply_recipe, calibrate
from accelsim.compress.recipe import load_recipe
from accelsim.tasks.base import Batch


def zoo_batches(name: str, count: int = 1, size: int = 2, seed: int = 50) -> list[Batch]:
    """``count`` batches of ``size`` generated inputs for zoo model ``name`` (seeds ``seed``,
    ``seed + 1``, ...), with placeholder labels."""
    return [Batch(inputs=zoo.example_inputs(name, batch=size, seed=seed + i),
                  labels=torch.zeros(size, dtype=torch.long)) for i in range(count)]


def calibrated_w4a4_sp24(name: str) -> torch.nn.Module:
    """Zoo model ``name`` under ``w4a4_sp24``, calibrated on two generated batches, in eval mode."""
    recipe = load_recipe("w4a4_sp24")
    model = zoo.build_model(name, seed=0)
    with torch.no_grad():  # HF initialises biases to 0; trained models have real ones
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.1)
    apply_recipe(model, recipe)
    calibrate(model, zoo_batches(name, 2, 4), recipe)
    return model.eval()
