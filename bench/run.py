"""Run every benchmark of the project and print (or write) one markdown report of ratios.

    python -m bench.run [--model tiny] [--device cpu] [--out bench.md]

Ratios are measured side by side in one run; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCHMARKS = ["fusion", "attention", "guidance", "inversion"]


def main(argv=None) -> int:
    import importlib

    from lib_mrgd import load_pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=256, help="image size in pixels")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)

    pipeline = load_pipeline(args.model, device=args.device)
    device = torch.cuda.get_device_name() if pipeline.device.type == "cuda" else platform.processor() or "cpu"
    sections = [f"# mrgd benchmarks\n\nmodel {pipeline.name}, {device}, torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads"]
    for name in (args.only.split(",") if args.only else BENCHMARKS):
        module = importlib.import_module(f"bench.{name}")
        sections.append(module.run(pipeline, size=args.size, rounds=args.rounds))
        print(sections[-1] + "\n", flush=True)
    report = "\n\n".join(sections) + "\n"
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
