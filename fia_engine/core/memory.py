"""Returning freed heap memory to the operating system between layers."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache
from pathlib import Path


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to trim
        return None


def release_freed_memory() -> None:
    """Selection and fusion free a layer's worth of small blocks and keep its indices, which
    sit between them on glibc's heap; without a trim the freed pages stay in the process and
    the next layer's blocks pile on top (measured on SD1.5 shapes: peak RSS 2.2x the largest
    layer instead of 1.6x). The call costs milliseconds and changes no result."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def process_memory_bytes(field: str = "VmRSS") -> int:
    """A memory figure of this process from Linux's /proc/self/status (VmRSS: resident now,
    VmHWM: its peak), in bytes: how the trim's effect is measured."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")
