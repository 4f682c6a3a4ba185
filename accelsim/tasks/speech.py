"""Spoken keywords synthesised with espeak-ng in noise, classified by the Whisper tiny.en encoder.

Vocabulary (35 classes, in label order): the 35 words of Google's Speech Commands v2, confusable
pairs included (three/tree, bed/bird, dog/down, off/up, learn/left).

Speakers: a voice is an espeak-ng variant (a timbre: :data:`VARIANTS`, 48 of them) reading in
one of 8 English accents. The split is **by variant**, so test timbres never occur in training:
with :data:`accelsim.tasks._data.SPLIT_SEED`, 24 variants train, 8 validate and 16 test. Each
(variant, word) pair is spoken :data:`TAKES_PER_WORD` times, each take with an accent, a speed
(:data:`SPEED_WPM`), a pitch (:data:`PITCH`), a position in the window and a noise drawn from a
generator seeded by the clip's identity: 1,680 / 560 / 1,120 clips. Audio is 16 kHz mono,
silence trimmed (sox), placed at a random offset in a 1.0 s window (centre-cropped if longer),
and mixed with white, pink or brown noise (made by sox, ``synth ... whitenoise|pinknoise|
brownnoise`` with its repeatable generator) at an SNR drawn uniformly from :data:`SNR_DB`
(signal power over the speech samples). The SNR range was chosen on the validation split with
the linear probe (``accelsim.accuracy.probe``): 0..20 dB left it at 92.7 %, too easy to resolve
a point once fine-tuned, -10..5 dB at 68.0 %, -5..10 dB at 82.7 %. Whisper's 80-bin log-mel of
the window has 100 frames, i.e. 50 encoder tokens instead of Whisper's 1500.

The unlabelled pool (distillation inputs, recipe field ``distill_unlabeled``) is the training
voices' other takes: each training variant says each word in the 6 accents its labelled takes do
not use, with speed, pitch, noise and placement drawn anew (5,040 clips whose labels are never
read); no validation or test voice speaks in it.

Synthesised and trimmed wav files are cached under ``${ACCELSIM_CACHE:-~/.cache/accelsim}/
speech/v2`` (outside git); synthesis is deterministic for fixed arguments, so the cache can be
deleted at any time.
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from accelsim import assets
from accelsim.errors import AccelsimError
from accelsim.tasks._data import (
    SPLIT_SEED,
    SPLITS,
    accuracy_pct,
    build_task_model,
    cache_dir,
    disjoint_splits,
    endless_passes,
    tensor_batches,
    unknown_labels,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from accelsim.tasks.base import Batch, Split

WORDS = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
    "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off",
    "on", "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two",
    "up", "visual", "wow", "yes", "zero",
)  # fmt: skip
ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)  # fmt: skip
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "adam", "linda", "steph",
    "steph2", "steph3", "Alex", "Andy", "Annie", "aunty", "belinda", "benjamin", "boris",
    "caleb", "david", "ed", "edward", "Gene", "grandma", "grandpa", "iven", "john", "max",
    "Michael", "Mike", "norbert", "paul", "quincy", "robert", "travis",
)  # fmt: skip
VARIANTS_PER_SPLIT = {"train": 24, "val": 8, "test": 16}
TAKES_PER_WORD = 2
SPEED_WPM = (110, 240)  # espeak-ng -s, inclusive
PITCH = (10, 90)  # espeak-ng -p, inclusive (0..99)
SNR_DB = (-5.0, 10.0)  # uniform, speech power over noise power (chosen on validation)
NOISES = ("whitenoise", "pinknoise", "brownnoise")
NOISE_SECONDS = 20  # each colour's noise file; a clip takes a seeded 1 s slice of it
SAMPLE_RATE_HZ = 16_000
WINDOW_SAMPLES = SAMPLE_RATE_HZ  # 1.0 s -> 100 mel frames
TOOLS = ("espeak-ng", "sox")
SYNTH_WORKERS = 2  # espeak-ng and sox processes at a time
# Seeds of the per-clip draws (the last element of :func:`_clip_rng`'s key).
LABELLED_DRAW, POOL_DRAW = 2, 3
CACHE_VERSION = "v3"  # v3: repeatable sox dither (v2 wavs differ between syntheses)


@dataclass(frozen=True)
class Clip:
    """One synthesised utterance in noise; every field is part of its identity."""

    word: int
    variant: str
    accent: str
    speed_wpm: int
    pitch: int
    snr_db: float
    noise: str
    noise_offset: int  # first sample of the noise slice
    position: float  # where the speech starts in the window's free space, 0..1

    @property
    def stem(self) -> str:
        """The cached (noise-free, trimmed) recording's name: voice, word, speed and pitch."""
        return f"{self.variant}_{self.accent}_{WORDS[self.word]}_s{self.speed_wpm}_p{self.pitch}"


