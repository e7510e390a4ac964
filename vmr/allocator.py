"""Keep freed memory inside the process instead of handing it back to the OS (glibc only).

A training step allocates and frees tensors of tens to hundreds of MB (the [targets x items]
logits, their float32 and bfloat16 copies, dropout masks). glibc serves each from a fresh mmap
and unmaps it on free, so the next step page-faults every page back in, zero-filled: on the
2-core machines vmr is benchmarked on that cost as much as the arithmetic (a training step
runs ~16% faster without it, single conversions 2-6x). Serving large blocks from the heap and
never trimming it keeps those pages mapped; the price is that the process keeps its peak
memory until it exits. Set VMR_KEEP_MEMORY=0 to leave glibc's defaults alone."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the setting once per process; returns whether it is in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("VMR_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):          # not glibc (e.g. musl): nothing to tune
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    ok = mallopt(_M_TOP_PAD, 64 << 20) == 1 and ok
    _applied = ok
    return ok
