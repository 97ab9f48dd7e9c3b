"""One sampling pass of an MRGD request in the WebUI: the edit assembled by the engine, and the
patches that put it in place.

The sampler's CFG denoiser, its inner model and the UNet's attention modules are patched on the
*instance*; everything comes off in a ``finally`` around the sampler call, on success, error and
interrupt. The runtime is bound on ``p`` (``p.mrgd_runtime``) for the rest of the request.
"""

from __future__ import annotations

import torch

from ..attention.patcher import attach, detach, find_sites
from ..engine import build_edit
from ..errors import SpecError
from ..inversion import with_null_texts
from ..layout import Branch
from . import host, img2img
from .patches import Patches
from .session import Session, encoded_spec


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
    def __init__(self, p, session: Session, x: torch.Tensor, guidance_segmenter=None):
        self.p, self.session = p, session
        self.sd_model = p.sd_model
        self.hires = bool(getattr(p, "is_hr_pass", False))
        latent_h, latent_w = x.shape[-2:]
        spec = encoded_spec(session.spec, p, session)
        if (latent_h * 8, latent_w * 8) != (spec.height, spec.width):
            spec = spec.replace(width=latent_w * 8, height=latent_h * 8)
        self.spec = spec
        # the hires pass keeps the layout of the pair; keyword selection, KSSA and guidance are
        # first-pass tools
        method = "p2p" if self.hires else "mrgd"
        self.model = host.HostModel(self.sd_model, self._denoise, guidance_segmenter)
        self.edit = build_edit(spec, method, self.model, guided=guidance_segmenter is not None)
        for warning in self.edit.warnings:
            session.note(p, warning)
        self.contexts = self.edit.contexts  # this step's (img2img: with the tuned negatives)
        self.tuned = None  # img2img: the init image's inversion (start noise, tuned negatives)
        self.completed = 0  # sampler steps done (the sampler's callback), for once-per-step guidance
        self._guided_at: int | None = None
        self._checkpoint = getattr(self.sd_model, "sd_checkpoint_info", None)
        self.plain = False  # after a refiner switch: the rest of the pass runs as the host's own
        self.rows = _Rows()
        self.progress = 0.0
        self._image_cond: dict = {}
        self._extra: dict = {}
        self.patches = Patches()
        self.sites = find_sites(host.unet(self.sd_model))
        self.closed = False
        self._install()
        p.mrgd_runtime = self

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
                if img2img.wanted(self):
                    sample = img2img.inverting(self, sample)
                self.patches.set(sampler, "sample_img2img", self._guarded(sample))
            attach(self.sites, self.edit.controller)
        except Exception:
            self.close()
            raise

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
        controller, guidance = self.edit.controller, self.edit.guidance
        if controller is not None:
            controller.finish()
            if controller.kw is not None:
                self.session.keywords = [{"region": r, "keywords": controller.keywords(r)}
                                         for r in range(len(self.spec.regions))]
        if guidance is not None:
            self.session.guidance = guidance.records

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
        step = cfg.step
        if self.tuned is not None and step < len(self.tuned.null_texts):
            self.contexts = with_null_texts(self.tuned.null_texts[step], self.edit.contexts, self.edit.layout)
        denoised = self._orig_cfg(x, sigma, **kwargs)
        if host.model_switched(self.sd_model, self._checkpoint):  # the refiner took over in this call
            self._go_plain()
            return denoised
        # once per sampler step: second-order and adaptive samplers call the model several times
        sampler_step = self.completed
        guidance = self.edit.guidance
        if (guidance is not None and x.shape[0] == 2 and sampler_step != self._guided_at
                and guidance.due(sampler_step)):
            self._guided_at = sampler_step
            ab = host.alpha_bar(self.sd_model, float(sigma[0]), self.timestep_sampler)
            denoised = guidance.correct(x, denoised, sampler_step, self.progress, ab,
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
        out = self.edit.fusion(x_images, sigma[:1], self.progress, images=images, branches=branches,
                               contexts=self.contexts)
        pos = {image: k for k, image in enumerate(images)}
        return torch.stack([out[branch][pos[image]] for image, branch in rows]).to(x.dtype)

    def _denoise(self, x, t, context, batch):
        cond = {"c_crossattn": [context]}
        if self._image_cond:
            cond["c_concat"] = [torch.stack([self._crop(self._image_cond[(r.image, r.branch)], r.window)
                                             for r in batch.rows])]
        return self._orig_inner(x, t.to(x.dtype), cond=cond, **self._extra)

    def _crop(self, image_cond: torch.Tensor, window) -> torch.Tensor:
        layout = self.edit.layout
        if image_cond.dim() == 3 and tuple(image_cond.shape[-2:]) == (layout.latent_h, layout.latent_w):
            ys, xs = window.slices
            return image_cond[:, ys, xs]
        return image_cond
