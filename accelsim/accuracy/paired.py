"""Paired comparison of two systems' word errors on the same utterances: the WER difference
and its bootstrap confidence interval.

Two recognizers scored on the same utterances make correlated errors (the hard utterances are
hard for both), so the uncertainty of their *difference* is much smaller than either WER's own
standard error. The percentile bootstrap over utterances (Bisani and Ney, "Bootstrap estimates
for confidence intervals in ASR performance evaluation", ICASSP 2004) draws utterances with
replacement, the same draw for both systems, and recomputes the corpus-level WER difference
(errors summed over the draw, over the draw's reference words). Pure numpy, seeded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from accelsim.errors import AccelsimError


@dataclasses.dataclass(frozen=True)
class PairedWer:
    """``candidate - baseline`` in WER points, with its bootstrap interval.

    ``share_within_margin`` is the fraction of resamples whose difference is at most
    ``margin_pct`` points: how often a draw of utterances like these would put the candidate
    within that margin of the baseline."""

    utterances: int
    reference_words: int
    baseline_wer_pct: float
    candidate_wer_pct: float
    difference_pct: float
    low_pct: float
    high_pct: float
    confidence: float
    margin_pct: float
    share_within_margin: float
    resamples: int
    seed: int


def paired_wer(baseline_errors: Sequence[int], candidate_errors: Sequence[int],
               reference_words: Sequence[int], *, resamples: int = 10_000,
               confidence: float = 0.95, margin_pct: float = 1.0, seed: int = 0) -> PairedWer:
    """The paired bootstrap of ``candidate - baseline`` WER over utterances; per-utterance word
    errors (:func:`accelsim.tasks.asr.word_errors`) and reference word counts, in one order."""
    count = len(reference_words)
    if len(baseline_errors) != count or len(candidate_errors) != count:
        raise AccelsimError(f"paired WER: {len(baseline_errors)} baseline and "
                            f"{len(candidate_errors)} candidate utterances for {count} "
                            "references; allowed: one of each per reference")
    if count == 0 or sum(reference_words) <= 0:
        raise AccelsimError("paired WER: no reference words; allowed: at least one utterance "
                            "with words")
    if resamples < 1:
        raise AccelsimError(f"paired WER: resamples {resamples}; allowed: at least 1")
    if not 0 < confidence < 1:
        raise AccelsimError(f"paired WER: confidence {confidence:g}; allowed: 0 < confidence < 1")
    base = np.asarray(baseline_errors, dtype=np.int64)
    cand = np.asarray(candidate_errors, dtype=np.int64)
    words = np.asarray(reference_words, dtype=np.int64)
    if (base < 0).any() or (cand < 0).any() or (words < 0).any():
        raise AccelsimError("paired WER: a negative word or error count; allowed: counts >= 0")
    draws = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    drawn_words = words[draws].sum(axis=1)
    # A draw of only empty references has no WER; it counts as no difference.
    differences = np.divide(100.0 * (cand[draws].sum(axis=1) - base[draws].sum(axis=1)),
                            drawn_words, out=np.zeros(resamples), where=drawn_words > 0)
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    total = int(words.sum())
    return PairedWer(
        utterances=count, reference_words=total,
        baseline_wer_pct=100.0 * int(base.sum()) / total,
        candidate_wer_pct=100.0 * int(cand.sum()) / total,
        difference_pct=100.0 * int(cand.sum() - base.sum()) / total,
        low_pct=float(low), high_pct=float(high), confidence=confidence,
        margin_pct=margin_pct,
        share_within_margin=float((differences <= margin_pct).mean()),
        resamples=resamples, seed=seed)
