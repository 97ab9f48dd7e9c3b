"""One MRGD request inside the WebUI: from the script argument to patched sampling and back.

- ``begin`` (``before_process``): read the spec, take size, seed, steps, CFG, sampler and prompts
  from the WebUI's own fields, and turn the request into one batch of two (source, target) with
  the same seed. A bad spec changes nothing on ``p``; the error is raised when sampling starts, so
  the UI shows it and the API answers with the host's error response.
- ``Runtime`` (``process_before_every_sampling``, once per sampling pass): build the layout,
  conditioning, attention controller, fusion and guidance for this pass, and patch the sampler's
  CFG denoiser, its inner model and the UNet's attention modules on the *instance*. Everything
  comes off in a ``finally`` around the sampler call, on success, error and interrupt.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attention.controller import build_controller
from ..attention.patcher import attach, detach, find_sites, sweep
from ..conditioning import encode_layers, layer_prompts
from ..fusion import RegionFusion
from ..guidance.guide import Guidance
from ..inversion import invert_latent, with_null_texts
from ..layout import Branch, Layout
from ..sampling import DDIMSampler
from ..spec import EditSpec, SpecError
from . import host
from .patches import Patches

log = logging.getLogger("mrgd")
INFOTEXT_KEY = "MRGD"
IMAGE_KEY = "MRGD image"
HOST_FIELDS = ("width", "height", "seed", "steps", "cfg_scale", "sampler")
# where the main prompt and negative go: spec.main_prompt_common true -> common, false -> background
MAIN_PROMPT_FIELDS = {True: ("common", "common_negative"), False: ("background", "negative")}


@dataclass
class Session:
    spec: EditSpec | None
    error: SpecError | None = None
    warnings: list[str] = field(default_factory=list)
    keywords: list[dict] = field(default_factory=list)
    guidance: list[dict] = field(default_factory=list)


def read_argument(arg: Any) -> dict | None:
    """The spec as a dict, or None when the script is off (no spec, or ``"enabled": false``)."""
    if arg is None or (isinstance(arg, str) and not arg.strip()):
        return None
    if isinstance(arg, str):
        try:
            arg = json.loads(arg)
        except json.JSONDecodeError as exc:
            raise SpecError("spec", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(arg, dict):
        raise SpecError("spec", f"expected an object, got {type(arg).__name__}")
    if not arg or arg.get("enabled") is False:
        return None
    return arg


def host_spec(data: dict, p, max_regions: int) -> EditSpec:
    """The spec with the WebUI's own fields filled in (they win over the spec's). The main
    prompt and negative become ``common``/``common_negative`` (every layer's prefix) or, with
    ``main_prompt_common`` false, ``background``/``negative``."""
    from modules import processing

    prompt = p.prompt if isinstance(p.prompt, str) else p.prompt[0]
    negative = p.negative_prompt if isinstance(p.negative_prompt, str) else p.negative_prompt[0]
    seed = p.seed[0] if isinstance(p.seed, list) else p.seed
    merged = {**data, "width": p.width, "height": p.height, "seed": int(processing.get_fixed_seed(seed)),
              "steps": p.steps, "cfg_scale": float(max(p.cfg_scale, 1.0)), "sampler": p.sampler_name or "DDIM"}
    merged.pop("enabled", None)
    mode = merged.get("main_prompt_common", True)
    if isinstance(mode, bool):  # anything else is refused by the spec check below
        main, main_negative = MAIN_PROMPT_FIELDS[mode]
        merged.update({main: prompt or "", main_negative: negative or ""})
    spec = EditSpec.from_dict(merged)
    if len(spec.regions) > max_regions:
        raise SpecError("regions", f"at most {max_regions} regions (the MRGD maximum-regions setting)")
    return spec


def begin(p, arg: Any, max_regions: int = 16) -> Session | None:
    """``before_process``: validate and, when valid, make ``p`` a source/target batch."""
    sweep(host.unet(p.sd_model))  # hooks a crashed request may have left (postprocess is skipped then)
    try:
        data = read_argument(arg)
        if data is None:
            return None
        host.check_model(p.sd_model)
        spec = host_spec(data, p, max_regions)
    except SpecError as exc:
        session = Session(None, exc)
        p.mrgd_session = session
        return session
    session = Session(spec)
    if getattr(p, "n_iter", 1) != 1:
        session.warnings.append("batch count forced to 1: one run makes one source/target pair")
    # both images share the prompts, so they stay strings (an empty hires prompt copies the prompt,
    # and the host's comment stripping expects a string there); the seed list makes the pair
    main, main_negative = MAIN_PROMPT_FIELDS[spec.main_prompt_common]
    p.prompt = getattr(spec, main)
    p.negative_prompt = getattr(spec, main_negative)
    p.seed = [spec.seed, spec.seed]
    subseed = p.subseed[0] if isinstance(p.subseed, list) else p.subseed
    from modules import processing

    p.subseed = [int(processing.get_fixed_seed(subseed))] * 2
    p.batch_size, p.n_iter = 2, 1
    # attention-shape changers would hide the maps attention control reads
    for key in ("token_merging_ratio", "token_merging_ratio_hr", "token_merging_ratio_img2img"):
        p.override_settings[key] = 0.0
    p.override_settings["hypertile_enable_unet"] = False
    p.override_settings["hypertile_enable_unet_secondpass"] = False
    p.extra_generation_params[INFOTEXT_KEY] = infotext_value(spec)
    p.extra_generation_params[IMAGE_KEY] = _image_name
    p.mrgd_session = session
    return session


def infotext_value(spec: EditSpec) -> str:
    """The spec without the fields the infotext already carries, as one compact JSON."""
    data = spec.to_dict()
    for key in (*HOST_FIELDS, *MAIN_PROMPT_FIELDS[spec.main_prompt_common], "enabled"):
        data.pop(key, None)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _image_name(index: int | None = None, position_in_batch: int = 0, **_) -> str:
    """Called by the host's create_infotext with its locals; the batch is (source, target)."""
    return "source" if (position_in_batch if index is None else index) % 2 == 0 else "target"


def _latent_multiple(unet: torch.nn.Module) -> int:
    downs = sum(1 for m in unet.modules() if type(m).__name__ in ("Downsample", "Downsample2D"))
    return 2 ** downs if downs else 8


class _Rows:
    """Which (image, branch) each row of an inner-model call is.

    The CFG denoiser builds one virtual batch ``[cond image 0..n-1, uncond image 0..n-1]`` and
    hands it to the inner model in order, whole or in slices (long prompts, ``batch_cond_uncond``
    off, skipped uncond); counting rows since the start of the CFG call names them all.
    """

    def __init__(self) -> None:
        self.images = 0
        self.offset = 0

    def reset(self, images: int) -> None:
        self.images, self.offset = images, 0

    def take(self, n: int) -> list[tuple[int, Branch]] | None:
        rows = []
        for k in range(self.offset, self.offset + n):
            if k < self.images:
                rows.append((k, Branch.COND))
            elif k < 2 * self.images:
                rows.append((k - self.images, Branch.UNCOND))
            else:
                return None
        self.offset += n
        return rows


class Runtime:
    """Everything one sampling pass needs, and the patches that put it in place."""

    def __init__(self, p, session: Session, x: torch.Tensor, guidance_segmenter=None):
        self.p, self.session = p, session
        self.sd_model = p.sd_model
        self.hires = bool(getattr(p, "is_hr_pass", False))
        latent_h, latent_w = x.shape[-2:]
        spec = session.spec
        if (latent_h * 8, latent_w * 8) != (spec.height, spec.width):
            spec = spec.replace(width=latent_w * 8, height=latent_h * 8)
        # the hires pass keeps the layout of the pair; keyword selection, KSSA and guidance are
        # first-pass tools
        method = "p2p" if self.hires else "mrgd"
        unet = host.unet(self.sd_model)
        self.layout = Layout.from_spec(spec, _latent_multiple(unet), total_region=method == "mrgd" and spec.options.total_region)
        text = host.HostTextModel(self.sd_model)
        cond = encode_layers(layer_prompts(spec, self.layout), text)
        self.controller, warnings = build_controller(spec, self.layout, cond, text, method)
        session.warnings += [w for w in warnings if w not in session.warnings]
        self.fusion = RegionFusion(self.layout, cond.contexts, self._denoise, controller=self.controller)
        self.guidance = None
        if method == "mrgd" and spec.options.guidance and spec.regions and guidance_segmenter is not None:
            def keywords(region: int, image: int) -> list[str]:
                found = self.controller.keywords(region, image) if self.controller.kw else []
                return found or list(spec.regions[region].keywords)

            self.guidance = Guidance(spec, self.layout, host.decode_for_guidance(self.sd_model),
                                     guidance_segmenter(), keywords, float(self.sd_model.scale_factor))
        self.spec = spec
        self.base_contexts = dict(cond.contexts)
        self.tuned = None  # img2img: the init image's inversion (start noise, tuned negatives)
        self.step_index = 0
        self.rows = _Rows()
        self.progress = 0.0
        self._image_cond: dict = {}
        self._extra: dict = {}
        self.patches = Patches()
        self.sites = find_sites(unet)
        self.closed = False
        self._install()

    # -- patches -------------------------------------------------------------------------------

    def _install(self) -> None:
        sampler = self.p.sampler
        cfg = sampler.model_wrap_cfg
        self.timestep_sampler = hasattr(sampler, "get_timesteps")
        self._orig_cfg = cfg.forward
        self._orig_inner = cfg.inner_model.forward
        self._cfg = cfg
        try:
            self.patches.set(cfg, "forward", self._cfg_forward)
            self.patches.set(cfg.inner_model, "forward", self._inner_forward)
            if hasattr(sampler, "sample"):
                self.patches.set(sampler, "sample", self._guarded(sampler.sample))
            if hasattr(sampler, "sample_img2img"):
                sample = sampler.sample_img2img
                if self._wants_inversion():
                    sample = self._inverting(sample)
                self.patches.set(sampler, "sample_img2img", self._guarded(sample))
            attach(self.sites, self.controller)
        except Exception:
            self.close()
            raise

    def _wants_inversion(self) -> bool:
        """img2img starts from the init image's inversion where the host's sampler allows it."""
        from modules import processing, shared

        if not isinstance(self.p, processing.StableDiffusionProcessingImg2Img) or self.hires:
            return False
        if not self.spec.options.img2img_inversion:
            return False
        reason = None
        if not self.timestep_sampler:
            reason = "it needs a DDIM-type sampler"
        elif getattr(self.sd_model.model, "conditioning_key", "crossattn") != "crossattn":
            reason = "inpainting models are not supported"
        elif getattr(shared.opts, "img2img_extra_noise", 0) > 0:
            reason = "img2img extra noise is on"
        if reason:
            self.session.warnings.append(f"img2img inversion skipped ({reason}); the init image was noised as usual")
            return False
        return True

    def _inverting(self, sample):
        def run(p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
            from modules import sd_samplers_common

            total, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
            timesteps = [int(t) for t in p.sampler.get_timesteps(p, total)]
            if t_enc >= 2:
                ac = self.sd_model.alphas_cumprod.detach().double().cpu()
                # the host's DDIM evaluates timesteps[t_enc-1] .. timesteps[1], ending at timesteps[0]'s level
                used = timesteps[:t_enc][::-1]
                grid = DDIMSampler.on_grid(ac, used[:-1], [float(ac[t]) for t in used[1:]])
                fusion = RegionFusion(self.layout, self.base_contexts, self._denoise)
                self.tuned = invert_latent(x[:1].float(), fusion, grid, self.spec.cfg_scale, self.layout,
                                           progress_of=lambda i: i / (t_enc + 1))
                a = float(ac[timesteps[t_enc]])
                noise.copy_((self.tuned.latent.to(x) - x * a**0.5) / (1 - a) ** 0.5)  # the host's xi is then our start
            return sample(p, x, noise, conditioning, unconditional_conditioning, steps=steps,
                          image_conditioning=image_conditioning)

        return run

    def _guarded(self, sample):
        def run(*args, **kwargs):
            try:
                return sample(*args, **kwargs)
            finally:
                self.close()

        return run

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        detach(self.sites)
        self.patches.undo()
        if self.controller is not None:
            self.controller.finish()
            if self.controller.kw is not None:
                self.session.keywords = [{"region": r, "keywords": self.controller.keywords(r)}
                                         for r in range(len(self.spec.regions))]
        if self.guidance is not None:
            self.session.guidance = self.guidance.records

    # -- the patched calls -----------------------------------------------------------------------

    def _cfg_forward(self, x, sigma, **kwargs):
        cfg = self._cfg
        cond = kwargs.get("cond")
        batch = getattr(cond, "batch", None)
        if batch is not None and any(len(b) != 1 for b in batch):
            raise SpecError("prompt", "MRGD does not support AND in the prompt")
        self.progress = cfg.step / cfg.total_steps if cfg.total_steps else 0.0
        self.rows.reset(x.shape[0])
        step = self.step_index = cfg.step
        if self.tuned is not None and step < len(self.tuned.null_texts):
            self.fusion.contexts = with_null_texts(self.tuned.null_texts[step], self.base_contexts, self.layout)
        denoised = self._orig_cfg(x, sigma, **kwargs)
        if self.guidance is not None and x.shape[0] == 2 and self.guidance.due(step):
            ab = host.alpha_bar(self.sd_model, float(sigma[0]), self.timestep_sampler)
            denoised = self.guidance.correct(x, denoised, step, self.progress, ab,
                                             "eps" if self.timestep_sampler else "x0")
        return denoised

    def _inner_forward(self, x, sigma, **kwargs):
        rows = self.rows.take(x.shape[0])
        cond = kwargs.get("cond")
        if rows is None or not isinstance(cond, dict) or not isinstance(cond.get("c_crossattn"), list):
            return self._orig_inner(x, sigma, **kwargs)
        images = sorted({image for image, _ in rows})
        branches = tuple(b for b in (Branch.COND, Branch.UNCOND) if any(br == b for _, br in rows))
        first = {image: next(k for k, (i, _) in enumerate(rows) if i == image) for image in images}
        concat = cond.get("c_concat", [None])[0]
        self._image_cond = {row: concat[k] for k, row in enumerate(rows)} if concat is not None else {}
        self._extra = {k: v for k, v in kwargs.items() if k != "cond"}
        x_images = torch.stack([x[first[i]] for i in images])
        out = self.fusion(x_images, sigma[:1], self.progress, images=images, branches=branches)
        pos = {image: k for k, image in enumerate(images)}
        return torch.stack([out[branch][pos[image]] for image, branch in rows]).to(x.dtype)

    def _denoise(self, x, t, context, batch):
        cond = {"c_crossattn": [context]}
        if self._image_cond:
            cond["c_concat"] = [torch.stack([self._crop(self._image_cond[(r.image, r.branch)], r.window)
                                             for r in batch.rows])]
        return self._orig_inner(x, t.to(x.dtype), cond=cond, **self._extra)

    def _crop(self, image_cond: torch.Tensor, window) -> torch.Tensor:
        if image_cond.dim() == 3 and tuple(image_cond.shape[-2:]) == (self.layout.latent_h, self.layout.latent_w):
            ys, xs = window.slices
            return image_cond[:, ys, xs]
        return image_cond


def refuse(p, error: SpecError) -> None:
    """Make sampling fail with ``error``: hooks' own exceptions are only logged by the host."""
    patches = Patches()

    def fail(*args, **kwargs):
        patches.undo()
        raise error

    for name in ("sample", "sample_img2img"):
        if hasattr(p.sampler, name):
            patches.set(p.sampler, name, fail)


def summary(session: Session) -> str:
    """One line for the console after a run."""
    parts = []
    if session.keywords:
        parts.append("keywords " + "; ".join(f"[{k['region']}] {', '.join(k['keywords']) or '-'}" for k in session.keywords))
    if session.guidance:
        fell = sum(r["after"]["total"] <= r["before"]["total"] for r in session.guidance)
        parts.append(f"guidance lowered the loss at {fell}/{len(session.guidance)} steps")
    parts += session.warnings
    return "MRGD: " + (" | ".join(parts) if parts else "done")
