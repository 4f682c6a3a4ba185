"""English sentences synthesised with espeak-ng, transcribed by Whisper: word error rate.

Text: the usage examples of WordNet 3.0 (Debian ``wordnet-base``: the double-quoted examples in
the glosses of ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv``), e.g. "he made a
note of the appointment". They are short, natural, everyday sentences written by lexicographers,
unlike fortunes (quotations full of names, verse and odd punctuation). Kept: examples of
:data:`MIN_WORDS` .. :data:`MAX_WORDS` words made of letters, apostrophes and commas only (no
digits, so no question of how a number is spoken or written), a final ``.``/``!``/``?`` removed;
duplicates (after normalization) dropped: 31,608 sentences. :data:`SENTENCES_PER_SPLIT` of them
are drawn with :data:`accelsim.tasks._data.SPLIT_SEED`, disjoint between splits: one permutation
cut into the first :data:`FIRST_TRAIN_SENTENCES` training sentences, validation, test, then the
rest of the training sentences. (The train split was those first 2,000 alone until more training
data was wanted; cut after test, the added sentences moved none of the earlier ones.)

Speakers: an espeak-ng voice is a variant (timbre) of :data:`accelsim.tasks.speech.VARIANTS` in
one of its 8 English accents; the variants are split as the speech task splits them (24 train,
8 val, 16 test), so test sentences *and* test timbres are unseen in training and validation.
Each sentence is spoken once, by a variant of its split, an accent, a speed
(:data:`SPEED_WPM`) and a pitch (:data:`PITCH`) drawn from a generator seeded by the
sentence, so a limit never changes an utterance. Audio: 16 kHz mono, silence trimmed (sox, its
repeatable dither ``-R``), clean (no noise), placed :data:`LEAD_SECONDS` into a
:data:`WINDOW_SECONDS` window: the model's input is the window's 80-bin log-mel
(:data:`WINDOW_SECONDS` x 100 frames).

Normalization (:func:`normalize`, both sides of the WER): lowercase; apostrophes deleted
("don't" -> "dont", so contractions match however they are spelled); every other character but
a-z and 0-9 becomes a space; a run of digits in a hypothesis is written out in words as espeak
would read it ("42" -> "forty two"; the references hold no digits). WER (:func:`wer_pct`) is
the word-level Levenshtein distance (substitutions + deletions + insertions) summed over a split,
over the number of reference words, in percent.

Synthesised wavs are cached under ``${ACCELSIM_CACHE:-~/.cache/accelsim}/asr/<version>``.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from accelsim import assets
from accelsim.errors import AccelsimError
from accelsim.tasks._data import (
    SPLIT_SEED,
    cache_dir,
    check_batch_size,
    disjoint_splits,
    require_file,
)
from accelsim.tasks.speech import (
    ACCENTS,
    SAMPLE_RATE_HZ,
    read_wav,
    require_tools,
    speak,
    split_variants,
)

if TYPE_CHECKING:
    import torch

    from accelsim.tasks.base import Split

WORDNET_DIR = Path(assets.ASSETS["wordnet-base"].probe).parent
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
MIN_WORDS, MAX_WORDS = 4, 16
SENTENCES_PER_SPLIT = {"train": 30_608, "val": 500, "test": 500}  # the whole corpus
FIRST_TRAIN_SENTENCES = 2000  # cut before validation; the rest of train comes after test
SPEED_WPM = (130, 200)  # espeak-ng -s, inclusive: clearly articulated, 16 words in < 8 s
PITCH = (20, 80)  # espeak-ng -p, inclusive
WINDOW_SECONDS = 10.0
# Silence before the speech: tiny.en, trained on 30 s windows that rarely start mid-word, often
# drops or mishears the first word of speech that starts at the window's first frame.
LEAD_SECONDS = 0.5
SYNTH_WORKERS = 2
CACHE_VERSION = "v2"  # v2: wav names by a 64-bit digest of the sentence
_EXAMPLE = re.compile(r'"([^"]+)"')
_PLAIN = re.compile(r"[A-Za-z', ]+")


@dataclass(frozen=True)
class Utterance:
    """One sentence spoken by one voice; every field is part of its identity."""

    sentence: str
    variant: str
    accent: str
    speed_wpm: int
    pitch: int

    @property
    def stem(self) -> str:
        """The cached wav's name. The sentence's 64-bit digest keeps the names apart: with a
        32-bit CRC two of the corpus's sentences collide, and the voice drawn from that CRC
        made their names equal too."""
        text = hashlib.sha256(self.sentence.encode()).hexdigest()[:16]
        return f"{self.variant}_{self.accent}_s{self.speed_wpm}_p{self.pitch}_{text}"


def normalize(text: str) -> list[str]:
    """The words a WER compares (see module docstring)."""
    text = re.sub(r"[^a-z0-9 ]", " ", text.lower().replace("'", "").replace("\u2019", ""))
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} ", text)
    return text.split()


_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """``n`` (>= 0) in English words, as espeak-ng reads digits: 1905 -> "one thousand nine
    hundred and five" without the "and"; beyond 999,999,999 digit by digit."""
    if n < 20:
        return _UNITS[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _UNITS[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if size <= n < 1000 * size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else
                                                    " " + number_words(rest))
    return " ".join(_UNITS[int(d)] for d in str(n))


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Word-level Levenshtein distance: the fewest substitutions, deletions and insertions that
    turn ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def wer_pct(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER in percent: word errors summed over the pairs over the reference words."""
    if len(references) != len(hypotheses):
        raise AccelsimError(f"wer: {len(references)} references but {len(hypotheses)} "
                            "hypotheses; allowed: one hypothesis per reference")
    refs = [normalize(r) for r in references]
    words = sum(len(r) for r in refs)
    if words == 0:
        raise AccelsimError("wer: the references hold no words; allowed: at least one word")
    errors = sum(word_errors(r, normalize(h)) for r, h in zip(refs, hypotheses, strict=True))
    return 100.0 * errors / words


def read_sentences(directory: Path = WORDNET_DIR) -> list[str]:
    """Every kept WordNet usage example (see module docstring), in file order."""
    if directory == WORDNET_DIR:
        assets.require("wordnet-base", "task asr")
    kept: dict[tuple[str, ...], str] = {}
    for name in WORDNET_FILES:
        path = require_file(directory / name, assets.ASSETS["wordnet-base"].install)
        for line in path.read_text(encoding="latin-1").splitlines():
            head, bar, gloss = line.partition(" | ")
            if line.startswith("  ") or not bar:
                continue
            for example in _EXAMPLE.findall(gloss):
                sentence = " ".join(example.split()).rstrip(".!?")
                words = normalize(sentence)
                if _PLAIN.fullmatch(sentence) and MIN_WORDS <= len(words) <= MAX_WORDS:
                    kept.setdefault(tuple(words), sentence)
    return list(kept.values())


@cache
def split_sentences(directory: Path = WORDNET_DIR) -> dict[Split, tuple[str, ...]]:
    """Disjoint sentence sets per split, :data:`SENTENCES_PER_SPLIT` each, by SPLIT_SEED (see
    the module docstring for the order of the cuts)."""
    sentences = read_sentences(directory)
    need = sum(SENTENCES_PER_SPLIT.values())
    if len(sentences) < need:
        raise AccelsimError(f"task asr: {len(sentences)} sentences in {directory}, the split "
                            f"needs {need}")
    first = {**SENTENCES_PER_SPLIT, "train": FIRST_TRAIN_SENTENCES}
    return disjoint_splits(sentences, first,
                           extra_train=SENTENCES_PER_SPLIT["train"] - FIRST_TRAIN_SENTENCES)


def utterances(split: Split, limit: int | None = None,
               directory: Path = WORDNET_DIR) -> list[Utterance]:
    """The first ``limit`` (all when None) utterances of ``split``, in a fixed order."""
    sentences = split_sentences(directory)[split]
    if limit is not None and not 1 <= limit <= len(sentences):
        raise AccelsimError(f"task asr: limit {limit} {split} utterances; allowed: 1 .. "
                            f"{len(sentences)} or None")
    variants = split_variants()[split]
    out = []
    for sentence in sentences[:limit]:
        rng = np.random.default_rng([SPLIT_SEED, zlib.crc32(sentence.encode()), 3])
        out.append(Utterance(
            sentence=sentence,
            variant=variants[int(rng.integers(len(variants)))],
            accent=ACCENTS[int(rng.integers(len(ACCENTS)))],
            speed_wpm=int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1)),
            pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
        ))  # fmt: skip
    return out


def synthesize(utterance: Utterance, directory: Path) -> Path:
    """The cached 16 kHz mono wav of ``utterance`` (:func:`accelsim.tasks.speech.speak`)."""
    return speak(utterance.sentence, utterance.accent, utterance.variant, utterance.speed_wpm,
                 utterance.pitch, directory / f"{utterance.stem}.wav", "asr")


def audio(chosen: Sequence[Utterance]) -> list[np.ndarray]:
    """The float32 speech of each utterance (synthesised on first use, then cached)."""
    require_tools("asr")
    directory = cache_dir("asr", CACHE_VERSION)
    with ThreadPoolExecutor(SYNTH_WORKERS) as pool:  # subprocesses: threads suffice
        paths = list(pool.map(lambda u: synthesize(u, directory), chosen))
    return [read_wav(path) for path in paths]


def require_fit(speech: Sequence[np.ndarray], window_seconds: float) -> None:
    """Raise unless every utterance of ``speech``, after its lead silence, fits the window."""
    longest = max(len(x) for x in speech) + round(LEAD_SECONDS * SAMPLE_RATE_HZ)
    if longest > round(window_seconds * SAMPLE_RATE_HZ):
        raise AccelsimError(f"task asr: an utterance of {longest / SAMPLE_RATE_HZ:.2f} s with its "
                            f"lead silence does not fit the {window_seconds:g} s window; allowed: "
                            "a longer window")


def log_mel(speech: Sequence[np.ndarray], mels: int,
            window_seconds: float = WINDOW_SECONDS) -> torch.Tensor:
    """Whisper's log-mel features ``(B, mels, 100 x window_seconds)`` of speech placed
    :data:`LEAD_SECONDS` into the window (speech that does not fit raises: it would be cut).
    Each utterance's features depend on its speech alone, not on the rest of the batch."""
    import torch
    from transformers import WhisperFeatureExtractor

    require_fit(speech, window_seconds)
    samples = round(window_seconds * SAMPLE_RATE_HZ)
    lead = np.zeros(round(LEAD_SECONDS * SAMPLE_RATE_HZ), np.float32)
    extractor = WhisperFeatureExtractor(feature_size=mels)
    feats = extractor([np.concatenate([lead, x]) for x in speech],
                      sampling_rate=SAMPLE_RATE_HZ, padding="max_length", max_length=samples,
                      return_tensors="np")["input_features"]
    return torch.from_numpy(np.ascontiguousarray(feats, np.float32))


def feature_batches(chosen: Sequence[Utterance], batch_size: int, mels: int,
                    window_seconds: float = WINDOW_SECONDS,
                    ) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """``(log-mel features, reference sentences)`` of ``chosen``, ``batch_size`` at a time, in
    order (the last batch may be short)."""
    check_batch_size(batch_size)
    for start in range(0, len(chosen), batch_size):
        part = chosen[start:start + batch_size]
        yield log_mel(audio(part), mels, window_seconds), [u.sentence for u in part]

