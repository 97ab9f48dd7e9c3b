"""One fused denoising step for the source/target pair (Eq. 1 of the paper).

Each active layer's crop of the latent is denoised with that layer's text; crops of one size and
context length share one UNet call; outputs are pasted back with the layout's blend weights.
The step is written against a plain denoiser callable so the standalone runner and the WebUI
adapter share it; both hosts apply CFG afterwards, which is the same as applying it per region
because fusion and CFG are both linear with the same weights.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Mapping, Protocol, Sequence

import torch

from .conditioning import Key
from .layout import IMAGES, BatchLayout, Branch, Layout, Row


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 batch: BatchLayout) -> torch.Tensor:
        """Raw model output (eps or x0, as the host's sampler expects) for rows of crops.

        ``t`` has one entry per row; ``batch`` names each row so hooks can tell them apart.
        """


class RegionFusion:
    def __init__(self, layout: Layout, contexts: Mapping[Key, torch.Tensor], denoiser: Denoiser,
                 max_batch: int | None = None, controller=None):
        self.layout = layout
        self.contexts = contexts  # as built; never reassigned (calls pass their own)
        self.denoiser = denoiser
        self.max_batch = max_batch
        self.controller = controller  # attention control: told the progress and every call's rows
        self._weights: dict[tuple, torch.Tensor] = {}

    def _blend(self, image: int, progress: float, like: torch.Tensor) -> torch.Tensor:
        key = (image, self.layout.total_active(progress), like.device, like.dtype)
        if key not in self._weights:
            self._weights[key] = self.layout.blend_weights(image, progress).to(like)
        return self._weights[key]

    def plan(self, progress: float, images: Sequence[int] = IMAGES,
             branches: Sequence[Branch] = (Branch.COND, Branch.UNCOND),
             contexts: Mapping[Key, torch.Tensor] | None = None) -> list[BatchLayout]:
        """The UNet calls of one step: rows grouped by crop size and context length, with each
        layer's source and target rows side by side."""
        contexts = self.contexts if contexts is None else contexts
        groups: dict[tuple, list[Row]] = defaultdict(list)
        used = {image: self.layout.contributing(image, progress) for image in images}
        for layer in self.layout.layers:
            for branch in branches:
                for image in images:
                    if layer.index not in used[image]:
                        continue
                    context = contexts[(layer.index, image, branch)]
                    groups[(layer.window.size, context.shape[0])].append(
                        Row(image, layer.index, branch, layer.window))
        calls = []
        for rows in groups.values():
            step = self.max_batch or len(rows)
            calls += [BatchLayout(tuple(rows[i:i + step])) for i in range(0, len(rows), step)]
        return calls

    def __call__(self, x: torch.Tensor, t: torch.Tensor | float, progress: float,
                 images: Sequence[int] = IMAGES,
                 branches: Sequence[Branch] = (Branch.COND, Branch.UNCOND),
                 contexts: Mapping[Key, torch.Tensor] | None = None) -> dict[Branch, torch.Tensor]:
        """Fused raw outputs per branch for the latents ``x`` (one row per entry of ``images``);
        ``contexts`` replaces the built ones for this call (a step's tuned negatives)."""
        contexts = self.contexts if contexts is None else contexts
        if self.controller is not None:
            self.controller.set_progress(progress)
        pos = {image: i for i, image in enumerate(images)}
        out = {branch: torch.zeros_like(x) for branch in branches}
        weights = {image: self._blend(image, progress, x) for image in images}
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32).reshape(-1)[:1]
        for batch in self.plan(progress, images, branches, contexts):
            crops = torch.stack([x[pos[r.image]][(slice(None), *r.window.slices)] for r in batch.rows])
            context = torch.stack([contexts[(r.layer, r.image, r.branch)] for r in batch.rows])
            with self.controller.call(batch) if self.controller is not None else contextlib.nullcontext():
                result = self.denoiser(crops, t.expand(len(batch)), context.to(x), batch)
            for row, y in zip(batch.rows, result):
                ys, xs = row.window.slices
                out[row.branch][pos[row.image], :, ys, xs] += weights[row.image][row.layer, ys, xs] * y
        return out
