"""The guidance step: decode the fused x0 of source and target, segment each region's keywords
with CLIPSeg, and move x0 down the gradient of the weighted losses:

    x0 <- x0 - ((1 - abar_t) / sqrt(abar_t)) * dL/du,   u = x0 / s

with ``s`` the VAE's latent scale (0.18215 for SD1) and RGB in [-1, 1] in the IP term: the
variable and range the authors' code differentiates, so the paper's lambda give the paper's step
sizes. Relative to differentiating by x0 with RGB in [0, 1], this scales the CLIPSeg terms' step
(RS, IS) by s, the latent IP term's by 1/s and the RGB IP term's by 4s.

The same correction serves samplers that return eps (DDIM) and those that return x0 (k-diffusion):
the output is turned into x0, corrected, and turned back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..layout import SOURCE, TARGET, Layout
from ..spec import EditSpec, RegionKind, grid_span
from .losses import inherent_preservation, inter_image_similarity, region_specific
from .segmenter import Segmenter

EDITED = (RegionKind.ADDITION, RegionKind.REMOVAL, RegionKind.ATTRIBUTE)


def to_x0(out: torch.Tensor, x: torch.Tensor, alpha_bar: float, space: str) -> torch.Tensor:
    if space == "x0":
        return out
    return (x - (1 - alpha_bar) ** 0.5 * out) / alpha_bar**0.5


def step_size(alpha_bar: float) -> float:
    return (1 - alpha_bar) / alpha_bar**0.5


def output_per_x0(alpha_bar: float, space: str) -> float:
    """d(output)/d(x0) at fixed x_t: 1 for x0; -sqrt(abar)/sqrt(1 - abar) for eps."""
    return 1.0 if space == "x0" else -(alpha_bar**0.5) / (1 - alpha_bar) ** 0.5


def correct(out: torch.Tensor, alpha_bar: float, grad: torch.Tensor, space: str) -> torch.Tensor:
    """The guided output: x0 moves by ``-step_size * grad``, expressed in the denoiser's own space
    (an added shift, so a zero gradient leaves the output bit-identical)."""
    return out + (-step_size(alpha_bar) * output_per_x0(alpha_bar, space)) * grad


def box_mask(box: list[float], height: int, width: int) -> torch.Tensor:
    x, y, w, h = box
    x0, x1 = grid_span(x, w, width)
    y0, y1 = grid_span(y, h, height)
    mask = torch.zeros(height, width)
    mask[y0:y1, x0:x1] = 1.0
    return mask


@dataclass
class _Query:
    image: int
    region: int


class Guidance:
    def __init__(self, spec: EditSpec, layout: Layout, decode: Callable[[torch.Tensor], torch.Tensor],
                 segmenter: Segmenter, keywords: Callable[[int, int], list[str]], latent_scale: float):
        self.spec, self.o = spec, spec.options
        self.decode = decode  # latents -> images in [0, 1] (unclamped), differentiable
        self.segmenter = segmenter
        self.keywords = keywords
        self.latent_scale = latent_scale  # the VAE's scale: x0 = s * (VAE latent)
        h, w = layout.latent_h, layout.latent_w
        self.latent_size = (h, w)
        self.boxes = [box_mask(r.box, h, w) for r in spec.regions]
        # r_bg in IS: CLIPSeg's mask of the background prompt, as the authors segment r_bg like
        # every region; without a background prompt there is nothing to query, so the image
        # outside every box stands for it
        self.background_query = spec.background
        self.outside_boxes = 1 - torch.stack(self.boxes).amax(0) if self.boxes else torch.ones(h, w)
        edited = [b for r, b in zip(spec.regions, self.boxes) if r.kind in EDITED]
        self.inherent = 1 - torch.stack(edited).amax(0) if edited else torch.ones(h, w)
        kinds = {r.kind for r in spec.regions if r.kind in EDITED}
        self.move_source = not kinds or kinds != {RegionKind.ADDITION}  # additions move the target only
        self.queries = [_Query(image, i) for image in (SOURCE, TARGET)
                        for i, r in enumerate(spec.regions) if r.prompt(image)]
        self.both = [i for i, r in enumerate(spec.regions) if r.source and r.target]
        self.records: list[dict] = []

    def due(self, step: int) -> bool:
        return bool(self.queries) and step % self.o.guidance_every == 0

    def _query_text(self, q: _Query) -> str:
        words = self.keywords(q.region, q.image)
        return ", ".join(words) if words else self.spec.regions[q.region].prompt(q.image)

    def losses(self, x0: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        """Weighted RS, IS, IP and their total for fused clean latents ``x0`` (source, target)."""
        o, dev = self.o, x0.device
        z = x0 if o.guidance_decode_scale >= 1 else F.interpolate(
            x0, scale_factor=o.guidance_decode_scale, mode="bilinear", align_corners=False)
        # IS over r_bg and the regions present in both images (the paper's region set)
        with_is = progress >= o.is_start - 1e-9 and len(self.both) >= 1
        rows = [q.image for q in self.queries]
        texts = [self._query_text(q) for q in self.queries]
        if with_is and self.background_query:
            rows, texts = rows + [SOURCE, TARGET], texts + [self.background_query] * 2
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=dev.type == "cuda"):
            images = self.decode(z).float()
            masks = self.segmenter.masks(images, rows, texts, self.latent_size).float()
        n = len(self.queries)
        regions, background = masks[:n], masks[n:]
        boxes = torch.stack([self.boxes[q.region] for q in self.queries]).to(dev)
        zero = x0.new_zeros(())
        rs = o.lambda_rs * region_specific(regions, boxes)
        is_ = zero
        if with_is:
            pos = {(q.image, q.region): k for k, q in enumerate(self.queries)}
            if not len(background):
                background = self.outside_boxes.to(dev).expand(2, *self.latent_size)
            src = torch.cat([background[:1], regions[[pos[(SOURCE, r)] for r in self.both]]])
            tgt = torch.cat([background[1:], regions[[pos[(TARGET, r)] for r in self.both]]])
            is_ = o.lambda_is * inter_image_similarity(src, tgt, o.nce_temperature)
        ip = zero
        if progress >= o.ip_start - 1e-9:
            lam = o.lambda_ip if progress < 0.5 else o.lambda_ip / 2
            lat_mask = self.inherent.to(dev)
            img_mask = F.interpolate(lat_mask[None, None], size=images.shape[-2:], mode="nearest")[0]
            rgb = images * 2 - 1
            u = x0 / self.latent_scale
            ip = lam * inherent_preservation(rgb[0], rgb[1], img_mask, u[0], u[1], lat_mask)
        return {"rs": rs, "is": is_, "ip": ip, "total": rs + is_ + ip}

    def correct(self, x: torch.Tensor, out: torch.Tensor, step: int, progress: float, alpha_bar: float,
                space: str) -> torch.Tensor:
        """The guided denoiser output for latents ``x`` (rows: source, target)."""
        with torch.enable_grad():
            x0 = to_x0(out, x, alpha_bar, space).detach().float()
            u = (x0 / self.latent_scale).requires_grad_(True)  # the variable the lambda are calibrated for
            before = self.losses(u * self.latent_scale, progress)
            (grad,) = torch.autograd.grad(before["total"], u)
        if not self.move_source:
            grad[SOURCE] = 0
        guided = correct(out, alpha_bar, grad.to(out.dtype), space)
        record = {"step": step, "progress": round(progress, 4),
                  "before": {k: float(v.detach()) for k, v in before.items()}}
        if self.o.guidance_check:  # a second decode and segmentation, for the record only
            with torch.no_grad():
                after = self.losses(to_x0(guided.float(), x.float(), alpha_bar, space), progress)
            record["after"] = {k: float(v) for k, v in after.items()}
        self.records.append(record)
        return guided

    def summary(self) -> dict:
        decreased = [r["after"]["total"] <= r["before"]["total"] for r in self.records if "after" in r]
        return {"enabled": True, "steps": self.records,
                "decreased_fraction": sum(decreased) / len(decreased) if decreased else None}