def split_variants() -> dict[Split, tuple[str, ...]]:
    """Disjoint variant (speaker timbre) sets per split, fixed by SPLIT_SEED."""
    return disjoint_splits(VARIANTS, VARIANTS_PER_SPLIT)


def clips(split: Split, per_word: int | None = None) -> list[Clip]:
    """The clips of ``split``, ``per_word`` of each word (all when None), in a fixed order."""
    out = []
    for variant in split_variants()[split]:
        for word in range(len(WORDS)):
            rng = _clip_rng(variant, word, LABELLED_DRAW)
            accents = rng.permutation(len(ACCENTS))[:TAKES_PER_WORD]
            out += [_take(word, variant, ACCENTS[take], rng) for take in accents]
    return _first_per_word(out, per_word)


def unlabeled_clips(per_word: int | None = None) -> list[Clip]:
    """The distillation pool: every training voice saying every word in each accent that its
    labelled takes do not use (6 more takes a word), with speed, pitch, noise and placement
    drawn anew; ``per_word`` of each word (all when None). Labels are never read from it, and
    no validation or test voice speaks in it."""
    out = []
    for variant in split_variants()["train"]:
        for word in range(len(WORDS)):
            taken = _clip_rng(variant, word, LABELLED_DRAW).permutation(len(ACCENTS))
            rng = _clip_rng(variant, word, POOL_DRAW)
            out += [_take(word, variant, ACCENTS[a], rng) for a in sorted(taken[TAKES_PER_WORD:])]
    return _first_per_word(out, per_word)


def _clip_rng(variant: str, word: int, draw: int) -> np.random.Generator:
    # The draw depends only on the clip's identity, so limits never change a clip.
    return np.random.default_rng([SPLIT_SEED, zlib.crc32(variant.encode()), word, draw])


def _take(word: int, variant: str, accent: str, rng: np.random.Generator) -> Clip:
    """One take of ``word`` by ``variant`` in ``accent``, its other fields drawn from ``rng``."""
    return Clip(
        word=word, variant=variant, accent=accent,
        speed_wpm=int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1)),
        pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
        snr_db=round(float(rng.uniform(*SNR_DB)), 3),
        noise=NOISES[int(rng.integers(len(NOISES)))],
        noise_offset=int(rng.integers((NOISE_SECONDS - 1) * SAMPLE_RATE_HZ)),
        position=float(rng.uniform()),
    )  # fmt: skip


def _first_per_word(clips_: list[Clip], per_word: int | None) -> list[Clip]:
    """The first ``per_word`` clips of each word in stored order (all when None)."""
    if per_word is None:
        return clips_
    kept: list[Clip] = []
    counts = [0] * len(WORDS)
    for clip in clips_:
        if counts[clip.word] < per_word:
            kept.append(clip)
            counts[clip.word] += 1
    return kept


def require_tools(task: str = "speech_commands") -> None:
    for tool in TOOLS:
        assets.require(tool, f"task {task}")


def synthesize(clip: Clip, directory: Path) -> Path:
    """The cached 16 kHz mono wav of ``clip``'s speech (:func:`speak`)."""
    return speak(WORDS[clip.word], clip.accent, clip.variant, clip.speed_wpm, clip.pitch,
                 directory / f"{clip.stem}.wav", "speech_commands")


def speak(text: str, accent: str, variant: str, speed_wpm: int, pitch: int, path: Path,
          task: str) -> Path:
    """``path``, made on first use: ``text`` spoken by espeak-ng's ``accent+variant`` voice,
    resampled by sox to 16-bit mono at :data:`SAMPLE_RATE_HZ` with leading and trailing silence
    trimmed, written atomically (a killed run never leaves a half-written cache entry).
    ``task`` names who needs the tools when they are missing."""
    if path.exists():
        return path
    require_tools(task)
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(
            ["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed_wpm), "-p", str(pitch),
             "-w", str(raw), text],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            # -R: sox dithers when it reduces to 16 bits, from a random seed unless asked to
            # be repeatable; without it every synthesis of a clip differs in its last bits.
            ["sox", "-R", str(raw), "-r", str(SAMPLE_RATE_HZ), "-c", "1", "-b", "16", str(out),
             "silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%",
             "reverse"],
            check=True, capture_output=True,
        )  # fmt: skip
        out.replace(path)
    return path


