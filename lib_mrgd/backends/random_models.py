"""Full-size Stable Diffusion 1.5 and CLIPSeg rd64-refined with seeded random weights.

Time and memory do not depend on the weights' values, so the real architectures at full size
give honest timings without a download (``--model random-sd15`` in the CLI, bench and eval).
Their images are noise: they are for timing only.
"""

from __future__ import annotations

import torch

from .pipeline import Pipeline
from .tokenizer import clip_tokenizer

# diffusers / transformers configs of the released SD1.5 and CIDAS/clipseg-rd64-refined models
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
    scaling_factor=0.18215)
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406, eos_token_id=49407)
CLIPSEG_RD64 = dict(vision_config={"patch_size": 16, "image_size": 352}, reduce_dim=64, extract_layers=[3, 6, 9],
                    conditional_layer=0, use_complex_transposed_convolution=True)
RANDOM_MODELS = ("random-sd15",)


def build(seed: int = 0, device: str | torch.device = "cpu") -> dict[str, torch.nn.Module]:
    """The four networks, seeded (``device="meta"`` builds the shapes only, for counting)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        return {
            "unet": UNet2DConditionModel(**SD15_UNET),
            "vae": AutoencoderKL(**SD15_VAE),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**SD15_TEXT)),
            "clipseg": CLIPSegForImageSegmentation(CLIPSegConfig(**CLIPSEG_RD64)),
        }


def random_pipeline(name: str, seed: int = 0, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None) -> Pipeline:
    from ..guidance.segmenter import Segmenter

    if name not in RANDOM_MODELS:
        raise ValueError(f"unknown random model {name!r}")
    device, dtype = torch.device(device or "cpu"), dtype or torch.float32
    parts = build(seed)
    segmenter = Segmenter(parts["clipseg"].to(device, dtype), clip_tokenizer(), 352, name="random-clipseg")
    from .taesd import random_taesd

    return Pipeline(parts["unet"], parts["vae"], parts["text_encoder"], clip_tokenizer(), name=name,
                    device=device, dtype=dtype, segmenter=segmenter, tiny_vae=random_taesd(seed).to(device, dtype))
