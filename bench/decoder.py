"""Validate the tiny guidance decoder against the full VAE: the cosine similarity of the two
guidance gradients (per loss term and in total) and the time of one guided step with each.

    python -m bench.decoder --model <checkpoint or folder> [--taesd <folder>] [--size 512]

Only real weights say anything here: with random ones (tiny, random-sd15) the two decoders are
unrelated and the cosine is near 0. ``guidance_decoder: "tiny"`` stays off by default until this
reports directions close to the VAE's on the checkpoints users load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def gradients(guidance, x0: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
    out = {}
    for term in ("rs", "is", "ip", "total"):
        with torch.enable_grad():
            u = (x0 / guidance.latent_scale).detach().requires_grad_(True)
            loss = guidance.losses(u * guidance.latent_scale, progress)[term]
            out[term] = torch.autograd.grad(loss, u, allow_unused=True)[0] if loss.requires_grad else torch.zeros_like(u)
    return out


def main(argv=None) -> int:
    from lib_mrgd import load_pipeline, load_spec
    from lib_mrgd.engine import build_edit

    from .edit import spec as edit_spec
    from .inversion import photo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--taesd", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    pipeline = load_pipeline(args.model, device=args.device, taesd=args.taesd)
    spec = load_spec(edit_spec(args.size, 20)).resolved()
    x0 = pipeline.encode_image(photo(args.size)).repeat(2, 1, 1, 1)
    results = {}
    for decoder in ("vae", "tiny"):
        edit = build_edit(spec.replace(options={**spec.options.to_dict(), "guidance_decoder": decoder}), "mrgd", pipeline)
        t0 = time.perf_counter()
        results[decoder] = gradients(edit.guidance, x0, 0.6)
        results[decoder + "_s"] = time.perf_counter() - t0
    for term in ("rs", "is", "ip", "total"):
        a, b = results["vae"][term].flatten(), results["tiny"][term].flatten()
        cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if a.norm() > 0 and b.norm() > 0 else float("nan")
        print(f"{term}: cosine(VAE gradient, tiny gradient) = {cos:.3f}")
    print(f"four gradients: VAE {results['vae_s']:.2f} s, tiny {results['tiny_s']:.2f} s ({pipeline.name}, {args.size}px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
