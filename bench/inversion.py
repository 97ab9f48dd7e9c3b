"""Inversion: multi-region null-text inversion against plain DDIM inversion (the DDIM walk back
to noise alone), measured in the same runs, and how the time grows with the number of regions."""

from __future__ import annotations

import statistics

import numpy as np
from PIL import Image

from lib_mrgd import invert

from .timing import markdown_table


def photo(size: int) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(6 * xx + 1) * 0.5 + 0.5, np.cos(5 * yy) * 0.5 + 0.5, xx * yy], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def _spec(size: int, steps: int, n: int) -> dict:
    regions = [{"box": [0.25 * (i % 4), 0.0, 0.25, 0.5], "source": f"object {i}", "target": f"new object {i}"}
               for i in range(n)]
    return {"width": size, "height": size, "steps": steps, "cfg_scale": 7.5, "background": "a garden", "regions": regions}


def variant(pipeline, size: int, steps: int, n: int = 2):
    image, spec = photo(size), _spec(size, steps, n)
    return lambda: invert(image, spec, pipeline, method="mrgd", progress=False)


def run(pipeline, size: int, steps: int, rounds: int) -> tuple[str, dict, dict]:
    results = {}
    for n in (0, 1, 2, 4):
        go = variant(pipeline, size, steps, n)
        reports = [go().report for _ in range(max(1, rounds))]
        total = statistics.median(r["timings"]["inversion_s"] + r["timings"]["null_text_s"] for r in reports)
        ddim = statistics.median(r["timings"]["inversion_s"] for r in reports)
        results[n] = (total, ddim, sum(reports[-1]["inner_steps"]))
    total2, ddim2, _ = results[2]
    ratios = {"inversion.null_text_vs_ddim": total2 / ddim2}
    base = results[0][0]
    rows = [[n, f"{t:.2f}", f"{t / base:.2f}x", f"{d:.2f}", f"{t / d:.2f}x", inner]
            for n, (t, d, inner) in results.items()]
    title = f"### Inversion ({pipeline.name}, {size}x{size}, {steps} DDIM steps, CFG 7.5, {pipeline.device})"
    table = markdown_table(["regions", "null-text inversion s", "/ no regions", "DDIM inversion alone s",
                            "null-text / DDIM", "Adam steps"], rows)
    return title + "\n\n" + table, ratios, {"inversion": total2}
