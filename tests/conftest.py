"""Suite-wide set-up: a private cache, and the guards of the optional offline assets.

A test that needs optional assets says so with ``@pytest.mark.assets("fortunes", ...)`` (names
of :data:`accelsim.assets.ASSETS`); it is skipped, naming the install commands, when one is
missing. The guard is checked, not trusted: every asset the code requires during a test (through
:func:`accelsim.assets.require`) must be declared by that test's mark, so a guard that forgets
one fails here, on a machine that has everything, instead of on a fresh machine that lacks it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accelsim import assets


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "assets(*names): optional assets (accelsim.assets.ASSETS) the test needs"
    )


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Traces, converted weights and trained runs go to one temporary folder per session,
    never into the user's ~/.cache/accelsim (shared within the session to stay fast)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCELSIM_CACHE", str(tmp_path_factory.mktemp("accelsim-cache")))
        yield


def declared_assets(item: pytest.Item) -> tuple[str, ...]:
    return tuple(name for mark in item.iter_markers("assets") for name in mark.args)


def skip_reason(names: tuple[str, ...]) -> str | None:
    """Why a test needing ``names`` cannot run here, or None when all are installed."""
    absent = assets.missing(names)
    if not absent:
        return None
    return "optional assets missing: " + "; ".join(
        f"{name} ({assets.ASSETS[name].install})" for name in absent
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    reason = skip_reason(declared_assets(item))
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def undeclared_assets_fail(request: pytest.FixtureRequest,
                           monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    used: set[str] = set()
    real_require = assets.require

    def recording_require(name: str, needed_by: str) -> assets.Asset:
        asset = real_require(name, needed_by)
        used.add(name)  # only when found: a test that expects the missing-asset error is fine
        return asset

    monkeypatch.setattr(assets, "require", recording_require)
    yield
    undeclared = sorted(used - set(declared_assets(request.node)))
    if undeclared:
        pytest.fail(f"{request.node.nodeid} uses optional assets without guarding them: add "
                    f"@pytest.mark.assets({', '.join(map(repr, undeclared))})", pytrace=False)