def noise_file(colour: str, directory: Path) -> Path:
    """The cached :data:`NOISE_SECONDS` of ``colour`` noise (sox's repeatable generator)."""
    path = directory / f"noise_{colour}.wav"
    if path.exists():
        return path
    require_tools()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "noise.wav"
        subprocess.run(
            ["sox", "-R", "-n", "-r", str(SAMPLE_RATE_HZ), "-c", "1", "-b", "16", str(out),
             "synth", str(NOISE_SECONDS), colour],
            check=True, capture_output=True,
        )  # fmt: skip
        out.replace(path)
    return path


def read_wav(path: Path) -> np.ndarray:
    """16-bit mono wav -> float32 in [-1, 1]."""
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768


def to_window(speech: np.ndarray, clip: Clip, noise: np.ndarray) -> np.ndarray:
    """``speech`` placed in the 1 s window at the clip's position (centre-cropped if longer),
    plus the clip's slice of ``noise`` scaled to its SNR."""
    x = np.zeros(WINDOW_SAMPLES, np.float32)
    if len(speech) >= WINDOW_SAMPLES:
        start = (len(speech) - WINDOW_SAMPLES) // 2
        x[:] = speech[start : start + WINDOW_SAMPLES]
    else:
        start = int(clip.position * (WINDOW_SAMPLES - len(speech)))
        x[start : start + len(speech)] = speech
    piece = noise[clip.noise_offset : clip.noise_offset + WINDOW_SAMPLES].astype(np.float64)
    speech_power = float(np.mean(speech.astype(np.float64) ** 2)) if len(speech) else 0.0
    noise_power = float(np.mean(piece**2)) or 1.0
    gain = np.sqrt(speech_power / (noise_power * 10 ** (clip.snr_db / 10)))
    return x + (piece * gain).astype(np.float32)


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

        chosen = {split: self.clips(split) for split in SPLITS}
        feats = self._log_mel([c for split in SPLITS for c in chosen[split]])
        out, start = {}, 0
        for split in SPLITS:
            labels = torch.tensor([c.word for c in chosen[split]], dtype=torch.long)
            out[split] = (feats[start : start + len(labels)], labels)
            start += len(labels)
        return out

    @cached_property
    def _unlabeled_features(self) -> torch.Tensor:
        per_word = None if self.limit is None else self.limit // len(WORDS)
        return self._log_mel(unlabeled_clips(per_word))

    def _log_mel(self, chosen: list[Clip]) -> torch.Tensor:
        """Whisper's log-mel features [N, mels, 100] of ``chosen`` (synthesised on first use)."""
        import torch
        from transformers import WhisperFeatureExtractor

        from accelsim.zoo import get_spec

        require_tools()  # before the wav cache: a fresh machine synthesises every clip
        mels = get_spec(self.backbone).config_dict["num_mel_bins"]
        extractor = WhisperFeatureExtractor(feature_size=mels)
        directory = cache_dir("speech", CACHE_VERSION)
        noises = {colour: read_wav(noise_file(colour, directory)) for colour in NOISES}
        with ThreadPoolExecutor(SYNTH_WORKERS) as pool:  # subprocesses: threads suffice
            list(pool.map(lambda c: synthesize(c, directory), chosen))
        audio = [to_window(read_wav(synthesize(c, directory)), c, noises[c.noise])
                 for c in chosen]
        feats = extractor(audio, sampling_rate=SAMPLE_RATE_HZ, padding="max_length",
                          max_length=WINDOW_SAMPLES, return_tensors="np")["input_features"]
        return torch.from_numpy(np.ascontiguousarray(feats, np.float32))

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        feats, labels = self._features[split]
        return tensor_batches({"input_features": feats}, labels, split, batch_size, seed)

    def unlabeled_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """The pool of :func:`unlabeled_clips` with labels -1 (distillation inputs, never
        scored): an endless stream of passes, each shuffled anew by a generator seeded with
        ``seed``."""
        from accelsim.tasks.base import Batch

        feats = self._unlabeled_features
        return (Batch({"input_features": feats[sel]}, unknown_labels(len(sel)))
                for sel in endless_passes(len(feats), batch_size, seed, self.name))

    def metric(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return accuracy_pct(logits, labels)
