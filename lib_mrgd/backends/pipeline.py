"""A Stable Diffusion model as the standalone runner uses it: text encoding with the WebUI's
chunking and emphasis, a denoiser returning eps, the VAE, and the noise schedule."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..layout import BatchLayout
from ..prompts import tokenize_prompt
from ..sampling import scaled_linear_alphas_cumprod


@dataclass
class Pipeline:
    unet: torch.nn.Module  # diffusers UNet2DConditionModel
    vae: torch.nn.Module  # diffusers AutoencoderKL
    text_encoder: torch.nn.Module  # transformers CLIPTextModel
    tokenizer: object  # transformers CLIPTokenizer
    name: str
    device: torch.device
    dtype: torch.dtype
    prediction_type: str = "epsilon"
    alphas_cumprod: torch.Tensor | None = None
    clipseg: str | None = None  # CLIPSeg weights for guidance: a folder or a hub id (None: the default)
    segmenter: object | None = None  # loaded on first use
    source: str | None = None  # what load_pipeline was given, so another process can load it too
    taesd: str | None = None  # the tiny decoder for guidance: a folder or a hub id (None: the default)
    tiny_vae: torch.nn.Module | None = None  # loaded on first use

    def __post_init__(self) -> None:
        if self.alphas_cumprod is None:
            self.alphas_cumprod = scaled_linear_alphas_cumprod()
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(self.device, self.dtype).eval().requires_grad_(False)
        tok = self.tokenizer
        self._bos, self._eos = tok.bos_token_id, tok.eos_token_id
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else self._eos
        self._comma = tok.convert_tokens_to_ids(",</w>")
        self._ac = self.alphas_cumprod.to(self.device, torch.float32)

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    @property
    def latent_multiple(self) -> int:
        """Crops are multiples of this many latent pixels: 2 ** (UNet downsamplings)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def vae_scale(self) -> float:
        return self.vae.config.scaling_factor

    def model_hash(self) -> str:
        """A short fingerprint of the weights, to refuse results computed with another model."""
        h = hashlib.sha256()
        for module in (self.unet, self.vae, self.text_encoder):
            for name, p in sorted(module.state_dict().items()):
                h.update(name.encode())
                h.update(p.detach().float().flatten()[:64].cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- text ------------------------------------------------------------------------------------

    @property
    def bos_id(self) -> int:
        return self._bos

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def pad_id(self) -> int:
        return self._pad

    def _encode_words(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, truncation=False).input_ids

    def tokenize(self, text: str):
        return tokenize_prompt(text, self._encode_words, self._bos, self._eos, self._comma, self._pad)

    def context_ids(self, text: str) -> list[int]:
        return self.tokenize(text).ids

    def id_to_token(self, ids) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(ids))

    @torch.no_grad()
    def encode_prompts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One ``(77 * chunks, dim)`` context per text, emphasis applied per chunk with the
        WebUI's mean restoration."""
        tokenized = [self.tokenize(t) for t in texts]
        ids = torch.tensor([c for tp in tokenized for c in tp.chunks], device=self.device)
        mults = torch.tensor([m for tp in tokenized for m in tp.multipliers], device=self.device)
        hidden = self.text_encoder(ids)[0].float()
        weighted = hidden * mults[..., None]
        mean_before = hidden.mean(dim=(1, 2), keepdim=True)
        mean_after = weighted.mean(dim=(1, 2), keepdim=True)
        emphasised = (mults != 1).any(dim=1)[:, None, None]
        hidden = torch.where(emphasised, weighted * (mean_before / mean_after), hidden)
        out, k = [], 0
        for tp in tokenized:
            n = len(tp.chunks)
            out.append(hidden[k:k + n].reshape(-1, hidden.shape[-1]).to(self.dtype))
            k += n
        return out

    # -- denoising -------------------------------------------------------------------------------

    def denoise(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                batch: BatchLayout | None = None) -> torch.Tensor:
        """eps for each row; ``t`` holds whole-number timesteps."""
        out = self.unet(x.to(self.dtype), t.to(self.device), encoder_hidden_states=context.to(self.dtype)).sample
        out = out.to(x.dtype)
        if self.prediction_type == "v_prediction":
            a = self._ac[t.long()].to(x.dtype)[:, None, None, None]
            out = a.sqrt() * out + (1 - a).sqrt() * x
        return out

    def initial_noise(self, seed: int, height: int, width: int) -> torch.Tensor:
        """Seeded on the CPU so a seed gives the same start on every device."""
        gen = torch.Generator("cpu").manual_seed(seed)
        shape = (1, self.latent_channels, height // 8, width // 8)
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(self.device)

    # -- VAE -------------------------------------------------------------------------------------

    def decode_tensor(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Images in [0, 1], ``(B, 3, H, W)``; differentiable when called under grad (guidance
        decodes unclamped, so saturated pixels still pass a gradient)."""
        images = self.vae.decode((latents / self.vae_scale).to(self.dtype)).sample.float() / 2 + 0.5
        return images.clamp(0, 1) if clamp else images

    def get_segmenter(self):
        """The CLIPSeg guidance model, loaded on first use (ModelError when unavailable)."""
        if self.segmenter is None:
            from .clipseg import load_segmenter

            self.segmenter = load_segmenter(self.clipseg, self.device, self.dtype)
        return self.segmenter

    def tiny_decoder(self):
        """latents -> images in [0, 1] through the tiny autoencoder (TAESD), differentiable;
        loaded on first use (ModelError when unavailable)."""
        if self.tiny_vae is None:
            from .taesd import load_taesd

            self.tiny_vae = load_taesd(self.taesd, self.device, self.dtype)
        vae = self.tiny_vae
        return lambda z: vae.decode(z.to(self.dtype)).sample.float() / 2 + 0.5

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        images = self.decode_tensor(latents).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(np.round(im * 255).astype(np.uint8)) for im in images]

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor:
        """The latent of an RGB image (mean of the VAE posterior, scaled)."""
        arr = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
        x = arr.permute(2, 0, 1)[None].to(self.device, self.dtype)
        return self.vae.encode(x).latent_dist.mean.float() * self.vae_scale
