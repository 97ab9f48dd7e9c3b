"""A tiny autoencoder in the VAE's latent space (TAESD) for guidance: decoding through it costs
a small fraction of the full VAE, forward and backward.

It changes the guidance gradient (another decoder), so it is off by default
(``guidance_decoder: "tiny"`` turns it on) until its gradient direction is validated against the
full VAE's on real weights: ``python -m bench.decoder --model <checkpoint>`` prints the cosine
similarity of the two gradients.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelError
from .hub import fetch_snapshot, looks_like_path

DEFAULT_TAESD = "madebyollin/taesd"  # SD1/SD2 latents
TAESD_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]
# a tiny seeded one for the tiny model, as sensitive as the rest of it
TINY_TAESD = dict(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                  num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))


def load_taesd(source: str | None, device, dtype) -> torch.nn.Module:
    """AutoencoderTiny from a folder, or a hub id via the cache (downloaded when online)."""
    from diffusers import AutoencoderTiny

    source = str(source or DEFAULT_TAESD)
    path = Path(source).expanduser()
    if not path.is_dir():
        if looks_like_path(source):
            raise ModelError(f"tiny decoder folder not found: {source}")
        path = fetch_snapshot(source, TAESD_FILES, f"tiny decoder {source!r} is",
                              "pass a local folder with the TAESD weights (taesd= / --taesd), or use "
                              "guidance_decoder vae")
    try:
        model = AutoencoderTiny.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load the tiny decoder from {path} ({type(exc).__name__})") from exc
    return model.to(device, dtype).eval().requires_grad_(False)


def random_taesd(seed: int = 0, tiny: bool = False) -> torch.nn.Module:
    """The TAESD architecture (or the tiny model's) with seeded random weights."""
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderTiny(**(TINY_TAESD if tiny else {})).eval().requires_grad_(False)
