"""Probes: logistic regression on frozen features, the floor a fine-tuned baseline must beat.

* ``linear_probe``: the pre-trained backbone, frozen and in eval mode, turns every example into
  one vector, the input its classification head reads: MiniLM's token states mean-pooled over
  the attention mask (the pooling all-MiniLM-L6-v2 was trained with), DINOv2's CLS token
  concatenated with the mean patch token, the Whisper encoder's states mean-pooled over time.
* ``tfidf_probe`` (text tasks): TF-IDF of words and word bigrams (sublinear term frequency,
  terms in at least 2 training texts), no network at all.

Both standardize nothing they should not: the linear probe's features are standardized with the
training split's mean and standard deviation; TF-IDF rows are L2-normalised by construction.
The inverse regularization ``C`` of the L2-penalized multinomial logistic regression (lbfgs) is
chosen on the validation split from :data:`PROBE_CS` (the smallest ``C`` among the best); the
probe fitted on the training split alone with it reads the test split once. Neither
probe depends on a seed: the features are deterministic and lbfgs is, so each is one row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from accelsim.accuracy.budgets import PROBES
from accelsim.accuracy.provenance import array_sha256, code_commit, split_sha256
from accelsim.accuracy.table import RowResult
from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from accelsim.tasks.base import Split, Task

PROBE_CS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
FEATURE_BATCH = 64
MAX_ITER = 5000


@dataclass(frozen=True)
class ProbeFit:
    """A fitted probe: accuracies in percent, the chosen ``C`` and a hash of its weights."""

    accuracy_pct: float  # test split, read once
    val_accuracy_pct: float  # at the chosen C
    c: float
    weights_sha256: str
    test_examples: int


def pooled_features(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """One vector per example from a task model's frozen backbone (module docstring)."""
    if hasattr(model, "bert"):
        hidden = model.bert(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)
    captured: list[torch.Tensor] = []
    handle = model.classifier.register_forward_pre_hook(
        lambda module, args: captured.append(args[0]))
    try:
        model(**inputs)
    finally:
        handle.remove()
    return captured[0]


def frozen_features(task: Task, model: nn.Module, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, D] (float64) and labels [N] of ``split`` in stored order."""
    import torch

    model.eval()
    features, labels = [], []
    with torch.no_grad():
        for batch in task.batches(split, FEATURE_BATCH, seed=0):
            features.append(pooled_features(model, batch.inputs).double().numpy())
            labels.append(batch.labels.numpy())
    return np.concatenate(features), np.concatenate(labels)


def fit_probe(train: tuple[Any, np.ndarray], val: tuple[Any, np.ndarray],
              test: tuple[Any, np.ndarray], preprocessing: tuple[np.ndarray, ...] = ()
              ) -> ProbeFit:
    """L2 logistic regression: ``C`` chosen on ``val``, fit on ``train``, scored on ``test``;
    the weights hash covers the fitted weights and the ``preprocessing`` arrays."""
    from sklearn.linear_model import LogisticRegression

    def fitted(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=MAX_ITER).fit(*train)

    def score(model: LogisticRegression, split: tuple[Any, np.ndarray]) -> float:
        return 100.0 * float(np.mean(model.predict(split[0]) == split[1]))

    fits = {c: fitted(c) for c in PROBE_CS}
    # ties: the smallest C, the strongest regularization
    best_val, neg_c = max((score(model, val), -c) for c, model in fits.items())
    chosen = fits[-neg_c]
    return ProbeFit(score(chosen, test), best_val, -neg_c,
                    array_sha256(chosen.coef_, chosen.intercept_, *preprocessing), len(test[1]))


def linear_probe(task: Task, seed: int = 0) -> ProbeFit:
    """The linear probe of ``task``'s backbone (``seed`` builds the model; the unused head is
    the only part it changes)."""
    from sklearn.preprocessing import StandardScaler

    model = task.build_model(seed)
    train, val, test = (frozen_features(task, model, s) for s in ("train", "val", "test"))
    scaler = StandardScaler().fit(train[0])
    scaled = [(scaler.transform(x), y) for x, y in (train, val, test)]
    return fit_probe(*scaled, preprocessing=(scaler.mean_, scaler.scale_))


def tfidf_probe(task: Task) -> ProbeFit:
    """The TF-IDF probe of a text task (one line for a task without texts)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not hasattr(task, "texts"):
        raise AccelsimError(f"tfidf_probe: task {task.name!r} has no texts; allowed: the text "
                            f"tasks fortunes, wordnet_supersenses")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform(task.texts("train"))
    splits = [(x_train, task.labels("train"))] + [
        (vectorizer.transform(task.texts(s)), task.labels(s)) for s in ("val", "test")]
    return fit_probe(*splits)


def probe_row(task: Task, probe: str, command: str) -> RowResult:
    """Fit ``probe`` on ``task`` and return its results row (seed 0: the probes have none)."""
    if probe not in PROBES:
        raise AccelsimError(f"probe: unknown name {probe!r}; allowed: {', '.join(PROBES)}")
    start = time.monotonic()
    fit = linear_probe(task) if probe == "linear_probe" else tfidf_probe(task)
    c_range = f"{PROBE_CS[0]:g}..{PROBE_CS[-1]:g}"
    return RowResult(
        # model: the task's (a table is per task and model); the TF-IDF probe uses none of it.
        task=task.name, model=task.backbone,
        recipe=probe, accuracy_pct=round(fit.accuracy_pct, 2), measured_by="logistic_regression",
        datapath="", fake_quant_accuracy_pct=None, val_accuracy_pct=round(fit.val_accuracy_pct, 2),
        test_examples=fit.test_examples, init="frozen", fp_epochs=0, qat_epochs=0, batch_size=0,
        lr=0.0, train_minutes=round((time.monotonic() - start) / 60, 1), eval_minutes=0.0, seed=0,
        command=command, selection=f"C={fit.c:g} on val, of {c_range}", code_commit=code_commit(),
        checkpoint_sha256=fit.weights_sha256, parent_sha256="", split_sha256=split_sha256(task),
    )  # fmt: skip
