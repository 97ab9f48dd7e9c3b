"""What mrgd reads from the WebUI's model objects (AUTOMATIC1111 v1.10, SD1 checkpoints).

Kept apart so the rest of the adapter talks to plain functions, and so the tests' stand-in of the
WebUI only has to match these few attributes: ``get_learned_conditioning``, the hijacked text
encoder's ``tokenize_line`` and ids, ``first_stage_model``, ``scale_factor``, ``alphas_cumprod``
and the UNet at ``model.diffusion_model``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..backends.tokenizer import clip_tokenizer
from ..spec import SpecError


class HostTextModel:
    """The host's text encoder seen through mrgd's ``TextModel`` protocol."""

    def __init__(self, sd_model):
        self.sd_model = sd_model
        clip = sd_model.cond_stage_model
        self._clip = clip
        self.bos_id, self.eos_id = clip.id_start, clip.id_end
        self.pad_id = clip.id_pad if clip.id_pad is not None else clip.id_end
        self._vocab = None

    @torch.no_grad()
    def encode_prompts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        # one text per call: a batch would be padded to its longest prompt
        return [self.sd_model.get_learned_conditioning([t])[0] for t in texts]

    def context_ids(self, text: str) -> list[int]:
        chunks, _ = self._clip.tokenize_line(text)
        return [t for chunk in chunks for t in chunk.tokens]

    def id_to_token(self, ids: Sequence[int]) -> list[str]:
        if self._vocab is None:  # SD1 and SD2 share CLIP's BPE vocabulary
            self._vocab = clip_tokenizer()
        return self._vocab.convert_ids_to_tokens(list(ids))


class HostModel(HostTextModel):
    """The loaded checkpoint as the engine's ``EditModel``: the host's text encoder, VAE and
    schedule; ``denoise`` is the adapter's call into the sampler's inner model (it needs the
    current host call's extra arguments), ``segmenter`` loads CLIPSeg on first use."""

    def __init__(self, sd_model, denoise, segmenter=None):
        super().__init__(sd_model)
        self.denoise = denoise
        self._segmenter = segmenter
        self.latent_multiple = latent_multiple(unet(sd_model))
        self.vae_scale = float(sd_model.scale_factor)
        self.decode_tensor = decode_for_guidance(sd_model)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.sd_model.alphas_cumprod.detach().double().cpu()

    def encode_image(self, image) -> torch.Tensor:
        raise NotImplementedError("the WebUI encodes the init image itself")

    def get_segmenter(self):
        return self._segmenter()

    def tiny_decoder(self):
        return None  # the WebUI's TAESD is a preview decoder the extension does not load yet


def latent_multiple(unet_model: torch.nn.Module) -> int:
    """2 ** (the UNet's downsamplings)."""
    downs = sum(1 for m in unet_model.modules() if type(m).__name__ in ("Downsample", "Downsample2D"))
    return 2 ** downs if downs else 8


def check_model(sd_model) -> None:
    """Refuse models mrgd cannot drive yet, with a message for the user."""
    if getattr(sd_model, "is_sdxl", False) or getattr(sd_model, "is_sd3", False):
        raise SpecError("model", "MRGD supports SD1.x and SD2.x checkpoints in this release (not SDXL/SD3)")
    if getattr(sd_model, "cond_stage_key", "") == "edit":
        raise SpecError("model", "MRGD does not support InstructPix2Pix (edit) checkpoints")
    if not hasattr(sd_model, "cond_stage_model") or not hasattr(sd_model.cond_stage_model, "tokenize_line"):
        raise SpecError("model", "this WebUI's text encoder has no tokenize_line (is this Forge? use A1111 v1.10)")


def encoded_text(text: str, p) -> tuple[str, bool]:
    """``text`` as the host encodes it: prompt comments stripped (when the setting is on) and
    extra-network tags removed (the host activates those of the main prompt itself); and whether
    it held such tags."""
    from modules import extra_networks, shared

    if getattr(shared.opts, "enable_prompt_comments", False):
        from modules.processing_scripts.comments import strip_comments

        text = strip_comments(text)
    networks = {}
    if not getattr(p, "disable_extra_networks", False):
        text, networks = extra_networks.parse_prompt(text)
    return text.strip(), bool(networks)


def running_script(p):
    """The selectable script (X/Y/Z plot, prompt matrix...) driving this run, or None: the
    host's script_args start with its 1-based index."""
    runner, args = getattr(p, "scripts", None), getattr(p, "script_args", None) or [0]
    index = args[0]
    scripts = getattr(runner, "selectable_scripts", [])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 < index <= len(scripts):
        return None
    return scripts[index - 1]


def model_switched(sd_model, checkpoint) -> bool:
    """Whether the host swapped the model since ``sd_model`` (holding ``checkpoint``) was read:
    the refiner switch loads another checkpoint mid-sampling, into a new object or in place."""
    from modules import shared

    current = shared.sd_model
    return current is not sd_model or getattr(current, "sd_checkpoint_info", None) is not checkpoint


def interrupted() -> bool:
    from modules import shared

    return bool(shared.state.interrupted or shared.state.skipped)


def report_progress(step: int, steps: int, text: str) -> None:
    """Move the host's progress bar (its /progress reads these) and say which phase runs."""
    from modules import shared

    shared.state.sampling_step, shared.state.sampling_steps = step, steps
    shared.state.textinfo = text


def unet(sd_model) -> torch.nn.Module:
    return sd_model.model.diffusion_model


def decode_for_guidance(sd_model):
    """latents -> images in [0, 1], unclamped and differentiable (the host's own decode is no_grad)."""
    vae = sd_model.first_stage_model
    dtype = next(vae.parameters()).dtype

    def decode(z: torch.Tensor, clamp: bool = False) -> torch.Tensor:
        images = vae.decode(z.to(dtype) / sd_model.scale_factor).float() / 2 + 0.5
        return images.clamp(0, 1) if clamp else images

    return decode


def alpha_bar(sd_model, sigma: float, timestep_sampler: bool) -> float:
    """ᾱ at this call: DDIM-like samplers pass the timestep, k-diffusion passes sigma."""
    if timestep_sampler:
        return float(sd_model.alphas_cumprod[int(round(sigma))])
    return 1.0 / (1.0 + float(sigma) ** 2)
