"""Handing freed heap memory back to the operating system.

glibc's malloc maps a large block on its own (and unmaps it when freed) only while the block is
above its *dynamic* mmap threshold, which rises every time a mapped block is freed. Below it, the
block lives in the heap, and a freed block in the middle of the heap stays resident. Building a
large model for tracing frees each float layer as its compressed twin replaces it: when those
layers had landed in the heap, the process kept them all while the compression's temporaries
took fresh pages, and a cold ``run --model vit_l16`` peaked at 2.4-3.1 GiB instead of 1.6 GiB,
at random from run to run (benchmarks/README.md, bench_startup). ``malloc_trim`` returns the
free pages of every arena, wherever they lie.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the process's own symbols; None where the C library has
    none (macOS, musl)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


def return_freed_memory() -> None:
    """``malloc_trim(0)``: give every free heap page back to the OS (a no-op without glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
