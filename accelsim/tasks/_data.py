"""Helpers shared by the task loaders: cache folder, seeded class-balanced splits, batching."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from accelsim.tasks.base import Batch, Split

SPLITS: tuple[Split, ...] = ("train", "val", "test")
T = TypeVar("T")
# The split itself never depends on a caller's seed: every run, test and table row sees the same
# examples. Caller seeds only shuffle the training order.
SPLIT_SEED = 20221128


def cache_root() -> Path:
    """``${ACCELSIM_CACHE:-~/.cache/accelsim}`` (outside git), not created."""
    return Path(os.environ.get("ACCELSIM_CACHE", Path.home() / ".cache" / "accelsim"))


def cache_dir(*parts: str) -> Path:
    """``cache_root()/<parts>``, created on demand."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_file(path: Path, install: str) -> Path:
    """``path`` if it exists, else the one-line error that says how to install it."""
    if not path.exists():
        raise AccelsimError(f"task data: {path} not found; install it with: {install}")
    return path


@dataclass(frozen=True)
class SplitSizes:
    """Examples per class in each split (a class with fewer examples raises)."""

    train: int
    val: int
    test: int

    def of(self, split: Split) -> int:
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def scaled(self, limit: int | None, num_classes: int) -> SplitSizes:
        """Per-class sizes capped so that no split exceeds ``limit`` examples in total."""
        if limit is None:
            return self
        if limit < num_classes:
            raise AccelsimError(
                f"task limit: {limit} is below the number of classes {num_classes}; "
                f"allowed: an integer >= {num_classes} or None"
            )
        cap = limit // num_classes
        return SplitSizes(min(self.train, cap), min(self.val, cap), min(self.test, cap))


def balanced_split(
    labels: np.ndarray, sizes: SplitSizes, num_classes: int, where: str
) -> dict[Split, np.ndarray]:
    """Disjoint per-class index sets, drawn with :data:`SPLIT_SEED`; sorted within each split."""
    rng = np.random.default_rng(SPLIT_SEED)
    picked: dict[Split, list[np.ndarray]] = {s: [] for s in SPLITS}
    need = sizes.train + sizes.val + sizes.test
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < need:
            raise AccelsimError(
                f"{where}: class {c} has {len(idx)} examples, the split needs {need}"
            )
        idx = rng.permutation(idx)
        picked["train"].append(idx[: sizes.train])
        picked["val"].append(idx[sizes.train : sizes.train + sizes.val])
        picked["test"].append(idx[sizes.train + sizes.val : need])
    return {s: np.sort(np.concatenate(picked[s])) for s in SPLITS}


def disjoint_splits(items: Sequence[T], counts: Mapping[Split, int],
                    extra_train: int = 0) -> dict[Split, tuple[T, ...]]:
    """``counts[split]`` of ``items`` per split, disjoint, drawn by one permutation seeded by
    :data:`SPLIT_SEED` and cut in split order; then ``extra_train`` more items, cut after the
    last split, join the end of train. So growing ``extra_train`` moves no item of any split:
    a run on the first ``counts["train"]`` training items is unchanged. (The caller checks
    there are enough.)"""
    picked = np.random.default_rng(SPLIT_SEED).permutation(len(items))
    out: dict[Split, tuple[T, ...]] = {}
    start = 0
    for split in SPLITS:
        out[split] = tuple(items[i] for i in picked[start:start + counts[split]])
        start += counts[split]
    out["train"] += tuple(items[i] for i in picked[start:start + extra_train])
    return out


def endless_passes(n: int, batch_size: int, seed: int, task: str) -> Iterator[np.ndarray]:
    """Index batches over ``range(n)``, pass after pass, each pass in a new order drawn by one
    generator seeded with ``seed``: the stream of ``task``'s unlabelled pool. Checked on the
    call, not at the first batch."""
    check_batch_size(batch_size)
    if n == 0:
        raise AccelsimError(f"{task}: no input outside the train/val/test splits to use "
                            f"unlabelled")
    return _passes(n, batch_size, np.random.default_rng(seed))


def _passes(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    while True:
        yield from _cut(rng.permutation(n), batch_size)


def _cut(perm: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """``perm`` in consecutive pieces of ``batch_size`` (the last may be short)."""
    return (perm[start : start + batch_size] for start in range(0, len(perm), batch_size))


def unknown_labels(n: int) -> torch.Tensor:
    """Labels -1 for ``n`` unlabelled inputs (distillation only, never scored)."""
    import torch

    return torch.full((n,), -1, dtype=torch.int64)


def split_selections(n: int, split: Split, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Index batches of one pass over a split of ``n`` examples: shuffled by ``seed`` for
    ``train``, the stored order otherwise (the last batch may be short). Checked on the call."""
    check_batch_size(batch_size)
    perm = np.random.default_rng(seed).permutation(n) if split == "train" else np.arange(n)
    return _cut(perm, batch_size)


def tensor_batches(
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    split: Split,
    batch_size: int,
    seed: int,
) -> Iterator[Batch]:
    """Slice equally long tensors into :class:`Batch` es (:func:`split_selections`)."""
    import torch

    from accelsim.tasks.base import Batch

    selections = split_selections(len(labels), split, batch_size, seed)
    return (Batch({k: v[sel] for k, v in inputs.items()}, labels[sel])
            for sel in map(torch.from_numpy, selections))


def build_task_model(backbone: str, pretrained: bool, seed: int, num_labels: int) -> nn.Module:
    """Zoo backbone + a fresh ``num_labels`` head, seeded, in train mode (ready to fine-tune)."""
    from accelsim.zoo import build_model

    model = build_model(backbone, pretrained=pretrained, seed=seed, num_labels=num_labels)
    return model.train()


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise AccelsimError(f"batch_size: {batch_size} given; allowed: an integer >= 1")


def accuracy_pct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    if len(labels) == 0:
        raise AccelsimError("metric: empty split; allowed: at least one example")
    return float((logits.argmax(-1) == labels).double().mean()) * 100.0
