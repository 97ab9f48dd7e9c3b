"""Per-step cost of region fusion: 1, 2, 4, 8 regions vs plain denoising of the pair, and
batched crops vs one UNet call per crop."""

from __future__ import annotations

import torch

from lib_mrgd import load_spec
from lib_mrgd.engine import build_edit
from lib_mrgd.fusion import RegionFusion

from .timing import compare, markdown_table


def _grid_regions(n: int) -> list[dict]:
    """n equal, non-overlapping boxes (quarter-width columns over two rows)."""
    boxes = [[0.25 * (i % 4), 0.5 * (i // 4), 0.25, 0.5] for i in range(n)]
    return [{"box": b, "source": f"object {i}", "target": f"changed object {i}"} for i, b in enumerate(boxes)]


def run(pipeline, size: int, steps: int, rounds: int) -> tuple[str, dict, dict]:
    x = torch.randn(2, pipeline.latent_channels, size // 8, size // 8,
                    generator=torch.Generator().manual_seed(0)).to(pipeline.device)
    t = 501

    def fusion_for(n: int, max_batch: int | None = None) -> RegionFusion:
        spec = load_spec({"width": size, "height": size, "background": "a room", "negative": "blurry",
                          "regions": _grid_regions(n)})
        return build_edit(spec, "multidiffusion", pipeline, max_batch=max_batch).fusion

    counts = (1, 2, 4, 8)
    variants = {"plain": fusion_for(0)}
    for n in counts:
        variants[f"{n} batched"] = fusion_for(n)
        # rows are ordered layer by layer (S/T x cond/uncond = 4 rows): 4 rows = one call per region
        variants[f"{n} per-call"] = fusion_for(n, max_batch=4)

    def step(f):
        return lambda: f(x, t, 0.5)

    with torch.no_grad():
        times = compare({k: step(f) for k, f in variants.items()}, rounds=rounds)
    base = times["plain"]
    rows = []
    for n in counts:
        b, s = times[f"{n} batched"], times[f"{n} per-call"]
        calls_b = len(variants[f"{n} batched"].plan(0.5))
        calls_s = len(variants[f"{n} per-call"].plan(0.5))
        rows.append([n, f"{b * 1000:.1f}", f"{b / base:.2f}x", calls_b, f"{s / base:.2f}x", calls_s, f"{s / b:.2f}x"])
    ratios = {f"fusion.regions_{n}": times[f"{n} batched"] / base for n in counts}
    ratios["fusion.batched_vs_separate_8"] = times["8 batched"] / times["8 per-call"]
    header = ["regions", "fused step ms", "fused / plain", "UNet calls", "one call per region / plain",
              "UNet calls", "one call per region / batched"]
    title = (f"### Region fusion per step ({pipeline.name}, {size}x{size}, CFG on, {pipeline.device}; "
             f"plain step {base * 1000:.1f} ms)")
    return title + "\n\n" + markdown_table(header, rows), ratios, times
