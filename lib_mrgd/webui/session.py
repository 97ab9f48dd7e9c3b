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

import dataclasses
import json
import logging
import re
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
NOTES_KEY = "MRGD notes"
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

    def note(self, p, text: str) -> None:
        """A warning for the console and the infotext (what an API client sees)."""
        if text not in self.warnings:
            self.warnings.append(text)
        p.extra_generation_params[NOTES_KEY] = "; ".join(self.warnings)


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
    # checked first: "false" or 0 must not run the edit, and a switched-off spec is not validated
    if not arg or not EditSpec.from_dict({"enabled": arg.get("enabled", True)}).enabled:
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
        raise SpecError("regions", f"at most {max_regions} region{'s' if max_regions != 1 else ''} "
                                   f"(the MRGD maximum-regions setting), got {len(spec.regions)}")
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
        session.note(p, f"batch count {p.n_iter} forced to 1: one run makes one source/target pair")
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
    p.do_not_save_grid = True  # the pair is two images, not a grid
    # attention-shape changers would hide the maps attention control reads
    for key in ("token_merging_ratio", "token_merging_ratio_hr", "token_merging_ratio_img2img"):
        p.override_settings[key] = 0.0
    p.override_settings["hypertile_enable_unet"] = False
    p.override_settings["hypertile_enable_unet_secondpass"] = False
    p.extra_generation_params[INFOTEXT_KEY] = infotext_value(spec)
    p.extra_generation_params[IMAGE_KEY] = _image_name
    p.mrgd_session = session
    return session


# a pasted infotext without MRGD switches the panel off and keeps its boxes (the panel script
# reads this; sent as the script's argument it is simply "off")
PASTED_OFF = '{"enabled":false,"keep_regions":true}'


def pasted_value(params: dict) -> str:
    """The spec field's value for a pasted infotext (the host calls this with the parsed fields)."""
    return params.get(INFOTEXT_KEY) or PASTED_OFF


def lead_with_pair(p, processed) -> None:
    """Put the source | target pair first, for scripts that keep a run's first image (X/Y/Z
    plot cells); later infotexts made from ``p`` (the plot's grid) say ``MRGD image: pair``."""
    from PIL import Image

    images = [im for im in processed.images[processed.index_of_first_image:] if im is not None]
    if len(images) < 2:
        return
    source, target = images[:2]
    pair = Image.new(source.mode, (source.width + target.width, max(source.height, target.height)))
    pair.paste(source, (0, 0))
    pair.paste(target, (source.width, 0))
    text = processed.infotexts[processed.index_of_first_image]
    text = text.replace(f"{IMAGE_KEY}: source", f"{IMAGE_KEY}: pair")
    pair.info["parameters"] = text
    processed.images.insert(0, pair)
    processed.infotexts.insert(0, text)
    p.extra_generation_params[IMAGE_KEY] = "pair"


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


def encoded_spec(spec: EditSpec, p, session: Session) -> EditSpec:
    """The spec with every prompt as the host encodes its own (comments stripped, extra-network
    tags removed), so a comment or a LoRA tag does not change what MRGD encodes."""
    def text(t: str) -> str:
        return host.encoded_text(t, p)[0] if t else t

    regions = []
    for i, r in enumerate(spec.regions):
        sides = {}
        for side in ("source", "target"):
            raw = getattr(r, side)
            sides[side], networks = host.encoded_text(raw, p) if raw else (raw, False)
            if raw and not sides[side]:
                raise SpecError(f"regions[{i}].{side}", "nothing is left once comments and extra-network tags are removed")
            if networks:
                session.note(p, f"regions[{i}].{side}: extra networks in a region prompt are not applied "
                                "(networks apply from the main prompt, to the whole image)")
        regions.append(dataclasses.replace(r, **sides, negative=text(r.negative)))
    return dataclasses.replace(spec, background=text(spec.background), negative=text(spec.negative),
                               common=text(spec.common), common_negative=text(spec.common_negative), regions=regions)


class _Stopped(Exception):
    """The user interrupted or skipped while the init image was being inverted."""


