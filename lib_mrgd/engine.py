"""Where an edit is assembled: spec -> layout -> conditioning -> attention control -> fusion ->
guidance, once, for every host.

The standalone runner, the WebUI adapter, inversion and the benchmarks all call
:func:`build_edit`; a host differs only in the :class:`EditModel` it passes (how it encodes
text, calls its UNet, decodes latents) and in how it drives sampling. What a method turns on is
decided in one place, :class:`MethodPlan`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import torch

from .attention.controller import EditController, build_controller
from .conditioning import Conditioning, Key, TextModel, encode_layers, layer_prompts
from .fusion import RegionFusion
from .guidance.guide import Guidance
from .guidance.segmenter import Segmenter
from .layout import IMAGES, Branch, Layout
from .method import MethodPlan
from .sampling import DDIMSampler, apply_cfg
from .spec import EditSpec


class EditModel(TextModel, Protocol):
    """What the engine needs from a model, whichever host holds it. SD2's v-prediction, SDXL's
    pooled and size conditioning and Forge's patcher differ here and nowhere else."""

    latent_multiple: int  # crops are multiples of this many latent pixels (2 ** UNet downsamplings)
    vae_scale: float  # x0 = vae_scale * (VAE latent)
    alphas_cumprod: torch.Tensor  # the training noise schedule, (1000,) float64

    def denoise(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, batch) -> torch.Tensor:
        """eps for rows of crops (see :class:`lib_mrgd.fusion.Denoiser`)."""

    def decode_tensor(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Images in [0, 1], differentiable under grad (guidance decodes unclamped)."""

    def encode_image(self, image) -> torch.Tensor:
        """The scaled latent of an RGB image."""

    def get_segmenter(self) -> Segmenter:
        """CLIPSeg for guidance (loaded on first use; ModelError when unavailable)."""

    def tiny_decoder(self):
        """A differentiable latents -> [0, 1] images through a tiny autoencoder, or None where the
        host has none (guidance then decodes through the VAE)."""


@dataclass
class Edit:
    spec: EditSpec
    plan: MethodPlan
    layout: Layout
    cond: Conditioning
    fusion: RegionFusion  # with the attention controller told about every call
    controller: EditController | None
    guidance: Guidance | None
    warnings: list[str] = field(default_factory=list)
    encode_s: float = 0.0

    @property
    def contexts(self) -> dict[Key, torch.Tensor]:
        """Every layer's encoded prompts, as built (tuned negatives are passed per call)."""
        return self.cond.contexts

    @cached_property
    def uncontrolled(self) -> RegionFusion:
        """The same fusion without attention control: inversion walks the source alone."""
        return RegionFusion(self.layout, self.cond.contexts, self.fusion.denoiser, max_batch=self.fusion.max_batch)

    def keywords(self, region: int, image: int) -> list[str]:
        """What guidance segments for a region in an image: the selected keywords, else the user's."""
        ctl = self.controller
        found = ctl.keywords(region, image) if ctl is not None and ctl.kw else []
        return found or list(self.spec.regions[region].keywords)


def build_edit(spec: EditSpec, method: str, model: EditModel, max_batch: int | None = None,
               control: bool = True, guided: bool = True) -> Edit:
    """The edit of a resolved ``spec`` with ``method`` on ``model``.

    ``control`` False builds only what inversion needs (layout, conditioning, fusion); ``guided``
    False leaves guidance out where the host cannot provide it.
    """
    plan = MethodPlan.of(method, spec.options, bool(spec.regions))
    layout = Layout.from_spec(spec, model.latent_multiple, total_region=plan.total_region)
    t0 = time.perf_counter()
    cond = encode_layers(layer_prompts(spec, layout), model)
    controller, warnings = None, []
    if control and plan.attention:
        controller, warnings = build_controller(spec, layout, cond, model, method)
    encode_s = time.perf_counter() - t0
    fusion = RegionFusion(layout, cond.contexts, model.denoise, max_batch=max_batch,
                          controller=controller)
    edit = Edit(spec, plan, layout, cond, fusion, controller, None, list(warnings), encode_s)
    if control and guided and plan.guidance:
        decode = model.tiny_decoder() if spec.options.guidance_decoder == "tiny" else None
        if decode is None:
            if spec.options.guidance_decoder == "tiny":
                edit.warnings.append("guidance_decoder tiny is not available here; guidance decodes through the VAE")
            decode = lambda z: model.decode_tensor(z, clamp=False)  # noqa: E731
        edit.guidance = Guidance(spec, layout, decode, model.get_segmenter(), edit.keywords, model.vae_scale)
    return edit


class EditDenoiser:
    """eps of the fused pair at step ``i``: fusion, CFG, then guidance when due. The standalone
    sampler's counterpart of the WebUI adapter's patched CFG denoiser.

    ``contexts_at(i)`` gives a step's contexts (tuned negatives of an inversion); ``separate``
    evaluates each CFG branch in its own fusion call, as null-text tuning did, so a
    reconstruction repeats the tuned trajectory exactly.
    """

    def __init__(self, edit: Edit, grid: DDIMSampler, images=IMAGES, contexts_at=None, separate: bool = False):
        self.edit, self.grid, self.images = edit, grid, tuple(images)
        self.fusion = edit.fusion
        self.contexts_at = contexts_at
        self.separate = separate
        scale = edit.spec.cfg_scale
        self.branches = (Branch.COND, Branch.UNCOND) if scale != 1.0 else (Branch.COND,)

    def __call__(self, x: torch.Tensor, i: int) -> torch.Tensor:
        spec, t, progress = self.edit.spec, self.grid.timesteps[i], i / self.grid.steps
        contexts = self.contexts_at(i) if self.contexts_at is not None else None
        if self.separate:
            out = {b: self.fusion(x, t, progress, self.images, (b,), contexts)[b] for b in self.branches}
        else:
            out = self.fusion(x, t, progress, self.images, self.branches, contexts)
        eps = apply_cfg(out[Branch.COND], out.get(Branch.UNCOND), spec.cfg_scale)
        guidance = self.edit.guidance
        if guidance is not None and guidance.due(i):
            eps = guidance.correct(x, eps, i, progress, self.grid.alphas[i], "eps")
        return eps
