"""Inversion time vs the number of regions (DDIM inversion and null-text optimisation)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lib_mrgd import invert

from .timing import compare, markdown_table


def _photo(size: int) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(6 * xx + 1) * 0.5 + 0.5, np.cos(5 * yy) * 0.5 + 0.5, xx * yy], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def run(pipeline, size: int = 256, rounds: int = 3) -> str:
    photo = _photo(size)
    steps = 10
    results = {}
    for n in (0, 1, 2, 4):
        regions = [{"box": [0.25 * (i % 4), 0.0, 0.25, 0.5], "source": f"object {i}", "target": f"new object {i}"}
                   for i in range(n)]
        spec = {"width": size, "height": size, "steps": steps, "cfg_scale": 7.5, "background": "a garden",
                "regions": regions}
        last = {}

        def go(spec=spec, last=last):
            last["inv"] = invert(photo, spec, pipeline, method="p2p", progress=False)

        seconds = compare({"inv": go}, rounds=max(1, rounds), warmup=0)["inv"]
        results[n] = (seconds, last["inv"].report["timings"], sum(last["inv"].report["inner_steps"]))
    base = results[0][0]
    rows = [[n, f"{s:.2f}", f"{s / base:.2f}x", f"{t['inversion_s']:.2f}", f"{t['null_text_s']:.2f}", inner]
            for n, (s, t, inner) in results.items()]
    title = f"### Inversion time vs regions ({pipeline.name}, {size}x{size}, {steps} DDIM steps, CFG 7.5, {pipeline.device})"
    return title + "\n\n" + markdown_table(
        ["regions", "total s", "/ no regions", "DDIM inversion s", "null-text s", "Adam steps"], rows)
