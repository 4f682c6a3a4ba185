"""Fashion-MNIST with the DINOv2-S ViT (patch 14).

Data: the four IDX files of the Debian ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``): 10 classes (T-shirt/top, trouser, pullover, dress, coat,
sandal, shirt, sneaker, bag, ankle boot), 28x28 gray. The split is class-balanced and fixed
(:data:`accelsim.tasks._data.SPLIT_SEED`): train 400 and val 100 per class drawn from the
official 60k training file, test 100 per class from the official 10k test file, i.e. 4000 / 1000
/ 1000 images (the training set was 2000 and the validation set 500 until fine-tuning was found
not to beat a frozen linear probe on them: docs/accuracy.md, "The vision budget"). Images are
upsampled (bilinear) to ``resolution`` px (default 56: 4x4 patches + CLS = 17 tokens, which fits
fine-tuning a 22M-parameter ViT on 2 CPU cores), repeated to 3 channels and normalised with the
ImageNet mean/std that DINOv2 was trained with. The unlabelled pool (distillation inputs, recipe
field ``distill_unlabeled``) is the rest of the official training file: 55,000 images whose
labels are never read, less any equal pixel for pixel to an image of a split.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from accelsim import assets
from accelsim.errors import AccelsimError
from accelsim.tasks._data import (
    SplitSizes,
    accuracy_pct,
    balanced_split,
    build_task_model,
    endless_passes,
    require_file,
    split_selections,
    unknown_labels,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from accelsim.tasks.base import Batch, Split

FASHION_DIR = Path(assets.ASSETS["dataset-fashion-mnist"].probe).parent
CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
INSTALL = assets.ASSETS["dataset-fashion-mnist"].install
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH = 14


def read_idx(path: Path, header_bytes: int) -> np.ndarray:
    """The uint8 payload of a gzip IDX file."""
    with gzip.open(require_file(path, INSTALL)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=header_bytes)


def read_fashion(directory: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 28, 28] uint8 and labels [N] of ``part`` ('train' or 't10k')."""
    if directory == FASHION_DIR:
        assets.require("dataset-fashion-mnist", "task fashion_mnist")
    images = read_idx(directory / f"{part}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = read_idx(directory / f"{part}-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return images, labels


@dataclass(frozen=True)
class FashionMnist:
    """The vision task (see module docstring). ``limit`` caps each split; ``tiny`` uses a tiny
    random-init DINOv2 (zoo ``dinov2_tiny``, 28 px) (for tests)."""

    limit: int | None = None
    tiny: bool = False
    resolution: int | None = None
    directory: Path = FASHION_DIR
    name: str = field(default="fashion_mnist", init=False)
    num_labels: int = field(default=len(CLASSES), init=False)
    metric_name: str = field(default="accuracy_pct", init=False)
    sizes: SplitSizes = field(default=SplitSizes(400, 100, 100), init=False)

    def __post_init__(self) -> None:
        side = self.side_px
        if side < PATCH or side % PATCH:
            raise AccelsimError(
                f"task fashion_mnist resolution: {side} given; "
                f"allowed: a positive multiple of the patch size {PATCH}"
            )

    @property
    def side_px(self) -> int:
        """Input side: ``resolution``, else 56 (28 for the tiny model, whose grid is 2x2)."""
        if self.resolution is not None:
            return self.resolution
        return 28 if self.tiny else 56

    @property
    def backbone(self) -> str:
        return "dinov2_tiny" if self.tiny else "dinov2_s"

    @property
    def input_shape(self) -> dict[str, float]:
        return {"image_size": self.side_px}

    def build_model(self, seed: int) -> nn.Module:
        return build_task_model(self.backbone, not self.tiny, seed, self.num_labels)

    @property
    def _where(self) -> str:
        return f"fashion_mnist ({self.directory})"

    @cached_property
    def _official_and_fit(self) -> tuple[np.ndarray, np.ndarray, dict[Split, np.ndarray]]:
        """The official training file's images and labels, and the indices that train and
        val take from it."""
        sizes = self.sizes.scaled(self.limit, self.num_labels)
        train_x, train_y = read_fashion(self.directory, "train")
        fit = balanced_split(train_y, SplitSizes(sizes.train, sizes.val, 0), 10, self._where)
        return train_x, train_y, fit

    @cached_property
    def _splits(self) -> dict[Split, tuple[np.ndarray, np.ndarray]]:
        sizes = self.sizes.scaled(self.limit, self.num_labels)
        train_x, train_y, fit = self._official_and_fit
        test_x, test_y = read_fashion(self.directory, "t10k")
        held = balanced_split(test_y, SplitSizes(0, 0, sizes.test), 10, self._where)["test"]
        return {
            "train": (train_x[fit["train"]], train_y[fit["train"]]),
            "val": (train_x[fit["val"]], train_y[fit["val"]]),
            "test": (test_x[held], test_y[held]),
        }

    @cached_property
    def _unlabeled(self) -> np.ndarray:
        """The official training file's images that no split takes (55,000 at full size), in
        file order, without those equal pixel for pixel to an image of a split: no validation
        or test input reaches training through the pool."""
        train_x, _, fit = self._official_and_fit
        rest = np.setdiff1d(np.arange(len(train_x)), np.concatenate(list(fit.values())))
        in_splits = {image.tobytes() for images, _ in self._splits.values() for image in images}
        keep = [i for i in rest if train_x[i].tobytes() not in in_splits]
        return train_x[np.asarray(keep, dtype=np.int64)]

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [B, 28, 28] -> normalised float [B, 3, side_px, side_px]."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        x = F.interpolate(x, size=(self.side_px,) * 2, mode="bilinear", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x.expand(-1, 3, -1, -1) - mean) / std

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        import torch

        from accelsim.tasks.base import Batch

        images, labels = self._splits[split]
        return (Batch({"pixel_values": self.pixels(images[sel])}, torch.from_numpy(labels[sel]))
                for sel in split_selections(len(labels), split, batch_size, seed))

    def unlabeled_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """The pool of :attr:`_unlabeled` with labels -1 (distillation inputs, never scored):
        an endless stream of passes, each shuffled anew by a generator seeded with ``seed``."""
        from accelsim.tasks.base import Batch

        images = self._unlabeled
        return (Batch({"pixel_values": self.pixels(images[sel])}, unknown_labels(len(sel)))
                for sel in endless_passes(len(images), batch_size, seed, self.name))

    def metric(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return accuracy_pct(logits, labels)