class Runtime:
    """Everything one sampling pass needs, and the patches that put it in place."""

    def __init__(self, p, session: Session, x: torch.Tensor, guidance_segmenter=None):
        self.p, self.session = p, session
        self.sd_model = p.sd_model
        self.hires = bool(getattr(p, "is_hr_pass", False))
        latent_h, latent_w = x.shape[-2:]
        spec = encoded_spec(session.spec, p, session)
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
        for warning in warnings:
            session.note(p, warning)
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
        self.completed = 0  # sampler steps done (the sampler's callback), for once-per-step guidance
        self._guided_at: int | None = None
        self._checkpoint = getattr(self.sd_model, "sd_checkpoint_info", None)
        self.plain = False  # after a refiner switch: the rest of the pass runs as the host's own
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
            if hasattr(sampler, "callback_state"):
                self.patches.set(sampler, "callback_state", self._counting(sampler.callback_state))
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
            self.session.note(self.p, f"img2img inversion skipped ({reason}); the init image was noised as usual")
            return False
        sampler = self.p.sampler
        eta = self.p.eta if getattr(self.p, "eta", None) is not None else getattr(
            shared.opts, getattr(sampler, "eta_option_field", "eta_ddim"), 0.0)
        if eta:
            self.p.eta = 0.0  # the inverted trajectory is the deterministic (eta 0) one
            self.session.note(self.p, f"eta {eta:g} set to 0 for img2img inversion (it inverts the eta-0 trajectory)")
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
                try:
                    self.tuned = invert_latent(x[:1].float(), fusion, grid, self.spec.cfg_scale, self.layout,
                                               progress_of=lambda i: i / (t_enc + 1),
                                               tick=self._inversion_tick(2 * len(grid.timesteps)))
                except _Stopped:
                    print("MRGD: interrupted during img2img inversion; the init image is returned")
                    return x  # as the host answers an interrupt: the latest latent, the init image's
                finally:
                    host.report_progress(0, 0, None)  # sampling sets its own steps next
                a = float(ac[timesteps[t_enc]])
                noise.copy_((self.tuned.latent.to(x) - x * a**0.5) / (1 - a) ** 0.5)  # the host's xi is then our start
            return sample(p, x, noise, conditioning, unconditional_conditioning, steps=steps,
                          image_conditioning=image_conditioning)

        return run

    def _inversion_tick(self, total: int):
        """Progress for each inversion step and an interrupt check at every UNet evaluation; the
        console names each phase as it starts."""
        done, seen = [0], set()

        def tick(phase: str, finished: bool) -> None:
            if phase not in seen:
                seen.add(phase)
                print(f"MRGD: {'DDIM inversion' if phase == 'inversion' else phase + ' tuning'} of the init "
                      f"image ({total // 2} steps)")
                host.report_progress(done[0], total, f"MRGD {phase} {done[0]}/{total}")
            if finished:
                done[0] += 1
                host.report_progress(done[0], total, f"MRGD {phase} {done[0]}/{total}")
            if host.interrupted():
                raise _Stopped

        return tick

    def _counting(self, callback):
        def run(*args, **kwargs):
            self.completed += 1
            return callback(*args, **kwargs)

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
        if self.plain:
            return self._orig_cfg(x, sigma, **kwargs)
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
        if host.model_switched(self.sd_model, self._checkpoint):  # the refiner took over in this call
            self._go_plain()
            return denoised
        # once per sampler step: second-order and adaptive samplers call the model several times
        sampler_step = self.completed
        if (self.guidance is not None and x.shape[0] == 2 and sampler_step != self._guided_at
                and self.guidance.due(sampler_step)):
            self._guided_at = sampler_step
            ab = host.alpha_bar(self.sd_model, float(sigma[0]), self.timestep_sampler)
            denoised = self.guidance.correct(x, denoised, sampler_step, self.progress, ab,
                                             "eps" if self.timestep_sampler else "x0")
        return denoised

    def _go_plain(self) -> None:
        """The refiner pass runs as the host's own: MRGD edited the base model's steps."""
        self.plain = True
        detach(self.sites)
        self.session.note(self.p, "refiner pass is plain (MRGD acts before the refiner switch)")

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


def shown(error: SpecError) -> SpecError:
    """The error as the UI shows it: regions counted from 1 as the panel numbers its boxes,
    with the spec's own path kept (``region 1 (regions[0].box): ...``)."""
    match = re.match(r"regions\[(\d+)\]", error.path)
    if not match:
        return error
    return SpecError(f"region {int(match[1]) + 1} ({error.path})", error.reason)


def refuse(p, error: SpecError) -> None:
    """Make sampling fail with ``error``: hooks' own exceptions are only logged by the host."""
    patches = Patches()
    error = shown(error)

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
