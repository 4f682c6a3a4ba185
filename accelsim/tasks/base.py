"""The task contract shared by compression (training), the integer reference and accuracy.

A task owns its data (fixed, seeded train/val/test splits read from installed files), knows which
zoo backbone it fine-tunes and how to attach a classification head, and defines its metric.
Compression's training loop only sees :class:`Batch` iterables and a metric function, so it never
imports a task.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class Batch:
    """Model keyword inputs (``input_ids``/``attention_mask``, ``pixel_values``, ...) and labels."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor


class Task(Protocol):
    name: str
    backbone: str  # zoo model name whose pre-trained weights the task fine-tunes
    num_labels: int
    metric_name: str  # e.g. "accuracy_pct"

    @property
    def input_shape(self) -> dict[str, float]:
        """The zoo input shape of the task's examples (``seq_len``, ``image_size`` or
        ``audio_seconds``): what its accuracy is measured at, so what ``run --accuracy``
        simulates."""
        ...

    def build_model(self, seed: int) -> nn.Module:
        """Pre-trained backbone plus a fresh head; ``model(**inputs).logits`` is [batch, labels]."""
        ...

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        """Deterministic batches of ``split`` (shuffled by ``seed`` for ``train`` only)."""
        ...

    def unlabeled_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """Inputs of the task's domain outside every split, shuffled by ``seed``, labels -1
        (distillation data, recipe field ``distill_unlabeled``); one line if the task has none."""
        ...

    def metric(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        """The task metric over a whole split (higher is better)."""
        ...
