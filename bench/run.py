"""Run the project's benchmarks and write one markdown report and one JSON of ratios.

    python -m bench.run --model random-sd15 --size 256 --steps 4 --rounds 3 \\
        [--only edit,attention,fusion,inversion] [--device cpu] --out report.md --json report.json

Variants are interleaved round by round and their medians compared, so every ratio is measured
side by side in one run; absolute times depend on the machine. Peak memory per variant: CUDA's
max allocated on a GPU, the process's peak resident set on the CPU (reset before each variant).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ["edit", "attention", "fusion", "inversion"]


def _memory(pipeline, size: int, steps: int, sections: list[str]) -> dict[str, dict]:
    """One call of each whole-edit and inversion variant, its peak memory."""
    from .edit import VARIANTS
    from .inversion import variant as inversion_variant
    from .memory import peak

    calls = {f"edit.{n}": make(pipeline, size, steps) for n, make in VARIANTS.items()} if "edit" in sections else {}
    if "inversion" in sections:
        calls["inversion.null_text"] = inversion_variant(pipeline, size, steps)
    found = {name: peak(fn, pipeline.device) for name, fn in calls.items()}
    return {name: value for name, value in found.items() if value is not None}


def main(argv=None) -> int:
    import importlib

    from lib_mrgd import load_pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=256, help="image size in pixels")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps of the whole-edit and inversion runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--out", default=None, help="also write the markdown report to this file")
    parser.add_argument("--json", default=None, help="write the ratios and peak memory as JSON to this file")
    args = parser.parse_args(argv)
    sections = args.only.split(",") if args.only else SECTIONS
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")

    pipeline = load_pipeline(args.model, device=args.device)
    device = torch.cuda.get_device_name() if pipeline.device.type == "cuda" else platform.processor() or "cpu"
    machine = f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    report = {"model": pipeline.name, "size": args.size, "steps": args.steps, "rounds": args.rounds,
              "machine": machine, "ratios": {}, "seconds": {}, "memory": {}}
    parts = [f"# mrgd benchmarks\n\nmodel {pipeline.name}, {machine}"]
    for name in sections:
        module = importlib.import_module(f"bench.{name}")
        text, ratios, times = module.run(pipeline, size=args.size, steps=args.steps, rounds=args.rounds)
        report["ratios"].update(ratios)
        report["seconds"].update({f"{name}.{k}": v for k, v in times.items()})
        parts.append(text)
        print(text + "\n", flush=True)
    if not args.no_memory:
        report["memory"] = _memory(pipeline, args.size, args.steps, sections)
        rows = "\n".join(f"| {k} | {v['peak_bytes'] / 2**20:.0f} | {(v['peak_bytes'] - v['before_bytes']) / 2**20:.0f} |"
                         for k, v in report["memory"].items())
        kind = "GPU max allocated" if pipeline.device.type == "cuda" else "process peak RSS"
        parts.append(f"### Peak memory ({kind})\n\n| variant | peak MiB | above the loaded model MiB |\n"
                     f"|---|---|---|\n{rows}")
        print(parts[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n\n".join(parts) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
