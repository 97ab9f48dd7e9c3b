"""Entropy keyword selection (Sec. 3.2 of the paper): r_total's conditional cross-attention maps
at the keyword level, averaged over layers, heads and the steps up to each selection step; at
a selection step, the tokens of each region with the lowest map entropy become its keywords."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..keywords import Keyword, entropy_bits, select
from ..layout import SOURCE, TARGET, Branch

KEYWORD_LEVEL = 2  # maps at 1/4 of the latent side: 16x16 for SD's 64x64


@dataclass
class KeywordPlan:
    """What keyword selection and KSSA need to know about r_total."""

    layer: int
    steps: list[float]
    count: int
    tags: dict[int, list[int | None]]  # per image: region index of each context position
    tokens: dict[int, list[str]]  # per image: BPE string of each context position
    ids: dict[int, list[int]]
    special: set[int]
    user: dict[int, list[str]]  # region -> user keywords
    select: bool = True
    kssa_factor: float = 1.0
    kssa_blocks: tuple[str, ...] = ()


class KeywordCapture:
    def __init__(self, kw: KeywordPlan):
        self.kw = kw
        self.selected: dict[int, dict[int, list[Keyword]]] = {}  # region -> image -> keywords
        self._done_steps: set[float] = set()
        self._maps: dict[int, torch.Tensor] = {}
        self._map_count: dict[int, int] = {}
        self._map_size: tuple[int, int] | None = None

    def plan(self, index: dict, progress: float) -> list[tuple[int, int]]:
        """(row, image) of r_total's conditional rows whose maps this call contributes."""
        kw = self.kw
        if not kw.select or not any(progress <= s + 1e-9 and s not in self._done_steps for s in kw.steps):
            return []
        rows = ((index.get((kw.layer, image, Branch.COND)), image) for image in (SOURCE, TARGET))
        return [(row, image) for row, image in rows if row is not None]

    def capture(self, image: int, maps: torch.Tensor, size: tuple[int, int]) -> None:
        self._map_size = size
        maps = maps.detach().float()
        if image in self._maps:
            self._maps[image] += maps
            self._map_count[image] += 1
        else:
            self._maps[image], self._map_count[image] = maps.clone(), 1

    def end_step(self, progress: float) -> bool:
        """Select at the selection steps this step reaches; whether keywords changed."""
        kw = self.kw
        if not kw.select:
            return False
        due = [s for s in kw.steps if progress >= s - 1e-9 and s not in self._done_steps]
        if not due:
            return False
        self._done_steps.update(due)
        if not self._maps:
            return False
        hh, ww = self._map_size
        for image, total in self._maps.items():
            maps = (total / self._map_count[image]).T.reshape(-1, hh, ww)  # (positions, h, w)
            entropies = entropy_bits(maps).tolist()
            for region in {t for t in kw.tags[image] if t is not None}:
                self.selected.setdefault(region, {})[image] = select(
                    entropies, kw.ids[image], kw.tokens[image], kw.tags[image], region, kw.count, kw.special)
        self._maps, self._map_count = {}, {}
        return True

    def keywords(self, region: int, image: int | None = None) -> list[str]:
        """The user's keywords of ``region`` followed by the selected ones (in ``image``, or in
        either image), without repeats."""
        words = list(self.kw.user.get(region, []))
        for found_in, found in self.selected.get(region, {}).items():
            if image is None or found_in == image:
                words += [k.word for k in found if k.word not in words]
        return words
