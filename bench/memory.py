"""Peak memory of one call: CUDA's max allocated on a GPU; on the CPU the process's peak resident
set (VmHWM), which Linux resets on request (``/proc/self/clear_refs``), so variants measured one
after another in one process each get their own peak."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

_STATUS = Path("/proc/self/status")


def _kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", _STATUS.read_text()).group(1))


def peak(fn: Callable[[], object], device: torch.device) -> dict | None:
    """``{"peak_bytes", "before_bytes", "kind"}`` for one call of ``fn``, or None where this
    machine cannot tell."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated(device), "before_bytes": before,
                "kind": "cuda_max_allocated"}
    try:
        Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from the current RSS
        before = _kib("VmRSS") * 1024
    except OSError:
        return None
    fn()
    return {"peak_bytes": _kib("VmHWM") * 1024, "before_bytes": before, "kind": "peak_rss"}
