"""dtype choice for the in-process backends: `auto` and a warning for dtypes slow on the device.

`auto` is bfloat16 on CUDA and float32 on a CPU: a CPU without bfloat16 instructions emulates
it, and even this project's CPU (avx512_bf16) decodes slower in bfloat16 than in float32. The
resolved dtype is what the backend records and fingerprints, so `auto` and the dtype it chose
share cached results.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from harness.errors import HarnessError

log = logging.getLogger(__name__)

# CPU flags (/proc/cpuinfo) that mean native arithmetic in that dtype; without them torch
# emulates it through float32 conversions, several times slower than float32.
_NATIVE_CPU_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def slow_dtype_reason(dtype: str, device: torch.device, flags: frozenset[str] | None = None) -> str | None:
    """Why `dtype` is slow on `device`, or None when it is not known to be (CPU flags unreadable,
    e.g. not Linux, count as unknown)."""
    if device.type != "cpu" or dtype not in _NATIVE_CPU_FLAGS:
        return None
    flags = cpu_flags() if flags is None else flags
    native = _NATIVE_CPU_FLAGS[dtype]
    if not flags or any(f in flags for f in native):
        return None
    return (f"{dtype} on this CPU is emulated (no {' / '.join(native)}): expect generation several "
            "times slower than float32; dtype=float32 (what dtype=auto picks on a CPU) is faster")


def resolve_dtype(name: str, device: torch.device) -> tuple[torch.dtype, str]:
    """(torch dtype, its name) for a dtype argument; `auto` -> bfloat16 on CUDA, else float32.
    Logs a warning when the dtype is slow on the device."""
    if name == "auto":
        name = "bfloat16" if device.type == "cuda" else "float32"
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise HarnessError(f"unknown dtype {name!r} (use auto, float32, bfloat16 or float16)")
    reason = slow_dtype_reason(name, device)
    if reason:
        log.warning("%s", reason)
    return value, name
