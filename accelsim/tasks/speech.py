"""Spoken keywords synthesised with espeak-ng, classified by the Whisper tiny.en encoder + a head.

Vocabulary (20 classes, in label order): the digits zero..nine and the command words yes, no, up,
down, left, right, on, off, stop, go (the Speech Commands core set).

Speakers: a voice is an espeak-ng variant (timbre: m1..m8, f1..f5, klatt..klatt4, adam, linda,
steph: 20 variants) read in one of 8 English accents. The split is **by variant**, so test
timbres never occur in training: with :data:`accelsim.tasks._data.SPLIT_SEED`, 12 variants train,
3 validate and 5 test. Each (variant, word) pair is spoken 4 times, each time with an accent,
speed (130-200 wpm) and pitch (25-75) drawn from a generator seeded by the clip's identity, and
mixed with white noise at 10-30 dB SNR: 960 / 240 / 400 clips. Audio is 16 kHz mono (sox),
centred in a 1.0 s window, and turned into Whisper's 80-bin log-mel (100 frames, i.e. 50 encoder
tokens instead of Whisper's 1500).

Generated wav files are cached under ``${ACCELSIM_CACHE:-~/.cache/accelsim}/speech/`` (outside
git); synthesis is deterministic for fixed arguments, so the cache can be deleted at any time.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from accelsim.errors import AccelsimError
from accelsim.tasks._data import (
    SPLIT_SEED,
    SPLITS,
    accuracy_pct,
    build_task_model,
    cache_dir,
    no_unlabeled_pool,
    tensor_batches,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from accelsim.tasks.base import Batch, Split

WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
)  # fmt: skip
ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)  # fmt: skip
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2",
    "f3", "f4", "f5", "klatt", "klatt2", "klatt3", "klatt4", "adam", "linda", "steph",
)  # fmt: skip
VARIANTS_PER_SPLIT = {"train": 12, "val": 3, "test": 5}
TAKES_PER_WORD = 4
SAMPLE_RATE_HZ = 16_000
WINDOW_SAMPLES = SAMPLE_RATE_HZ  # 1.0 s -> 100 mel frames
INSTALL = "apt-get install -y espeak-ng sox"


@dataclass(frozen=True)
class Clip:
    """One synthesised utterance; every field is part of its identity (and cache name)."""

    word: int
    variant: str
    accent: str
    speed_wpm: int
    pitch: int
    snr_db: float

    @property
    def stem(self) -> str:
        return f"{self.variant}_{self.accent}_{WORDS[self.word]}_s{self.speed_wpm}_p{self.pitch}"


def split_variants() -> dict[Split, tuple[str, ...]]:
    """Disjoint variant (speaker timbre) sets per split, fixed by SPLIT_SEED."""
    perm = [VARIANTS[i] for i in np.random.default_rng(SPLIT_SEED).permutation(len(VARIANTS))]
    out: dict[Split, tuple[str, ...]] = {}
    start = 0
    for split in SPLITS:
        out[split] = tuple(perm[start : start + VARIANTS_PER_SPLIT[split]])
        start += VARIANTS_PER_SPLIT[split]
    return out


def clips(split: Split, per_word: int | None = None) -> list[Clip]:
    """The clips of ``split``, ``per_word`` of each word (all when None), in a fixed order."""
    out = []
    for variant in split_variants()[split]:
        for word in range(len(WORDS)):
            # The draw depends only on the clip's identity, so limits never change a clip.
            rng = np.random.default_rng([SPLIT_SEED, zlib.crc32(variant.encode()), word])
            accents = rng.permutation(len(ACCENTS))[:TAKES_PER_WORD]
            for take in accents:
                out.append(
                    Clip(
                        word=word,
                        variant=variant,
                        accent=ACCENTS[take],
                        speed_wpm=int(rng.integers(130, 201)),
                        pitch=int(rng.integers(25, 76)),
                        snr_db=float(rng.uniform(10.0, 30.0)),
                    )
                )
    if per_word is None:
        return out
    kept: list[Clip] = []
    counts = [0] * len(WORDS)
    for clip in out:  # the first ``per_word`` in stored order: the split's first variants
        if counts[clip.word] < per_word:
            kept.append(clip)
            counts[clip.word] += 1
    return kept


def synthesize(clip: Clip, directory: Path) -> Path:
    """The cached 16 kHz mono wav of ``clip`` (espeak-ng, resampled by sox)."""
    path = directory / f"{clip.stem}.wav"
    if path.exists():
        return path
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise AccelsimError(
                f"task speech_commands: {tool} not found; install it with: {INSTALL}"
            )
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        voice = f"{clip.accent}+{clip.variant}"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(clip.speed_wpm), "-p", str(clip.pitch),
             "-w", str(raw), WORDS[clip.word]],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["sox", str(raw), "-r", str(SAMPLE_RATE_HZ), "-c", "1", "-b", "16", str(out)],
            check=True, capture_output=True,
        )  # fmt: skip
        out.replace(path)  # atomic: a killed run never leaves a half-written cache entry
    return path


def read_wav(path: Path) -> np.ndarray:
    """16-bit mono wav -> float32 in [-1, 1]."""
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768


def to_window(audio: np.ndarray, clip: Clip) -> np.ndarray:
    """Centre (pad or crop) in the 1 s window and add white noise at the clip's SNR."""
    if len(audio) >= WINDOW_SAMPLES:
        start = (len(audio) - WINDOW_SAMPLES) // 2
        x = audio[start : start + WINDOW_SAMPLES].copy()
    else:
        x = np.zeros(WINDOW_SAMPLES, np.float32)
        start = (WINDOW_SAMPLES - len(audio)) // 2
        x[start : start + len(audio)] = audio
    power = float(np.mean(audio.astype(np.float64) ** 2)) if len(audio) else 0.0
    rng = np.random.default_rng(zlib.crc32(clip.stem.encode()))
    noise = rng.standard_normal(WINDOW_SAMPLES).astype(np.float32)
    return x + noise * np.float32(np.sqrt(power / 10 ** (clip.snr_db / 10)))


