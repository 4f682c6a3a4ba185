"""Files: outputs checked before work, atomic writes (a reader never sees a half-written output or
cache file, and several outputs land together or not at all) and digests of
the package's own source, which key caches that must go stale when the code behind them changes."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from accelsim.errors import AccelsimError

# The installed package's folder: digests read the very files the running process imports.
PACKAGE_ROOT = Path(__file__).resolve().parent


def check_output_path(path: str | Path, option: str) -> Path:
    """``path`` as an output the command can write, checked before any work: not a folder, in
    a folder that exists and is writable. ``option`` names it in the error (``--csv``)."""
    path = Path(path)
    if path.is_dir():
        raise AccelsimError(f"{option} {path}: is a folder; give a file path")
    folder = path.parent
    if not folder.is_dir():
        raise AccelsimError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AccelsimError(f"{option} {path}: folder {folder} is not writable")
    return path


def check_distinct(outputs: dict[str, Path]) -> None:
    """Options given the same output path (``--json x --csv x``) would overwrite each other."""
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        if path.resolve() in seen:
            raise AccelsimError(f"--{option} {path}: the same file as --{seen[path.resolve()]}; "
                                "give each output its own path")
        seen[path.resolve()] = option


@contextlib.contextmanager
def outputs_together(paths: list[Path]) -> Iterator[list[Path]]:
    """Temp paths to write instead of ``paths`` (same folder, same suffix, so a writer that picks
    the format by suffix still works). On a clean exit every temp is renamed onto its target; on
    an error none is, so the targets land together or not at all, and no temp remains."""
    temps = [path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}") for path in paths]
    try:
        yield temps
        for tmp, path in zip(temps, paths, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def read_json(path: str | Path) -> object:
    """The JSON document at ``path``; one line naming the file when it cannot be read or
    parsed."""
    import json

    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise AccelsimError(f"{path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = (f"{exc.msg}, line {exc.lineno}" if isinstance(exc, json.JSONDecodeError)
               else "not UTF-8 text")
        raise AccelsimError(f"{path}: not valid JSON ({why})") from None


def write_texts_atomic(texts: dict[Path, str]) -> None:
    """Write several text files all or none (:func:`outputs_together`)."""
    try:
        with outputs_together(list(texts)) as temps:
            for tmp, text in zip(temps, texts.values(), strict=True):
                tmp.write_text(text)
    except OSError as exc:
        where = ", ".join(str(path) for path in texts)
        raise AccelsimError(f"{where}: cannot write ({exc.strerror})") from None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so no half-written file remains."""
    write_texts_atomic({Path(path): text})


@functools.cache
def source_digest(*entries: str) -> str:
    """SHA-256 hex digest of the package's source files named by ``entries`` (paths relative to
    the package; a folder stands for every ``.py`` file below it, in sorted order): each file's
    relative path and bytes in turn. Read once per process and entries."""
    digest = hashlib.sha256()
    for entry in entries:
        root = PACKAGE_ROOT / entry
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one (one line
    naming the file, the field and its line)."""


def _construct_unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise AccelsimError(f"{node.start_mark.name}: duplicate field {key!r} "
                                f"(line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                _construct_unique_mapping)
