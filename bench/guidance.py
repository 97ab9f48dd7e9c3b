"""Cost of guidance: wall time of one mrgd edit with guidance vs without, and peak memory (GPU
memory when on CUDA, else the peak resident set of a fresh process per variant)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .timing import markdown_table

ROOT = Path(__file__).resolve().parent.parent
_CHILD = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
sys.path.insert(0, {root!r})
from lib_mrgd import load_pipeline, run_edit
pipe = load_pipeline({model!r}, device={device!r})
spec = json.loads({spec!r})
run_edit(spec, pipe, method="mrgd", progress=False)  # warm-up
if pipe.device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
times = []
for _ in range({repeats}):
    t0 = time.perf_counter(); run_edit(spec, pipe, method="mrgd", progress=False); times.append(time.perf_counter() - t0)
peak = torch.cuda.max_memory_allocated() if pipe.device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"seconds": sorted(times)[len(times) // 2], "peak_bytes": peak}}))
"""


def _measure(model: str, device: str | None, spec: dict, repeats: int) -> dict:
    code = _CHILD.format(root=str(ROOT), model=model, device=device, spec=json.dumps(spec), repeats=repeats)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(pipeline, size: int = 256, rounds: int = 3) -> str:
    model = pipeline.source or pipeline.name
    device = str(pipeline.device)
    spec = {"width": size, "height": size, "seed": 1, "steps": 20, "background": "a living room, best quality",
            "regions": [{"box": [0.0, 0.25, 0.5, 0.6], "source": "a girl in a red sweater",
                         "target": "a girl in a blue sweater", "keywords": ["girl", "sweater"]},
                        {"box": [0.5, 0.3, 0.5, 0.5], "source": "a cat", "target": "a cat"},
                        {"box": [0.5, 0.0, 0.5, 0.3], "source": "", "target": "a lamp"}]}
    variants = {
        "without guidance": {**spec, "options": {"guidance": False}},
        "with guidance": spec,
        "with guidance, every 2nd step": {**spec, "options": {"guidance_every": 2}},
        "with guidance, decode at 1/2 size": {**spec, "options": {"guidance_decode_scale": 0.5}},
    }
    results = {name: _measure(model, device, s, max(1, rounds)) for name, s in variants.items()}
    base = results["without guidance"]
    kind = "GPU peak allocated" if pipeline.device.type == "cuda" else "process peak RSS"
    rows = [[name, f"{r['seconds']:.2f}", f"{r['seconds'] / base['seconds']:.2f}x",
             f"{r['peak_bytes'] / 2**20:.0f}", f"{r['peak_bytes'] / base['peak_bytes']:.2f}x"]
            for name, r in results.items()]
    title = f"### Guidance cost per edit ({model}, {size}x{size}, 20 DDIM steps, 3 regions, {device})"
    return title + "\n\n" + markdown_table(["variant", "edit s", "/ unguided", f"{kind} MiB", "/ unguided"], rows)
