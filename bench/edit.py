"""Whole edits, side by side: a plain source/target pair (no regions), MultiDiffusion, mrgd
without guidance, full mrgd, and the two guidance options that trade fidelity for time."""

from __future__ import annotations

from typing import Callable

from lib_mrgd import run_edit

from .timing import compare, markdown_table

REGIONS = [
    {"box": [0.0, 0.25, 0.5, 0.6], "source": "a girl in a red sweater", "target": "a girl in a blue sweater",
     "keywords": ["girl", "sweater"]},
    {"box": [0.5, 0.3, 0.5, 0.45], "source": "a cat on a sofa", "target": "a cat on a sofa"},
    {"box": [0.5, 0.0, 0.5, 0.3], "source": "", "target": "a lamp"},
    {"box": [0.0, 0.0, 0.4, 0.25], "source": "a painting", "target": ""},
]


def spec(size: int, steps: int, regions: list | None = None, **options) -> dict:
    return {"width": size, "height": size, "seed": 1, "steps": steps, "background": "a living room, best quality",
            "negative": "blurry", "regions": REGIONS if regions is None else regions, "options": options}


def _edit(method: str, regions: list | None = None, **options) -> Callable:
    def make(pipeline, size: int, steps: int) -> Callable[[], object]:
        s = spec(size, steps, regions, **options)
        return lambda: run_edit(s, pipeline, method=method, progress=False)
    return make


# name -> (pipeline, size, steps) -> one edit
VARIANTS = {
    "plain": _edit("multidiffusion", regions=[]),
    "multidiffusion": _edit("multidiffusion"),
    "mrgd_no_guidance": _edit("mrgd", guidance=False),
    "mrgd": _edit("mrgd"),
    "mrgd_guide_every_2": _edit("mrgd", guidance_every=2),
    "mrgd_decode_half": _edit("mrgd", guidance_decode_scale=0.5),
}
RATIOS = {
    "edit.multidiffusion_vs_plain": ("multidiffusion", "plain"),
    "edit.mrgd_no_guidance_vs_multidiffusion": ("mrgd_no_guidance", "multidiffusion"),
    "edit.mrgd_vs_mrgd_no_guidance": ("mrgd", "mrgd_no_guidance"),
    "edit.mrgd_guide_every_2_vs_mrgd_no_guidance": ("mrgd_guide_every_2", "mrgd_no_guidance"),
    "edit.mrgd_decode_half_vs_mrgd_no_guidance": ("mrgd_decode_half", "mrgd_no_guidance"),
}


def run(pipeline, size: int, steps: int, rounds: int) -> tuple[str, dict, dict]:
    calls = {name: make(pipeline, size, steps) for name, make in VARIANTS.items()}
    times = compare(calls, rounds=rounds, warmup=0)
    ratios = {key: times[a] / times[b] for key, (a, b) in RATIOS.items()}
    rows = [[name, f"{times[name]:.2f}", f"{times[name] / times['plain']:.2f}x"] for name in VARIANTS]
    title = (f"### Whole edits ({pipeline.name}, {size}x{size}, {steps} DDIM steps, {len(REGIONS)} regions, "
             f"{pipeline.device})")
    table = markdown_table(["variant", "edit s", "/ plain pair"], rows)
    lines = "\n".join(f"- `{k}`: {v:.2f}x" for k, v in ratios.items())
    return title + "\n\n" + table + "\n\n" + lines, ratios, times
