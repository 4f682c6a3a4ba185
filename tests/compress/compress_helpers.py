"""Tiny models and a synthetic, learnable task for the compression tests (seconds, no files)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from accelsim.tasks.base import Batch

VOCAB = 32
SEQ = 8

# Tiny tensors: intra-op threads only add synchronisation (6x slower on the shared 2-core box).
torch.set_num_threads(1)


def tiny_bert(seed: int = 0, hidden: int = 32, layers: int = 2, num_labels: int = 2) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=16, num_labels=num_labels,
                        attn_implementation="eager")
    return BertForSequenceClassification(config)


def synthetic_batch(seed: int, batch_size: int = 16) -> Batch:
    """Random tokens; label 1 iff the first token is in the upper half of the vocabulary.
    The last two positions of every other row are padding (mask 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch_size, SEQ), generator=g)
    mask = torch.ones(batch_size, SEQ, dtype=torch.long)
    mask[::2, -2:] = 0
    labels = (ids[:, 0] >= VOCAB // 2).long()
    return Batch({"input_ids": ids, "attention_mask": mask}, labels)


def accuracy_pct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean() * 100.0)


@dataclass
class SyntheticTask:
    """Duck-typed ``accelsim.tasks.base.Task`` over :func:`synthetic_batch`."""

    train_batches_per_epoch: int = 4
    name: str = "synthetic"
    backbone: str = "tiny_bert"
    num_labels: int = 2
    metric_name: str = "accuracy_pct"
    calls: list[str] = field(default_factory=list)

    def build_model(self, seed: int) -> nn.Module:
        return tiny_bert(seed)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        self.calls.append(split)
        if split == "train":
            offsets = range(self.train_batches_per_epoch)
            return iter([synthetic_batch(1000 * seed + i, batch_size) for i in offsets])
        return iter([synthetic_batch(10_000 + i, batch_size) for i in range(2)])

    def unlabeled_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        self.calls.append("unlabeled")
        for i in range(100):
            batch = synthetic_batch(100_000 + 1000 * seed + i, batch_size)
            yield Batch(batch.inputs, torch.full_like(batch.labels, -1))

    def metric(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return accuracy_pct(logits, labels)
