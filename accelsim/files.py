"""Atomic file writes: a reader never sees a half-written output or cache file."""

from __future__ import annotations

import os
from pathlib import Path

from accelsim.errors import AccelsimError


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