@dataclass(frozen=True)
class SpeechCommands:
    """The speech task (see module docstring). ``limit`` caps each split; ``tiny`` uses a tiny
    random-init Whisper encoder (zoo ``whisper_tiny_test``, 8 mel bins) (for tests)."""

    limit: int | None = None
    tiny: bool = False
    name: str = field(default="speech_commands", init=False)
    num_labels: int = field(default=len(WORDS), init=False)
    metric_name: str = field(default="accuracy_pct", init=False)

    @property
    def backbone(self) -> str:
        return "whisper_tiny_test" if self.tiny else "whisper_tiny_en"

    @property
    def input_shape(self) -> dict[str, float]:
        return {"audio_seconds": WINDOW_SAMPLES / SAMPLE_RATE_HZ}

    def build_model(self, seed: int) -> nn.Module:
        return build_task_model(self.backbone, not self.tiny, seed, self.num_labels)

    def clips(self, split: Split) -> list[Clip]:
        if self.limit is not None and self.limit < len(WORDS):
            raise AccelsimError(
                f"task limit: {self.limit} is below the number of classes {len(WORDS)}; "
                f"allowed: an integer >= {len(WORDS)} or None"
            )
        return clips(split, None if self.limit is None else self.limit // len(WORDS))

    @cached_property
    def _features(self) -> dict[Split, tuple[torch.Tensor, torch.Tensor]]:
        import torch
        from transformers import WhisperFeatureExtractor

        from accelsim.zoo import get_spec

        mels = get_spec(self.backbone).config_dict["num_mel_bins"]
        extractor = WhisperFeatureExtractor(feature_size=mels)
        directory = cache_dir("speech", "v1")
        out = {}
        for split in SPLITS:
            chosen = self.clips(split)
            audio = [to_window(read_wav(synthesize(c, directory)), c) for c in chosen]
            feats = extractor(
                audio,
                sampling_rate=SAMPLE_RATE_HZ,
                padding="max_length",
                max_length=WINDOW_SAMPLES,
                return_tensors="np",
            )["input_features"]
            labels = torch.tensor([c.word for c in chosen], dtype=torch.long)
            out[split] = (torch.from_numpy(np.ascontiguousarray(feats, np.float32)), labels)
        return out

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        feats, labels = self._features[split]
        return tensor_batches({"input_features": feats}, labels, split, batch_size, seed)

    def unlabeled_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        raise no_unlabeled_pool(self.name)

    def metric(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return accuracy_pct(logits, labels)
