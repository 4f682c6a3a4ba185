"""Files: atomic writes (a reader never sees a half-written output or cache file) and digests of
the package's own source, which key caches that must go stale when the code behind them changes."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from accelsim.errors import AccelsimError

# The installed package's folder: digests read the very files the running process imports.
PACKAGE_ROOT = Path(__file__).resolve().parent


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so no half-written file remains."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise AccelsimError(f"{path}: cannot write ({exc.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)


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
