"""Prompt-to-Prompt between the source and target rows of a layer (Eq. 5 of the paper).

- cross-attention: the target's conditional maps inherit the source's through a word-swap or
  refine mapper, weighted 1 -> 0 linearly over the layer kind's window;
- self-attention: on maps of at most ``self_tokens`` query pixels of the *full image* (16x16 at
  512^2, as the authors' code counts them, so the half-resolution maps of a small crop count
  too), the target row uses the source's pattern, ``softmax(q_S k_S^T) v_T``, inside its window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import SOURCE, TARGET, Branch
from .mappers import Mapper
from .patcher import Site, sdpa


@dataclass
class PairPlan:
    """How a layer's target inherits from its source."""

    layer: int
    cross: float  # fraction of the layer's life with cross-attention injection
    self_: float  # fraction of the layer's life with self-attention injection
    mapper: Mapper
    start: float = 0.0  # sampling progress at which the layer joins (r_total: late)

    def life(self, progress: float) -> float:
        """Progress counted from the step the layer joins, as the authors' per-controller step
        counter does: r_total's windows cover the first part of *its* steps."""
        return max(0.0, progress - self.start) / (1.0 - self.start) if self.start < 1 else 0.0


class PairEdit:
    def __init__(self, plans: dict[int, PairPlan], self_tokens: int):
        self.plans = plans
        self.self_tokens = self_tokens

    def plan(self, index: dict, progress: float) -> tuple[list, list]:
        """This call's cross edits ``(s, t, weight, mapper)`` and self edits ``(s, t)`` by row."""
        cross, self_ = [], []
        for layer, pp in self.plans.items():
            s, t = index.get((layer, SOURCE, Branch.COND)), index.get((layer, TARGET, Branch.COND))
            if s is None or t is None:
                continue
            life = pp.life(progress) + 1e-9  # a window's end is exclusive, whatever the rounding of progress
            if life < pp.cross:
                cross.append((s, t, 1.0 - life / pp.cross, pp.mapper))
            if life < pp.self_:
                self_.append((s, t))
        return cross, self_

    def small(self, tokens: int) -> bool:
        return tokens <= self.self_tokens

    @staticmethod
    def edit_self(site: Site, out: torch.Tensor, q, k, v, pairs) -> None:
        for s, t in pairs:
            # source and target in one call, so identical rows stay bit-identical
            out[[s, t]] = sdpa(site, q[[s, s]], k[[s, s]], v[[s, t]])

    @staticmethod
    def edit_cross(out: torch.Tensor, probs: dict, v, edits) -> None:
        for s, t, weight, mapper in edits:
            edited = probs[t] + weight * (mapper.apply(probs[s], probs[t]) - probs[t])
            out[[s, t]] = (torch.stack([probs[s], edited]) @ v[[s, t]].float()).to(out.dtype)
