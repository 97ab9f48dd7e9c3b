"""Side-by-side timing: variants are run interleaved, round after round, so drift on a busy
machine hits all of them alike; the median of the rounds is reported."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def compare(variants: Mapping[str, Callable[[], object]], rounds: int = 7, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each variant."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            _sync()
            t0 = time.perf_counter()
            fn()
            _sync()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
