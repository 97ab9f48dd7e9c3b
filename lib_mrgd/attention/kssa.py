"""Keyword-guided self-attention (KSSA, Sec. 3.2 of the paper): in r_total's rows,
cross-attention marks the half of the pixels most attended by the keywords; self-attention
logits toward those pixels are multiplied by a factor, as an exact rewrite on scaled keys
(``softmax(q (c k)^T) = softmax(c q k^T)``), so the fused kernel is kept."""

from __future__ import annotations

from typing import Callable

import torch

from ..keywords import positions_of
from ..layout import SOURCE, TARGET, Branch
from .keyword_capture import KeywordPlan
from .patcher import Site


class Kssa:
    def __init__(self, kw: KeywordPlan, words: Callable[[int], list[str]]):
        self.kw = kw
        self.words = words  # region -> its keywords (user's, then selected)
        self._marks: dict[tuple, torch.Tensor] = {}
        self._marks_prev: dict[tuple, torch.Tensor] = {}
        self._positions: dict[int, list[int]] = {}
        self.update_positions()

    @property
    def on(self) -> bool:
        return self.kw.kssa_factor != 1.0 and bool(self.kw.kssa_blocks)

    def update_positions(self) -> None:
        kw = self.kw
        for image in (SOURCE, TARGET):
            if image not in kw.tags:
                continue
            regions = {t for t in kw.tags[image] if t is not None}
            words = [w for r in regions for w in self.words(r)]
            self._positions[image] = positions_of(words, kw.tokens[image], kw.tags[image], regions)

    def plan(self, batch, index: dict) -> tuple[dict[int, int], dict[int, list[int]]]:
        """Per image: the conditional row that marks, and the rows whose keys are scaled."""
        mark, rows = {}, {}
        if not self.on:
            return mark, rows
        for image in (SOURCE, TARGET):
            cond = index.get((self.kw.layer, image, Branch.COND))
            if cond is None or not self._positions.get(image):
                continue
            mark[image] = cond
            rows[image] = [i for i, r in enumerate(batch.rows) if r.layer == self.kw.layer and r.image == image]
        return mark, rows

    def end_step(self) -> None:
        """A step's marks serve the next step's self-attention layers that run before them."""
        self._marks_prev, self._marks = self._marks, {}

    def in_blocks(self, site: Site) -> bool:
        return site.block in self.kw.kssa_blocks

    def mark(self, site: Site, q: torch.Tensor, k: torch.Tensor, rows: dict[int, int]) -> None:
        for image, row in rows.items():
            positions = self._positions.get(image)
            if not positions:
                continue
            logits = (q[row].float() @ k[row, :, positions].float().transpose(-1, -2)) * site.scale
            score = logits.sum(dim=(0, 2))  # over heads and keyword tokens: (pixels,)
            top = torch.topk(score, score.shape[0] // 2).indices
            self._marks[(site.block, q.shape[2], image)] = top

    def marks_for(self, site: Site, tokens: int, images) -> dict[int, torch.Tensor]:
        if not images or not self.in_blocks(site):
            return {}
        marks = {}
        for image in images:
            key = (site.block, tokens, image)
            found = self._marks.get(key, self._marks_prev.get(key))
            if found is not None:
                marks[image] = found
        return marks

    def scale_keys(self, k: torch.Tensor, marks: dict, rows: dict[int, list[int]]) -> torch.Tensor:
        k = k.clone()
        for image, image_rows in rows.items():
            if image in marks:
                for row in image_rows:
                    k[row, :, marks[image]] *= self.kw.kssa_factor
        return k
