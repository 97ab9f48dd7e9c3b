"""Where each region lives on the latent grid and how much it counts at each pixel (Eq. 1).

Layers are r_bg (whole image, background prompt), one per box, and r_total (whole image, all
prompts; only in the last part of sampling). Boxes snap outward to the UNet's own grid (8 latent
pixels for SD, which downsamples 3x) so a crop can go through the UNet unchanged; the feathered
weight covers the snapped window. Objects and r_total are blended over the background layer:

    alpha = max_k w_k,   share_k = w_k / sum_k w_k,   out = (1 - alpha) * bg + alpha * sum_k share_k * z_k

so the effective weights of all layers sum to 1 at every pixel.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from functools import cached_property

import torch

from .spec import LATENT_FACTOR, EditSpec, RegionKind, grid_span

SOURCE, TARGET = 0, 1
IMAGES = (SOURCE, TARGET)


class Branch(str, enum.Enum):
    COND = "cond"
    UNCOND = "uncond"


class LayerKind(str, enum.Enum):
    BACKGROUND = "background"
    REGION = "region"
    TOTAL = "total"


@dataclass(frozen=True)
class Window:
    """A rectangle of the latent, in latent pixels."""

    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


def _snap_axis(start: float, length: float, size: int, multiple: int) -> tuple[int, int]:
    """Round to the latent grid, then grow outward to ``multiple``, staying inside ``size``."""
    a0, a1 = grid_span(start, length, size)
    if a1 <= a0:
        raise ValueError("empty after snapping")
    if multiple <= 1 or size < multiple:
        return a0, a1
    s0 = a0 // multiple * multiple
    s1 = min(math.ceil(a1 / multiple) * multiple, size)
    extent = math.ceil((s1 - s0) / multiple) * multiple
    return max(0, s1 - extent), s1


def snap_box(box: list[float], latent_w: int, latent_h: int, multiple: int) -> Window:
    x, y, w, h = box
    x0, x1 = _snap_axis(x, w, latent_w, multiple)
    y0, y1 = _snap_axis(y, h, latent_h, multiple)
    return Window(y0, x0, y1 - y0, x1 - x0)


def feather_weights(height: int, width: int, ratio: float,
                    open_sides: tuple[bool, bool, bool, bool] = (True, True, True, True)) -> torch.Tensor:
    """Quadratic ramp inside the window edge over ``ratio`` of the half short side.

    ``open_sides`` (top, bottom, left, right) says which edges border other content; an edge on
    the image border is not feathered, so a box drawn to the border reaches it.
    """
    ramp_len = ratio * min(height, width) / 2
    weight = torch.ones(height, width)
    if ramp_len <= 0:
        return weight
    rows = torch.arange(height, dtype=torch.float32) + 0.5
    cols = torch.arange(width, dtype=torch.float32) + 0.5

    def ramp(dist: torch.Tensor) -> torch.Tensor:
        return (dist / ramp_len).clamp(0, 1) ** 2

    top, bottom, left, right = open_sides
    if top:
        weight *= ramp(rows)[:, None]
    if bottom:
        weight *= ramp(height - rows)[:, None]
    if left:
        weight *= ramp(cols)[None, :]
    if right:
        weight *= ramp(width - cols)[None, :]
    return weight


def placed(window: Window, box: Window, values: torch.Tensor | float) -> torch.Tensor:
    """``values`` over ``box`` inside a zero map of ``window`` (both in latent pixels)."""
    out = torch.zeros(window.height, window.width)
    top, left = box.top - window.top, box.left - window.left
    out[top:top + box.height, left:left + box.width] = values
    return out


def box_weights(window: Window, box: Window, ratio: float, latent_h: int, latent_w: int) -> torch.Tensor:
    """The weight over ``window`` of a box drawn at ``box``: the feather inside the drawn box, 0 in
    the margin the snap added. Box edges on the image border are closed."""
    sides = (box.top > 0, box.top + box.height < latent_h, box.left > 0, box.left + box.width < latent_w)
    return placed(window, box, feather_weights(box.height, box.width, ratio, sides))


@dataclass
class Layer:
    index: int
    kind: LayerKind
    window: Window  # the crop sent to the UNet (the box snapped outward)
    weight: torch.Tensor  # (height, width) of the window
    present: tuple[bool, bool]  # drawn in the source, in the target
    region: int | None = None  # index into spec.regions
    region_kind: RegionKind | None = None
    box: Window | None = None  # the drawn box on the latent grid; None: the whole image

    def describe(self, factor: int = LATENT_FACTOR) -> dict:
        """Name, drawn box and crop in image pixels ``[x, y, w, h]``, and the share of the layer's
        weight outside its drawn box (what a user checks to see that a region stays in its box)."""
        box = self.box or self.window
        inside = placed(self.window, box, 1.0)
        total = float(self.weight.sum())
        outside = float((self.weight * (1 - inside)).sum()) / total if total > 0 else 0.0
        px = lambda w: [w.left * factor, w.top * factor, w.width * factor, w.height * factor]
        name = self.kind.value if self.region is None else f"region {self.region + 1}"
        return {"name": name, "box_px": px(box), "window_px": px(self.window), "weight_outside_box": outside}


@dataclass
class Layout:
    """All layers of an edit on one latent grid, and their blend weights per image and phase."""

    latent_h: int
    latent_w: int
    layers: list[Layer]
    total_start: float | None = None  # sampling progress from which r_total joins
    _blend_cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_spec(cls, spec: EditSpec, latent_multiple: int = 8, total_region: bool = False) -> "Layout":
        lh, lw = spec.height // LATENT_FACTOR, spec.width // LATENT_FACTOR
        full = Window(0, 0, lh, lw)
        layers = [Layer(0, LayerKind.BACKGROUND, full, torch.ones(lh, lw), (True, True))]
        for i, region in enumerate(spec.regions):
            win = snap_box(region.box, lw, lh, latent_multiple)
            drawn = snap_box(region.box, lw, lh, 1)
            layers.append(Layer(
                len(layers), LayerKind.REGION, win, box_weights(win, drawn, region.feather, lh, lw),
                (bool(region.source), bool(region.target)), i, region.kind, drawn))
        total_start = None
        if total_region and spec.regions:
            edits_objects = any(k in (RegionKind.ADDITION, RegionKind.REMOVAL) for k in spec.kinds)
            frac = spec.options.t_total_add_remove if edits_objects else spec.options.t_total
            if frac > 0:
                total_start = 1.0 - frac
                layers.append(Layer(len(layers), LayerKind.TOTAL, full, torch.ones(lh, lw), (True, True)))
        return cls(lh, lw, layers, total_start)

    def describe(self) -> list[dict]:
        return [layer.describe() for layer in self.layers]

    @cached_property
    def total(self) -> Layer | None:
        return next((l for l in self.layers if l.kind == LayerKind.TOTAL), None)

    def total_active(self, progress: float) -> bool:
        return self.total_start is not None and progress >= self.total_start - 1e-9

    def active_layers(self, image: int, progress: float) -> list[Layer]:
        with_total = self.total_active(progress)
        return [l for l in self.layers
                if l.present[image] and (l.kind != LayerKind.TOTAL or with_total)]

    def blend_weights(self, image: int, progress: float) -> torch.Tensor:
        """Effective weights ``(n_layers, H, W)``: zero for inactive layers, summing to 1."""
        key = (image, self.total_active(progress))
        if key not in self._blend_cache:
            self._blend_cache[key] = self._blend(self.active_layers(image, progress))
        return self._blend_cache[key]

    def contributing(self, image: int, progress: float) -> frozenset[int]:
        """Indices of the layers with a non-zero weight somewhere in ``image`` at ``progress``;
        a layer covered everywhere by others (r_bg under r_total) need not be denoised."""
        key = ("contributing", image, self.total_active(progress))
        if key not in self._blend_cache:
            weights = self.blend_weights(image, progress)
            self._blend_cache[key] = frozenset(
                int(i) for i in torch.nonzero(weights.flatten(1).amax(dim=1) > 0).flatten())
        return self._blend_cache[key]

    def _blend(self, active: list[Layer]) -> torch.Tensor:
        out = torch.zeros(len(self.layers), self.latent_h, self.latent_w)
        for layer in active:
            if layer.kind != LayerKind.BACKGROUND:
                out[(layer.index, *layer.window.slices)] = layer.weight
        fg = out[1:]
        if not len(fg):
            out[0] = 1.0
            return out
        alpha = fg.amax(dim=0)
        total = fg.sum(dim=0)
        out[1:] = torch.where(total > 0, fg * (alpha / total.clamp_min(1e-12)), torch.zeros_like(fg))
        out[0] = 1.0 - alpha
        return out


@dataclass(frozen=True)
class Row:
    """What one row of a UNet call is: which image, which layer, which CFG branch, and where."""

    image: int
    layer: int
    branch: Branch
    window: Window


@dataclass(frozen=True)
class BatchLayout:
    """The rows of one UNet call; attention control and guidance read rows from here."""

    rows: tuple[Row, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def indices(self, image: int | None = None, layer: int | None = None,
                branch: Branch | None = None) -> list[int]:
        return [i for i, r in enumerate(self.rows)
                if (image is None or r.image == image) and (layer is None or r.layer == layer)
                and (branch is None or r.branch == branch)]
