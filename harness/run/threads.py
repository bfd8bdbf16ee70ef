"""CPU threads for the in-process backends (torch): a default that does not oversubscribe.

torch starts one thread per physical core. On a machine that other jobs keep busy that is much
slower than fewer threads (measured on the 2-core machine: one NER sample 1 min 40 s with the
default threads, 28 s with one), so the harness chooses, in this order: `--threads N`, else
`OMP_NUM_THREADS`, else the usable cores minus the current 1-minute load, at least 1. The
choice and where it came from are recorded in the run's environment (run.json).
"""

from __future__ import annotations

import os
import sys
from typing import Any

_choice: dict[str, Any] = {}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> tuple[int, str]:
    """(threads, why) when no --threads is given."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env)), "OMP_NUM_THREADS"
        except ValueError:
            pass
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    idle = int(cores - load + 0.5)
    return max(1, min(cores, idle)), f"auto: {cores} usable cores, load {load:.1f}"


def apply_threads(threads: int | None = None) -> dict[str, Any]:
    """Set the torch CPU threads (now, or when torch is first imported) and remember the choice
    for `thread_settings()`. Returns what was chosen."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    n, why = (threads, "--threads") if threads is not None else default_threads()
    os.environ["OMP_NUM_THREADS"] = str(n)  # read by torch (and MKL) when first imported
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    _choice.clear()
    _choice.update({"threads": n, "threads_source": why})
    return dict(_choice)


def thread_settings() -> dict[str, Any]:
    """What the run's environment records: the choice made (if any) and torch's actual count."""
    out: dict[str, Any] = dict(_choice)
    if "torch" in sys.modules:
        out["torch_threads"] = int(sys.modules["torch"].get_num_threads())
    elif os.environ.get("OMP_NUM_THREADS"):
        out["torch_threads"] = os.environ["OMP_NUM_THREADS"]
    return out
