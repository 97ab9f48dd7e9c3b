"""Seeded, randomly initialised models of the real SD1 and SD2 architectures, small enough for
a CPU (``tiny``, ``tiny-sd2``).

Its images are noise; it exists so tests, benchmarks and smoke runs exercise the real code paths
(diffusers UNet and VAE, transformers CLIP text model, the real CLIP tokenizer) without weights.
It is made *sensitive*: any weight the architectures start at zero gets small random values, and
the output projections of the UNet's transformer blocks are scaled up, so a different prompt gives
a visibly different image and attention and guidance tests can fail.

``tiny-sd2`` differs where SD2 differs from SD1: linear projections in the UNet's transformers
and more heads in deeper blocks, an OpenCLIP-style text encoder (GELU, padding with ``!``, id 0),
and v-prediction.
"""

from __future__ import annotations

import torch

from .pipeline import Pipeline
from .tokenizer import clip_tokenizer

TINY_CONTEXT_DIM = 64
# Random init leaves the attention branch of each transformer block far weaker than the residual
# path, so prompts and attention edits would barely show; trained SD is not like that.
ATTENTION_GAIN = 10.0


def _unzero(*modules: torch.nn.Module, std: float = 0.02) -> None:
    for module in modules:
        for p in module.parameters():
            if p.dim() >= 2 and not p.detach().any():
                torch.nn.init.normal_(p, std=std)


TINY_FAMILIES = {"tiny": "sd1", "tiny-sd2": "sd2"}


def build_tiny_models(seed: int = 0, family: str = "sd1"):
    """(unet, vae, text_encoder), identical for the same seed and torch version."""
    sd2 = family == "sd2"
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            # three levels with attention at each: maps at 1, 1/2 and 1/4 of the latent, as in SD1
            block_out_channels=(32, 64, 64),
            down_block_types=("CrossAttnDownBlock2D",) * 3,
            up_block_types=("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=TINY_CONTEXT_DIM, attention_head_dim=(2, 4, 4) if sd2 else 2,
            use_linear_projection=sd2,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(32, 32, 64, 64), sample_size=64,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=TINY_CONTEXT_DIM, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
            projection_dim=TINY_CONTEXT_DIM, bos_token_id=49406, eos_token_id=49407,
            pad_token_id=0 if sd2 else 1, hidden_act="gelu" if sd2 else "quick_gelu",
        ))
        _unzero(unet, vae, text_encoder)
        with torch.no_grad():
            for name, module in unet.named_modules():
                if name.endswith(("proj_out", "to_out.0")):
                    module.weight.mul_(ATTENTION_GAIN)
    return unet, vae, text_encoder


def tiny_pipeline(seed: int = 0, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None, name: str = "tiny") -> Pipeline:
    from .clipseg import tiny_segmenter
    from .taesd import random_taesd

    family = TINY_FAMILIES[name]
    unet, vae, text_encoder = build_tiny_models(seed, family)
    device, dtype = torch.device(device or "cpu"), dtype or torch.float32
    tokenizer = clip_tokenizer(pad="!") if family == "sd2" else clip_tokenizer()
    return Pipeline(unet, vae, text_encoder, tokenizer, name=name, device=device, dtype=dtype,
                    prediction_type="v_prediction" if family == "sd2" else "epsilon",
                    segmenter=tiny_segmenter(seed, device, dtype),
                    tiny_vae=random_taesd(seed, tiny=True).to(device, dtype))
