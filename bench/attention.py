"""Per-step cost of attention control: the patcher attached but idle vs unpatched (goal <= 1.05x),
P2P edits active, and mrgd's keyword capture + KSSA active."""

from __future__ import annotations

import contextlib

import torch

from lib_mrgd import load_spec
from lib_mrgd.attention.patcher import patched
from lib_mrgd.engine import build_edit

from .timing import compare, markdown_table

ZERO = {f"inject_{k}": [0.0, 0.0] for k in ("background", "inherent", "edit", "total")}


def run(pipeline, size: int, steps: int, rounds: int) -> tuple[str, dict, dict]:
    x = torch.randn(2, pipeline.latent_channels, size // 8, size // 8,
                    generator=torch.Generator().manual_seed(0)).to(pipeline.device)
    base = {"width": size, "height": size, "background": "a living room, best quality", "negative": "blurry",
            "regions": [{"box": [0.0, 0.25, 0.5, 0.5], "source": "a girl in a red sweater",
                         "target": "a girl in a blue sweater", "keywords": ["girl"]},
                        {"box": [0.5, 0.25, 0.5, 0.5], "source": "", "target": "a dog"}]}

    def variant(method: str, options: dict, progress: float, control: bool = True):
        """``control`` False: the method's layout fused without attention control or patching."""
        edit = build_edit(load_spec({**base, "options": options}), method, pipeline, control=control, guided=False)
        controller, fusion = edit.controller, edit.fusion

        def step():
            hooks = patched(pipeline.unet, controller) if controller else contextlib.nullcontext()
            with hooks:
                fusion(x, 501, progress)
        return step

    variants = {
        "unpatched": variant("multidiffusion", {}, 0.0),
        "patched, idle": variant("p2p", ZERO, 0.0),
        "p2p edits": variant("p2p", {}, 0.0),
        # at 0.6 of sampling r_total is on, maps are captured for selection and KSSA acts
        "r_total unpatched": variant("mrgd", {}, 0.6, control=False),
        "mrgd capture + KSSA": variant("mrgd", ZERO, 0.6),
    }
    with torch.no_grad():
        times = compare(variants, rounds=rounds)
    unpatched = times["unpatched"]
    rows = [
        ["patched, idle", f"{times['patched, idle'] * 1000:.1f}", f"{times['patched, idle'] / unpatched:.3f}x"],
        ["p2p edits (cross + self)", f"{times['p2p edits'] * 1000:.1f}", f"{times['p2p edits'] / unpatched:.2f}x"],
        ["mrgd capture + KSSA, vs the same step with r_total unpatched", f"{times['mrgd capture + KSSA'] * 1000:.1f}",
         f"{times['mrgd capture + KSSA'] / times['r_total unpatched']:.2f}x"],
    ]
    ratios = {"attention.idle": times["patched, idle"] / unpatched, "attention.p2p": times["p2p edits"] / unpatched,
              "attention.capture_kssa": times["mrgd capture + KSSA"] / times["r_total unpatched"]}
    title = (f"### Attention control per step ({pipeline.name}, {size}x{size}, 2 regions, {pipeline.device}; "
             f"unpatched step {unpatched * 1000:.1f} ms)")
    return title + "\n\n" + markdown_table(["variant", "step ms", "/ unpatched"], rows), ratios, times
